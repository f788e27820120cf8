//! `condenser-eval downstream` with condenser itself as the task-model endpoint (the way remote
//! models are measured): the real `condenser` binary in front of a loopback upstream that speaks
//! OpenAI's chat-completions JSON. The eval's `x-condenser-compress: off` must reach condenser as
//! a valid choice (the eval compresses contexts itself; condenser must forward them unchanged
//! even on a route that compresses), and failed answers must fail the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// The bodies an upstream received.
type Received = Arc<Mutex<Vec<Value>>>;

/// A loopback OpenAI-compatible upstream: answers `Paris` when the prompt contains it, and 500
/// for the model `broken`. Keep-alive, one thread per connection (condenser pools them).
fn upstream() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received: Received = Arc::default();
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let log = log.clone();
            std::thread::spawn(move || serve(stream, &log));
        }
    });
    (port, received)
}

fn serve(stream: TcpStream, log: &Received) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        log.lock().expect("log").push(request.clone());
        let (status, answer) = if request["model"] == "broken" {
            (
                "500 Internal Server Error",
                json!({"error": {"message": "down", "type": "server_error"}}),
            )
        } else {
            let prompt = request["messages"].to_string();
            let text = if prompt.contains("Paris") {
                "Paris"
            } else {
                "I do not know"
            };
            let completion = json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101}
            });
            ("200 OK", completion)
        };
        let body = answer.to_string();
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// The `condenser` binary of this build, built if this test runs before it exists.
fn condenser_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_condenser-eval")).with_file_name("condenser");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "condenser", "--bin", "condenser"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("cargo build condenser");
        assert!(status.success(), "building condenser");
    }
    path
}

/// `condenser serve` on a free port, compressing every long message with `extractive`.
struct Proxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(upstream_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
threads = 1
default_route = "main"
grace_period_seconds = 0

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
enabled = true
compressor = "extractive"
min_tokens = 50
target_ratio = 0.2
"#
            ),
        )
        .expect("config");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(condenser_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn condenser");
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("condenser prints `listening on`");
        assert!(first.starts_with("listening on"), "{first}");
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn downstream(records: &Path, output: &Path, task_model: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_condenser-eval"))
        .arg("downstream")
        .arg("--input")
        .arg(records)
        .arg("--output")
        .arg(output)
        .args(["--task-model", task_model])
        .args(["--compressors", "truncate,extractive", "--ratios", "0.35"])
        .output()
        .expect("run condenser-eval")
}

#[test]
fn downstream_through_condenser_sends_contexts_unchanged_and_fails_on_failed_answers() {
    let (upstream_port, received) = upstream();
    let proxy = Proxy::start(upstream_port);
    let dir = tempfile::tempdir().expect("tempdir");
    let filler: String = (0..60)
        .map(|i| format!("Town {i} holds a market on the {i}th day of every month. "))
        .collect();
    let context = format!("{filler}The capital of France is Paris. {filler}");
    let records: String = (0..2)
        .map(|i| {
            json!({
                "id": format!("q{i}"), "benchmark": "hotpotqa", "context": context,
                "question": "What is the capital of France?", "answers": ["Paris"],
                "evidence": ["The capital of France is Paris."], "domain": "nl"
            })
            .to_string()
                + "\n"
        })
        .collect();
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, records).expect("records");

    let base = format!("http://127.0.0.1:{}/v1", proxy.port);
    let output = dir.path().join("answers.jsonl");
    let run = downstream(&input, &output, &format!("{base}#gpt-4o-mini"));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .expect("answers")
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_eq!(
        rows.len(),
        6,
        "2 examples × (full context, truncate, extractive)"
    );
    let full = rows
        .iter()
        .find(|r| r["compressor"] == "identity")
        .expect("full-context row");
    assert_eq!(
        (full["answer"].as_str(), full["em"].as_f64()),
        (Some("Paris"), Some(1.0))
    );
    // condenser's route compresses to 0.2, but the eval asked for `off`: the full context
    // arrived whole, twice (once per example).
    let bodies = received.lock().expect("log").clone();
    assert_eq!(bodies.len(), 6);
    let whole = bodies
        .iter()
        .filter(|b| {
            b["messages"].to_string().contains(&filler[..200])
                && b["messages"].to_string().matches("Town 59 holds").count() == 2
        })
        .count();
    assert_eq!(whole, 2, "full contexts forwarded unchanged");

    let failed = downstream(
        &input,
        &dir.path().join("failed.jsonl"),
        &format!("{base}#broken"),
    );
    assert!(!failed.status.success(), "failed answers must fail the run");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("answers failed"), "{stderr}");
}
