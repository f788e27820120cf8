//! Shadow A/B test harness: a proxy over the mock upstream with the real SQLite store, the real
//! MiniLM embedding gate and the mock's judge, and helpers to ask it and read `/admin/shadow`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{long_document, Condenser, MockUpstream, Recorded};

pub fn embedder_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-embedder",
        dir.display()
    );
    dir
}

/// One server thread, a short grace period, the admin listener on `admin`.
pub fn server_section(admin: u16) -> String {
    format!(
        "[server]\nthreads = 1\ngrace_period_seconds = 1\nadmin_listen = \"127.0.0.1:{admin}\"\n"
    )
}

pub struct Setup {
    pub mock: MockUpstream,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub async fn new() -> Self {
        Self {
            mock: MockUpstream::start().await,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("shadow.db")
    }

    pub fn admin_port(&self) -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port()
    }

    /// One route over the mock with extractive compression, shadowed per `route_shadow`.
    pub fn config(
        &self,
        admin: u16,
        compression: &str,
        route_shadow: &str,
        shadow_extra: &str,
    ) -> String {
        format!(
            r#"
{server}
[[upstreams]]
name = "mock"
kind = "openai"
base_url = "{base}"
timeout_ms = 5000

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
compressor = "extractive"
min_tokens = 200
target_ratio = 0.35
{compression}

[routes.shadow]
{route_shadow}

[shadow]
store = "{store}"
embedding_model = "{embedder}"
judge_model = "judge"
{shadow_extra}
"#,
            server = server_section(admin),
            base = self.mock.base_url(),
            store = self.store().display(),
            embedder = embedder_dir().display(),
        )
    }
}

impl Setup {
    /// The `main` route over an Anthropic upstream (the Messages front door), with a `judging`
    /// route over the OpenAI-compatible mock for the judge gate.
    pub fn anthropic_config(&self, admin: u16, route_shadow: &str) -> String {
        format!(
            r#"
{server}
[[upstreams]]
name = "claude"
kind = "anthropic"
base_url = "http://{addr}/v1"

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "{base}"

[[routes]]
name = "main"
models = ["stable", "sensitive"]
upstream = "claude"

[routes.compression]
compressor = "extractive"
min_tokens = 200
target_ratio = 0.35

[routes.shadow]
{route_shadow}

[[routes]]
name = "judging"
models = ["judge"]
upstream = "mock"

[shadow]
store = "{store}"
embedding_model = "{embedder}"
judge_model = "judge"
"#,
            server = server_section(admin),
            addr = self.mock.addr,
            base = self.mock.base_url(),
            store = self.store().display(),
            embedder = embedder_dir().display(),
        )
    }
}

pub fn question(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": long_document()},
            {"role": "user", "content": "When was the lighthouse lamp first lit, and by whom?"}
        ]
    })
}

pub async fn ask(proxy: &Condenser, body: &Value, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("send")
}

pub async fn admin(admin: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{admin}/admin/shadow"))
        .await
        .expect("admin")
        .json()
        .await
        .expect("json")
}

/// Polls the admin report until route `main`'s `field` reaches `n`; returns the report.
async fn wait_main(admin_port: u16, field: &str, n: u64) -> Value {
    let started = Instant::now();
    loop {
        let report = admin(admin_port).await;
        let value = report["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["route"] == "main"))
            .and_then(|m| m[field].as_u64());
        if value >= Some(n) {
            return report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "route main: {field} never reached {n}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the admin report until `scored` samples of route `main` are scored; returns the route.
pub async fn wait_scored(admin_port: u16, scored: u64) -> Value {
    let report = wait_main(admin_port, "scored", scored).await;
    report["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "main"))
        .cloned()
        .unwrap_or_default()
}

/// The proxy over an Anthropic upstream, shadowing every request and serving `serve`.
pub async fn start_anthropic(serve: &str) -> (Setup, u16, Condenser) {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let route_shadow = format!("sample_rate = 1.0\nserve = \"{serve}\"");
    let proxy = Condenser::start(&s.anthropic_config(admin_port, &route_shadow));
    (s, admin_port, proxy)
}

/// A Claude client's request: the document in `system`, the question as a text block.
pub async fn ask_anthropic(proxy: &Condenser, model: &str, stream: bool) -> reqwest::Response {
    let body = json!({
        "model": model, "max_tokens": 256, "stream": stream,
        "system": long_document(),
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "When was the lighthouse lamp first lit, and by whom?"}]}]
    });
    reqwest::Client::new()
        .post(proxy.url("/v1/messages"))
        .header("x-api-key", "sk-ant-client-secret")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("send")
}

pub fn messages_requests(mock: &MockUpstream) -> Vec<Recorded> {
    mock.received()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect()
}

pub fn chat_requests(mock: &MockUpstream) -> Vec<Value> {
    mock.received()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .map(|r| r.json())
        .filter(|b| b["model"] != "judge")
        .collect()
}

/// A replica's config: one route over the mock, compressed with `extractive`, every request
/// shadowed (the client served the compressed leg), samples in `store`, admin on `admin`.
pub fn replica_config(mock: &MockUpstream, store: &str, admin: u16) -> String {
    format!(
        r#"
{server}
[[upstreams]]
name = "mock"
kind = "openai"
base_url = "{base}"

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
enabled = true
compressor = "extractive"
min_tokens = 200

[routes.shadow]
sample_rate = 1.0
serve = "compressed"

[shadow]
store = "{store}"
"#,
        server = server_section(admin),
        base = mock.base_url(),
    )
}

/// The report on this replica's admin API once route `main` shows `samples` samples.
pub async fn wait_samples(admin_port: u16, samples: u64) -> Value {
    wait_main(admin_port, "samples", samples).await
}
