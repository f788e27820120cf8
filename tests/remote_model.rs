//! The remote compressor backend against real inference servers on loopback: `condenser
//! serve-model` (llama.cpp with the SmolLM2-135M GGUF, prompt scoring and chat) and
//! llama-cpp-python's OpenAI-compatible server (chat), both started here and killed on drop.
//! `prune` through the remote backend must equal `prune` in-process on the same model; a proxy
//! replica with no local model compresses through the server and fails open when it is gone.
#![cfg(feature = "local-model")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use condenser::compress::{CompressInput, Compressor, Prune, Tokenizer};
use condenser::llm::{
    ChatTurn, LlmError, LocalModel, LocalModelConfig, ModelBackend, RemoteModel, RemoteModelConfig,
};

fn model_path() -> PathBuf {
    common::smollm2()
}

/// Context of every model here, in tokens: HotPotQA's contexts (~2,000 tokens) fit one window,
/// in-process and through the server alike.
const CONTEXT: u32 = 4096;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// An inference server process, killed on drop.
struct Server {
    addr: SocketAddr,
    child: Child,
}

impl Server {
    /// Starts `command` (which listens on `addr`) and waits until `GET {ready}` answers.
    fn start(mut command: Command, addr: SocketAddr, ready: &str, what: &str) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut server = Self { addr, child };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{what} exited: {status}");
            }
            let answered = ureq::get(format!("http://{addr}{ready}"))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if answered {
                return server;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{what} never became ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn serve_model() -> Self {
        Self::serve_model_with_key(None)
    }

    /// `condenser serve-model`, asking clients for `key` when given.
    fn serve_model_with_key(key: Option<&str>) -> Self {
        let addr = free_addr();
        let mut command = Command::new(env!("CARGO_BIN_EXE_condenser"));
        if let Some(key) = key {
            command
                .args(["serve-model", "--api-key-env", "TEST_MODEL_SERVER_KEY"])
                .env("TEST_MODEL_SERVER_KEY", key);
        } else {
            command.arg("serve-model");
        }
        command
            .arg("--model")
            .arg(model_path())
            .args(["--name", "smollm2", "--context", "4096", "--workers", "1"])
            .args(["--listen", &addr.to_string()]);
        Self::start(command, addr, "/health", "condenser serve-model")
    }

    /// llama-cpp-python's server (installed into `.venv` by `scripts/setup`).
    fn llama_cpp_python() -> Self {
        let addr = free_addr();
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        let mut command = Command::new(python);
        command
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(model_path())
            .args([
                "--model_alias",
                "smollm2",
                "--n_ctx",
                "2048",
                "--n_threads",
                "2",
            ])
            .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()]);
        Self::start(command, addr, "/v1/models", "llama-cpp-python's server")
    }

    fn client(&self) -> RemoteModel {
        self.client_with_key(None)
    }

    fn client_with_key(&self, api_key: Option<&str>) -> RemoteModel {
        RemoteModel::new(RemoteModelConfig {
            base_url: format!("http://{}/v1", self.addr),
            model: "smollm2".into(),
            api_key: api_key.map(str::to_string),
            max_in_flight: 4,
            context: CONTEXT,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn local_model() -> Arc<LocalModel> {
    Arc::new(
        LocalModel::load(&LocalModelConfig::cpu(model_path(), 2, CONTEXT)).expect("model loads"),
    )
}

#[test]
fn prune_through_the_server_equals_prune_in_process() {
    let server = Server::serve_model();
    let remote: Arc<dyn ModelBackend> = Arc::new(server.client());
    let local: Arc<dyn ModelBackend> = local_model();
    let timeout = Duration::from_secs(120);
    let mut texts = common::hotpotqa(1);
    texts.push((
        "Café prices in Zürich rose 4.5% in 2023 — the steepest since 1993. Baristas' wages \
         (CHF 4,200/month) followed."
            .into(),
        "How much did café prices rise?".into(),
    ));
    for (text, question) in &texts {
        let prefix = format!("Question: {question}\n\nContext: ");
        let a = local.surprisal(&prefix, text, timeout).expect("local");
        let b = remote.surprisal(&prefix, text, timeout).expect("remote");
        let joined: Vec<u8> = b.iter().flat_map(|t| t.bytes.clone()).collect();
        assert_eq!(joined, text.as_bytes(), "remote pieces reproduce the text");
        assert_eq!(a.len(), b.len(), "same tokens");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x.bits - y.bits).abs() <= 1e-3 * x.bits.abs().max(1.0),
                "{:?}: {} bits in-process, {} through the server",
                String::from_utf8_lossy(&x.bytes),
                x.bits,
                y.bits
            );
        }
        let before = Tokenizer::O200k.count(text);
        for ratio in [0.5, 0.35] {
            let input = CompressInput {
                text,
                query: question,
                target_tokens: (before as f64 * ratio) as usize,
                tokenizer: Tokenizer::O200k,
            };
            let in_process = Prune::new(local.clone(), timeout)
                .compress(&input)
                .expect("prune in-process");
            let remote_prune = Prune::new(remote.clone(), timeout)
                .compress(&input)
                .expect("prune through the server");
            assert_eq!(in_process, remote_prune, "ratio {ratio}");
        }
    }
}

#[test]
fn chat_generation_through_either_server_matches_the_local_model() {
    let turns = [
        ChatTurn::new("system", "Answer in one short sentence."),
        ChatTurn::new("user", "What is the capital of France?"),
    ];
    let timeout = Duration::from_secs(120);
    let local = local_model()
        .generate(&turns, 24, timeout)
        .expect("local generation");
    let ours = Server::serve_model();
    let served = ours.client().generate(&turns, 24, timeout).expect("served");
    assert_eq!(
        served.text, local.text,
        "same llama.cpp, same greedy output"
    );
    assert_eq!(served.completion_tokens, local.completion_tokens);
    drop(ours);

    // A third-party OpenAI-compatible server: another llama.cpp build, the same template and
    // greedy decoding.
    let theirs = Server::llama_cpp_python();
    let answer = theirs
        .client()
        .generate(&turns, 24, timeout)
        .expect("llama-cpp-python generation");
    assert!(!answer.text.trim().is_empty());
    assert!(answer.text.contains("Paris"), "{}", answer.text);
    assert!(answer.completion_tokens > 0 && answer.completion_tokens <= 24);
    // It cannot score prompts correctly (its echoed log-probabilities are shifted by one), and
    // the README says to use it for `rewrite` only; what this backend needs is served above.
}

#[test]
fn a_server_that_is_gone_or_refuses_fails_fast_with_an_error() {
    let addr = free_addr();
    let client = RemoteModel::new(RemoteModelConfig {
        base_url: format!("http://{addr}/v1"),
        model: "smollm2".into(),
        api_key: None,
        max_in_flight: 1,
        context: 2048,
    });
    let started = Instant::now();
    let result = client.surprisal("Q: ", "some text", Duration::from_secs(5));
    assert!(matches!(result, Err(LlmError::Remote(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let server = Server::serve_model();
    // The server refuses generation on /v1/completions with an OpenAI-shaped 400.
    let response = ureq::post(format!("http://{}/v1/completions", server.addr))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(serde_json::json!({"prompt": "hi", "max_tokens": 5}))
        .expect("answers");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.into_body().read_json().expect("json");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
    // A deadline shorter than the scoring is a deadline error, not a hang.
    let long = common::long_document();
    let result = server
        .client()
        .surprisal("Q: ", &long, Duration::from_millis(20));
    assert!(matches!(result, Err(LlmError::Deadline)), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_a_local_model_compresses_through_the_server_and_fails_open() {
    let server = Server::serve_model();
    let mock = common::MockUpstream::start().await;
    let compression =
        "enabled = true\ncompressor = \"prune\"\nmin_tokens = 100\ntarget_ratio = 0.5\ntimeout_ms = 60000";
    let remote_section = format!(
        "\n[compressors.prune]\nbackend = \"remote\"\nbase_url = \"http://{}/v1\"\n\
         model = \"smollm2\"\ncontext = {CONTEXT}\ntimeout_ms = 60000\n",
        server.addr
    );
    let local_section = format!(
        "\n[compressors.prune]\nmodel = \"{}\"\ncontext = {CONTEXT}\ntimeout_ms = 60000\n",
        model_path().display()
    );
    let proxy = common::Condenser::start(
        &(common::config(&mock.base_url(), "", compression) + &remote_section),
    );
    let in_process = common::Condenser::start(
        &(common::config(&mock.base_url(), "", compression) + &local_section),
    );
    let (document, question) = common::hotpotqa(1).remove(0);
    let body = common::document_chat(&document, &question);
    let resp = common::post_chat(&proxy, &body).await;
    assert_eq!(resp.status(), 200);
    let sent = mock.last().json();
    let compressed = sent["messages"][0]["content"].clone();
    assert!(
        compressed.as_str().expect("text").len() < document.len() * 7 / 10,
        "compressed through the server"
    );
    let resp = common::post_chat(&in_process, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.last().json()["messages"][0]["content"],
        compressed,
        "a replica with the model in-process sends the same text"
    );

    // The server goes away: requests still succeed, with the original text.
    drop(server);
    let other = serde_json::json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": format!("{document}\n\nAnother revision.")},
        {"role": "user", "content": question}]});
    let resp = common::post_chat(&proxy, &other).await;
    assert_eq!(resp.status(), 200);
    let sent = mock.last().json();
    assert_eq!(sent["messages"][0], other["messages"][0], "failed open");
}

#[test]
fn a_server_with_a_key_answers_only_clients_that_send_it() {
    let key = "sk-model-server-4f1c";
    let server = Server::serve_model_with_key(Some(key));
    let timeout = Duration::from_secs(60);
    let refused = server
        .client()
        .surprisal("Q: ", "some text", timeout)
        .expect_err("no key");
    let message = refused.to_string();
    assert!(message.contains("401"), "{message}");
    let wrong = server
        .client_with_key(Some("sk-wrong"))
        .surprisal("Q: ", "some text", timeout)
        .expect_err("wrong key")
        .to_string();
    assert!(
        wrong.contains("401") && !wrong.contains("sk-wrong"),
        "{wrong}"
    );
    let scored = server
        .client_with_key(Some(key))
        .surprisal("Q: ", "some text", timeout)
        .expect("the key opens it");
    assert!(!scored.is_empty());
}
