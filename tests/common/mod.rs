//! Test harness: the mock upstream (`mock.rs`) and a launcher for the real `condenser` binary
//! with a temp config.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod chaos;
mod mock;
pub mod nginx;
pub mod postgres;
pub mod redis;
pub mod shadow;
pub use mock::*;

/// A running `condenser serve`, killed on drop.
pub struct Condenser {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
    stderr_path: std::path::PathBuf,
}

impl Condenser {
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, config).expect("write config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_condenser"));
        command
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &addr.to_string()])
            .env("RUST_LOG", "debug,pingora_core=warn,pingora_proxy=warn")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn condenser");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("condenser printed `listening on` within 30 s");
        assert_eq!(line, format!("listening on {addr}"));
        Self {
            addr,
            child,
            _dir: dir,
            stderr_path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The configuration file it was started with (reload tests rewrite it).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("proxy.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Condenser {
    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns whether it did.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Condenser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one OpenAI-compatible upstream and one catch-all route.
pub fn config(upstream_base_url: &str, extra_server: &str, compression: &str) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period_seconds = 0
{extra_server}

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "{upstream_base_url}"
timeout_ms = 2000

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
{compression}
"#
    )
}

/// Adds an Anthropic and a Gemini upstream (both the mock) with `claude-*` / `gemini-*` routes
/// in front of the catch-all route.
pub fn with_native_providers(config: &str, mock: &MockUpstream) -> String {
    let native = format!(
        r#"
[[upstreams]]
name = "claude"
kind = "anthropic"
base_url = "http://{addr}/v1"
api_key_env = "MOCK_ANTHROPIC_KEY"

[[upstreams]]
name = "gemini"
kind = "gemini"
base_url = "http://{addr}/v1beta"
api_key_env = "MOCK_GEMINI_KEY"

[[routes]]
name = "claude"
models = ["claude-*"]
upstream = "claude"

[routes.compression]
enabled = true
min_tokens = 200

[[routes]]
name = "gemini"
models = ["gemini-*"]
upstream = "gemini"
"#,
        addr = mock.addr
    );
    // Routes match in order: the native routes go before the catch-all.
    config.replacen("[[routes]]", &format!("{native}\n[[routes]]"), 1)
}

/// A long, realistic document: many unrelated paragraphs and one that answers the question.
pub fn long_document() -> String {
    let mut doc = String::new();
    let topics = [
        "The river delta supports a large population of migratory birds during the winter months.",
        "Local farmers rotate wheat and barley to keep the soil productive across the seasons.",
        "The old railway station was converted into a museum of industrial history in 1987.",
        "A regional orchestra performs in the cathedral every summer, drawing visitors from abroad.",
        "Engineers reinforced the northern bridge after inspections found corrosion in its cables.",
    ];
    for i in 0..40 {
        doc.push_str(&format!("Section {i}. "));
        for t in topics {
            doc.push_str(t);
            doc.push(' ');
        }
        doc.push_str("\n\n");
        if i == 23 {
            doc.push_str("The lighthouse keeper, Marguerite Okonkwo, lit the lamp for the first time on 14 March 1896.\n\n");
        }
    }
    doc
}

/// The first HotPotQA dev examples of ../shared/data: (paragraphs as text, question).
pub fn hotpotqa(n: usize) -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/hotpotqa-dev-500.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("../shared/data/hotpotqa-dev-500.jsonl");
    text.lines()
        .take(n)
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let context = v["context"]
                .as_array()
                .expect("context")
                .iter()
                .map(|p| {
                    let sentences: String = p[1]
                        .as_array()
                        .expect("sentences")
                        .iter()
                        .filter_map(|s| s.as_str())
                        .collect();
                    format!("{}\n{sentences}", p[0].as_str().unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join("\n\n");
            (
                context,
                v["question"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The SmolLM2-135M GGUF that `scripts/fetch-model` fetches.
pub fn smollm2() -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    path
}

/// POSTs a chat completion body to the proxy.
pub async fn post_chat(proxy: &Condenser, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("send")
}

/// A chat whose system message is `document` and whose user turn asks `question`.
pub fn document_chat(document: &str, question: &str) -> serde_json::Value {
    serde_json::json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": document},
        {"role": "user", "content": question}]})
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The proxy's `/healthz` body.
pub async fn healthz(proxy: &Condenser) -> serde_json::Value {
    reqwest::get(proxy.url("/healthz"))
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json")
}
