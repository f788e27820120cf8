//! Shadow A/B end to end: the real binary, the recording mock upstream (scripted answers that
//! change when compression drops the answer), the real SQLite store, the real MiniLM embedding
//! gate, and the judge gate served by the mock.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{long_document, Condenser, MockUpstream};
use serde_json::{json, Value};

fn embedder_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-embedder",
        dir.display()
    );
    dir
}

/// One server thread, a short grace period, the admin listener on `admin`.
fn server_section(admin: u16) -> String {
    format!(
        "[server]\nthreads = 1\ngrace_period_seconds = 1\nadmin_listen = \"127.0.0.1:{admin}\"\n"
    )
}

struct Setup {
    mock: MockUpstream,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Self {
        Self {
            mock: MockUpstream::start().await,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("shadow.db")
    }

    fn admin_port(&self) -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port()
    }

    /// One route over the mock with extractive compression, shadowed per `route_shadow`.
    fn config(
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
    fn anthropic_config(&self, admin: u16, route_shadow: &str) -> String {
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

fn question(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": long_document()},
            {"role": "user", "content": "When was the lighthouse lamp first lit, and by whom?"}
        ]
    })
}

async fn ask(proxy: &Condenser, body: &Value, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("send")
}

async fn admin(admin: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{admin}/admin/shadow"))
        .await
        .expect("admin")
        .json()
        .await
        .expect("json")
}

/// Polls the admin report until `scored` samples of route `main` are scored.
async fn wait_scored(admin_port: u16, scored: u64) -> Value {
    let started = Instant::now();
    loop {
        let report = admin(admin_port).await;
        let route = report["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["route"] == "main"))
            .cloned();
        if let Some(route) = route {
            if route["scored"].as_u64() >= Some(scored) {
                return route;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{scored} samples not scored in time: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The proxy over an Anthropic upstream, shadowing every request and serving `serve`.
async fn start_anthropic(serve: &str) -> (Setup, u16, Condenser) {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let route_shadow = format!("sample_rate = 1.0\nserve = \"{serve}\"");
    let proxy = Condenser::start(&s.anthropic_config(admin_port, &route_shadow));
    (s, admin_port, proxy)
}

/// A Claude client's request: the document in `system`, the question as a text block.
async fn ask_anthropic(proxy: &Condenser, model: &str, stream: bool) -> reqwest::Response {
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

fn messages_requests(mock: &MockUpstream) -> Vec<common::Recorded> {
    mock.received()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect()
}

fn chat_requests(mock: &MockUpstream) -> Vec<Value> {
    mock.received()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .map(|r| r.json())
        .filter(|b| b["model"] != "judge")
        .collect()
}

#[tokio::test]
async fn both_legs_go_upstream_and_a_changed_answer_fails_the_gates() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0\nserve = \"original\"",
        "",
    ));
    let resp = ask(&proxy, &question("sensitive", false), "sk-client-secret-1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-condenser-shadow")
            .and_then(|v| v.to_str().ok()),
        Some("original")
    );
    let answer: Value = resp.json().await.expect("json");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("1896"),
        "the client gets the original leg's answer: {answer}"
    );
    let route = wait_scored(admin_port, 1).await;
    let legs = chat_requests(&s.mock);
    assert_eq!(legs.len(), 2, "original and compressed both sent");
    let sizes: Vec<usize> = legs.iter().map(|b| b.to_string().len()).collect();
    assert!(sizes[0] != sizes[1], "one leg is compressed: {sizes:?}");
    assert_eq!(route["pass_rate"], 0.0);
    let gates = route["gate_failure_rates"].as_object().expect("gates");
    for gate in ["facts", "judge"] {
        assert_eq!(
            gates.get(gate).and_then(Value::as_f64),
            Some(1.0),
            "{gate}: {route}"
        );
    }
    assert!(route["worst"][0]["candidate"]
        .as_str()
        .unwrap_or_default()
        .contains("does not say"));
    // Not on the public listener.
    let public = reqwest::get(proxy.url("/admin/shadow")).await.expect("get");
    assert_eq!(public.status(), 404);
    // No key in the database, whatever the client sent.
    drop(proxy);
    // `condenser report` reads the same store.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["report", "--store"])
        .arg(s.store())
        .output()
        .expect("condenser report");
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(table.contains("| main | 1 (1 scored) | 0.0% |"), "{table}");
    assert!(
        table.contains("failed facts") || table.contains("facts, judge"),
        "{table}"
    );
    let bytes = std::fs::read(s.store()).expect("db");
    let wal = std::fs::read(s.store().with_extension("db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(!String::from_utf8_lossy(file).contains("sk-client-secret"));
    }
}

#[tokio::test]
async fn streamed_requests_are_shadowed_and_equal_answers_pass_every_gate() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0\nserve = \"compressed\"\nnoise_floor = true",
        "",
    ));
    let resp = ask(&proxy, &question("stable", true), "sk-test").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(text.contains("data: [DONE]"));
    let route = wait_scored(admin_port, 1).await;
    // The client's streamed leg, the original (non-streamed) and the noise floor's second original.
    let legs = chat_requests(&s.mock);
    assert_eq!(legs.len(), 3, "{legs:?}");
    assert_eq!(legs.iter().filter(|b| b["stream"] == false).count(), 2);
    assert_eq!(route["pass_rate"], 1.0, "{route}");
    let started = Instant::now();
    let report = loop {
        let r = admin(admin_port).await;
        if r["routes"][0]["noise_samples"].as_u64() == Some(1)
            || started.elapsed() > Duration::from_secs(10)
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["routes"][0]["noise_pass_rate"], 1.0, "{report}");
    assert!(report["routes"][0]["input_tokens_saved"].as_u64() > Some(0));
}

#[tokio::test]
async fn the_daily_spend_cap_stops_shadowing() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    // One leg of this request is estimated at ~$0.02; the cap leaves room for none.
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0\nmax_daily_usd = 0.001",
        "[shadow.prices]\nstable = { input = 1.0, output = 30.0 }",
    ));
    for _ in 0..3 {
        assert_eq!(
            ask(&proxy, &question("stable", false), "k").await.status(),
            200
        );
    }
    let report = admin(admin_port).await;
    assert_eq!(chat_requests(&s.mock).len(), 3, "no shadow leg was sent");
    assert_eq!(report["stats"]["over_budget"], 3, "{report}");
}

#[tokio::test]
async fn auto_rollout_turns_compression_on_and_off_and_remembers() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let config = s.config(
        admin_port,
        "rollout = \"auto\"\nmin_samples = 3\nmin_pass_rate = 0.9",
        "sample_rate = 1.0",
        "",
    );
    let served = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-condenser-shadow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    {
        let proxy = Condenser::start(&config);
        for i in 1..=3 {
            let resp = ask(&proxy, &question("stable", false), "k").await;
            assert_eq!(served(&resp).as_deref(), Some("original"));
            wait_scored(admin_port, i).await;
        }
        // Three passing samples: the route now serves compressed requests.
        let resp = ask(&proxy, &question("stable", false), "k").await;
        assert_eq!(served(&resp).as_deref(), Some("compressed"));
        wait_scored(admin_port, 4).await;
    }
    // The decision survives a restart.
    let proxy = Condenser::start(&config);
    let resp = ask(&proxy, &question("sensitive", false), "k").await;
    assert_eq!(served(&resp).as_deref(), Some("compressed"));
    wait_scored(admin_port, 5).await;
    // Failing samples pull the pass rate under the bar: back to originals.
    let mut last = None;
    for i in 6..=8 {
        let resp = ask(&proxy, &question("sensitive", false), "k").await;
        last = served(&resp);
        wait_scored(admin_port, i).await;
    }
    assert!(last.is_some());
    let resp = ask(&proxy, &question("sensitive", false), "k").await;
    assert_eq!(served(&resp).as_deref(), Some("original"));
}

// Multi-threaded: the mock must keep answering while this thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_samples_still_in_flight() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let mut proxy = Condenser::start(&s.config(admin_port, "", "sample_rate = 1.0", ""));
    // The client streams at once; the background leg takes 1.5 s and nobody waits for it.
    let started = Instant::now();
    let resp = ask(&proxy, &question("slowleg", true), "k").await;
    assert!(resp.text().await.expect("body").contains("[DONE]"));
    let client_wait = started.elapsed();
    assert!(
        client_wait < Duration::from_millis(1000),
        "the client waited {client_wait:?} for a 1.5 s shadow leg"
    );
    assert!(
        proxy.terminate(Duration::from_secs(20)),
        "exits after SIGTERM"
    );
    let conn = rusqlite::Connection::open(s.store()).expect("open");
    let (rows, scored): (i64, i64) = conn
        .query_row("SELECT COUNT(*), COUNT(passed) FROM samples", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count");
    assert_eq!(
        (rows, scored),
        (1, 1),
        "the in-flight sample was stored and scored: {}",
        proxy.logs()
    );
    let scores: String = conn
        .query_row("SELECT scores FROM samples", [], |r| r.get(0))
        .expect("scores");
    let scores: Value = serde_json::from_str(&scores).expect("json");
    // Identical answers: the MiniLM embedding gate ran and scored them as the same text.
    assert!(
        scores["embedding"].as_f64().is_some_and(|e| e > 0.99),
        "{scores}"
    );
    assert_eq!(scores["facts"], 1.0);
    assert_eq!(
        scores["judge"].as_f64().map(|j| (j * 100.0).round()),
        Some(95.0)
    );
}

#[tokio::test]
async fn anthropic_messages_are_shadowed_in_anthropic_format() {
    let (s, admin_port, proxy) = start_anthropic("original").await;
    let resp = ask_anthropic(&proxy, "sensitive", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-condenser-shadow"], "original");
    assert_eq!(resp.headers()["x-condenser-compressor"], "off");
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["type"], "message", "relayed in Anthropic's shape");
    assert!(answer["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .contains("1896"));
    let route = wait_scored(admin_port, 1).await;
    let legs = messages_requests(&s.mock);
    assert_eq!(legs.len(), 2, "original and compressed both sent");
    for leg in &legs {
        assert_eq!(
            leg.header("anthropic-version").as_deref(),
            Some("2023-06-01")
        );
        assert_eq!(
            leg.header("x-api-key").as_deref(),
            Some("sk-ant-client-secret")
        );
        assert_eq!(leg.json()["max_tokens"], 256);
    }
    let systems: Vec<usize> = legs
        .iter()
        .map(|l| l.json()["system"].as_str().unwrap_or_default().len())
        .collect();
    assert_eq!(
        systems
            .iter()
            .filter(|&&n| n == long_document().len())
            .count(),
        1
    );
    assert!(
        systems.iter().any(|&n| n < long_document().len() / 2),
        "{systems:?}"
    );
    // The compressed leg said something else: the gates see it.
    assert_eq!(route["pass_rate"], 0.0, "{route}");
    assert!(route["worst"][0]["candidate"]
        .as_str()
        .unwrap_or_default()
        .contains("does not say"));
}

#[tokio::test]
async fn a_streamed_anthropic_answer_is_read_for_scoring() {
    let (s, admin_port, proxy) = start_anthropic("compressed").await;
    let resp = ask_anthropic(&proxy, "stable", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-condenser-shadow"], "compressed");
    let text = resp.text().await.expect("body");
    assert!(text.contains("event: message_stop"), "{text}");
    let route = wait_scored(admin_port, 1).await;
    assert_eq!(route["pass_rate"], 1.0, "{route}");
    let legs: Vec<Value> = messages_requests(&s.mock)
        .iter()
        .map(|r| r.json())
        .collect();
    assert_eq!(legs.len(), 2);
    let streamed = legs
        .iter()
        .find(|l| l["stream"] == true)
        .expect("client's leg");
    let background = legs
        .iter()
        .find(|l| l["stream"] == false)
        .expect("shadow leg");
    assert!(
        streamed["system"].as_str().map(str::len) < background["system"].as_str().map(str::len),
        "the client got the compressed leg, the original went in the background"
    );
}

#[tokio::test]
async fn the_judge_call_is_priced_into_the_shadowing_spend() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    // Only the judge has a price, so all this route spends is its judge call: the mock reports
    // 10 prompt and 2 completion tokens, i.e. (10 × 1000 + 2 × 10000) / 1e6 = $0.03.
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0",
        "[shadow.prices]\njudge = { input = 1000.0, output = 10000.0 }",
    ));
    assert_eq!(
        ask(&proxy, &question("stable", false), "k").await.status(),
        200
    );
    let route = wait_scored(admin_port, 1).await;
    let spent = route["usd_spent_shadowing"].as_f64().expect("spend");
    assert!((spent - 0.03).abs() < 1e-9, "{route}");
}

#[tokio::test]
async fn samples_are_scored_concurrently() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    // This judge answers only when two of its calls are in flight at once (else it fails after
    // 5 s): both samples pass only if the second is scored while the first waits for its judge.
    let config = s
        .config(admin_port, "", "sample_rate = 1.0", "scorers = 2")
        .replace("judge_model = \"judge\"", "judge_model = \"pairjudge\"");
    let proxy = Condenser::start(&config);
    for _ in 0..2 {
        let resp = ask(&proxy, &question("stable", false), "k").await;
        assert_eq!(resp.status(), 200);
    }
    let route = wait_scored(admin_port, 2).await;
    assert_eq!(route["pass_rate"], 1.0, "{route}");
}
