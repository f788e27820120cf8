//! The audit's findings (SECURITY.md, "Coverage"), each through the real binary: what a client
//! key can reach (passthrough allowlists, `x-condenser-route`, `x-condenser-compress`), the
//! token limit on every outcome, headers kept back from the operator's account, slow clients cut
//! off, a wildcard admin listener that serves admin only (in a network namespace of the test's
//! own), and start-up and reload refusals.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Condenser, MockUpstream};
use serde_json::{json, Value};

const LIMITED_KEY: &str = "sk-limited-0123456789";
const ROUTER_KEY: &str = "sk-router-9876543210";
const OPERATOR_KEY: &str = "sk-operator-upstream-key";

/// Two routes over one upstream called with the operator's key; a `limited` key with a token
/// limit and a passthrough list, and a `router` key that may set the condenser headers.
fn secured(mock: &MockUpstream) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period_seconds = 0
body_timeout_seconds = 2
keepalive_timeout_seconds = 1
header_timeout_seconds = 1

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "{base}"
api_key_env = "MOCK_OPENAI_KEY"
timeout_ms = 5000
max_retries = 1

[[routes]]
name = "cheap"
models = ["gpt-4o-mini", "retry-forever"]
upstream = "mock"
passthrough = ["POST /v1/embeddings"]

[routes.compression]
enabled = true
min_tokens = 100
max_bytes = 4096

[[routes]]
name = "premium"
models = ["o1-*"]
upstream = "mock"

[auth]
[[auth.keys]]
name = "limited"
key_env = "LIMITED_KEY"
routes = ["cheap"]
passthrough = ["POST /v1/embeddings", "GET /v1/files"]
input_tokens_per_minute = 1000

[[auth.keys]]
name = "router"
key_env = "ROUTER_KEY"
routes = ["cheap"]
route_header = true
compress_header = true
"#,
        base = mock.base_url()
    )
}

fn start(mock: &MockUpstream) -> Condenser {
    Condenser::start_with_env(
        &secured(mock),
        &[
            ("LIMITED_KEY", LIMITED_KEY),
            ("ROUTER_KEY", ROUTER_KEY),
            ("MOCK_OPENAI_KEY", OPERATOR_KEY),
        ],
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// The compressor a response says was applied.
fn compressor(resp: &reqwest::Response) -> Option<&str> {
    resp.headers()
        .get("x-condenser-compressor")
        .and_then(|v| v.to_str().ok())
}

/// Writes `request` on a fresh connection and returns the status line's code.
fn raw_status(proxy: &Condenser, request: &str) -> u16 {
    let mut stream = TcpStream::connect(proxy.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).expect("a response");
    let line = String::from_utf8_lossy(&head[..n]).to_string();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
}

#[tokio::test]
async fn passthrough_is_an_allowlist_of_the_route_and_the_key() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    let client = reqwest::Client::new();
    let limited = |method: reqwest::Method, path: &str| {
        client
            .request(method, proxy.url(path))
            .bearer_auth(LIMITED_KEY)
    };
    use reqwest::Method;
    // Everything the operator's account holds is out of reach: the key lists GET /v1/files, but
    // the route does not; the rest neither lists.
    for (method, path) in [
        (Method::GET, "/v1/files"),
        (Method::DELETE, "/v1/files/file-1"),
        (Method::GET, "/v1/chat/completions"),
        (Method::POST, "/v1/fine_tuning/jobs"),
        (Method::POST, "/v1/batches"),
        (Method::GET, "/v1/responses/resp_1"),
    ] {
        let (status, code) = code(limited(method.clone(), path).send().await.expect("send")).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "endpoint_not_allowed"),
            "{method} {path}"
        );
    }
    // Both lists name embeddings: it passes, with the operator's key upstream.
    let ok = limited(Method::POST, "/v1/embeddings")
        .json(&json!({"model": "gpt-4o-mini", "input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    // A key without a passthrough list has none.
    let refused = client
        .post(proxy.url("/v1/embeddings"))
        .bearer_auth(ROUTER_KEY)
        .json(&json!({"model": "gpt-4o-mini", "input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(code(refused).await.0, 403);
    let received = mock.received();
    assert_eq!(received.len(), 1, "only the allowed call went upstream");
    assert_eq!(received[0].path, "/v1/embeddings");
    assert_eq!(
        received[0].header("authorization").as_deref(),
        Some(format!("Bearer {OPERATOR_KEY}").as_str())
    );
}

#[tokio::test]
async fn paths_that_leave_the_api_are_refused_before_routing() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    for path in [
        "/v1/../../x",
        "/v1/%2e%2e/%2E%2E/x",
        "/v1/./embeddings",
        "/v1//embeddings",
        "/v1/embeddings%2f..%2f..%2fx",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {LIMITED_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        assert_eq!(raw_status(&proxy, &request), 400, "{path}");
    }
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn the_route_header_is_a_permission_and_never_reaches_another_model() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    let client = reqwest::Client::new();
    let ask = |key: &str, model: &str, route: Option<&str>| {
        let mut request = client
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat(model));
        if let Some(route) = route {
            request = request.header("x-condenser-route", route);
        }
        request.send()
    };
    // A key limited to `cheap` is refused o1-pro, and naming `cheap` does not get it there.
    let denied = ask(LIMITED_KEY, "o1-pro", None).await.expect("send");
    assert_eq!(code(denied).await, (403, "route_not_allowed".into()));
    let header = ask(LIMITED_KEY, "o1-pro", Some("cheap"))
        .await
        .expect("send");
    assert_eq!(code(header).await, (403, "header_not_allowed".into()));
    let mismatch = ask(ROUTER_KEY, "o1-pro", Some("cheap"))
        .await
        .expect("send");
    assert_eq!(code(mismatch).await, (400, "route_model_mismatch".into()));
    assert!(mock.received().is_empty(), "nothing reached the upstream");
    // The header still chooses among the routes of a model the key may use.
    let ok = ask(ROUTER_KEY, "gpt-4o-mini", Some("cheap"))
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn the_compress_header_is_a_permission_and_large_requests_go_as_sent() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    let client = reqwest::Client::new();
    let document = common::long_document();
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": format!("{document}\n\nWho lit the lamp?")}]});
    let ask = |key: &str| {
        client
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-condenser-compress", "on")
            .json(&body)
            .send()
    };
    let refused = ask(LIMITED_KEY).await.expect("send");
    assert_eq!(code(refused).await, (403, "header_not_allowed".into()));
    // Allowed, but the request is over the route's `max_bytes`: forwarded as sent.
    let resp = ask(ROUTER_KEY).await.expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(compressor(&resp), Some("off"));
    let sent = mock.last().json();
    assert!(sent["messages"][0]["content"]
        .as_str()
        .is_some_and(|c| c.len() > document.len()));
}

#[tokio::test]
async fn passthrough_is_charged_to_the_token_limit() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    let client = reqwest::Client::new();
    let embed = |input: String| {
        client
            .post(proxy.url("/v1/embeddings"))
            .bearer_auth(LIMITED_KEY)
            .json(&json!({"model": "gpt-4o-mini", "input": input}))
            .send()
    };
    // ~2,000 tokens against a 1,000-a-minute bucket: admitted (the bucket was positive), and
    // charged, so the key then waits.
    let big = embed("word ".repeat(1600)).await.expect("send");
    assert_eq!(big.status(), 200);
    let next = embed("x".into()).await.expect("send");
    assert_eq!(code(next).await, (429, "rate_limit_exceeded".into()));
}

#[tokio::test]
async fn the_operators_account_headers_do_not_cross() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    let client = reqwest::Client::new();
    let resp = client
        .post(proxy.url("/v1/embeddings"))
        .bearer_auth(LIMITED_KEY)
        .header("OpenAI-Organization", "org-client")
        .header("OpenAI-Project", "proj-client")
        .header("Cookie", "session=client")
        .header("x-stainless-lang", "js")
        .json(&json!({"model": "gpt-4o-mini", "input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let headers = resp.headers();
    assert!(headers.get("openai-organization").is_none(), "{headers:?}");
    assert!(headers.get("set-cookie").is_none(), "{headers:?}");
    // condenser's own per-key counter, not the provider's account-wide one.
    assert_ne!(
        headers
            .get("x-ratelimit-remaining-tokens")
            .and_then(|v| v.to_str().ok()),
        Some("149999")
    );
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("req-mock")
    );
    let seen = mock.last();
    for name in ["openai-organization", "openai-project", "cookie"] {
        assert!(seen.header(name).is_none(), "{name}: {:?}", seen.headers);
    }
    assert_eq!(seen.header("x-stainless-lang").as_deref(), Some("js"));
}

#[tokio::test]
async fn slow_bodies_and_idle_connections_are_cut_off() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    // Half a body, then nothing: answered 408 once `body_timeout_seconds` (2 s) pass.
    let started = Instant::now();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ROUTER_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    assert_eq!(raw_status(&proxy, &request), 408);
    assert!(started.elapsed() < Duration::from_secs(8));
    // An idle keep-alive connection is closed after `keepalive_timeout_seconds` (1 s).
    let mut stream = TcpStream::connect(proxy.addr).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the idle connection stayed open: {e}"),
        }
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn a_header_trickled_byte_by_byte_is_cut_off() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    let mut stream = TcpStream::connect(proxy.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    // One byte every 200 ms: each read is quick, the header never ends. pingora's per-read
    // timeout never fires; the header deadline (1 s here) does.
    let started = Instant::now();
    let header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in header {
        if stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => panic!("answered a header that never ended"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed, "the connection outlived the header deadline");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_and_closed() {
    let mock = MockUpstream::start().await;
    let config = secured(&mock).replacen("threads = 1", "threads = 1\nmax_connections = 2", 1);
    let proxy = Condenser::start_with_env(
        &config,
        &[
            ("LIMITED_KEY", LIMITED_KEY),
            ("ROUTER_KEY", ROUTER_KEY),
            ("MOCK_OPENAI_KEY", OPERATOR_KEY),
        ],
    );
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(proxy.addr).expect("connect"))
        .collect();
    // Give the accept loop time to take both places.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        raw_status(
            &proxy,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        503
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        raw_status(
            &proxy,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        200
    );
}

#[tokio::test]
async fn compression_cache_entries_belong_to_their_client_key() {
    let mock = MockUpstream::start().await;
    let document = common::long_document();
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": format!("{document}\n\nWho lit the lamp?")}]});
    let env = [
        ("LIMITED_KEY", LIMITED_KEY),
        ("ROUTER_KEY", ROUTER_KEY),
        ("MOCK_OPENAI_KEY", OPERATOR_KEY),
    ];
    for (scope, computed_after_other_key) in [("key", 2), ("deployment", 1)] {
        let config = secured(&mock)
            .replace("max_bytes = 4096", "max_bytes = 1048576")
            .replacen(
                "threads = 1",
                &format!("threads = 1\ncompression_cache_scope = \"{scope}\""),
                1,
            );
        let proxy = Condenser::start_with_env(&config, &env);
        let client = reqwest::Client::new();
        let ask = |key: &str| {
            client
                .post(proxy.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
        };
        for key in [ROUTER_KEY, ROUTER_KEY, LIMITED_KEY] {
            let resp = ask(key).await.expect("send");
            assert_eq!(resp.status(), 200);
            assert_eq!(compressor(&resp), Some("extractive"));
        }
        // The same key's second request hit; another key's hit only a shared cache.
        let health = common::healthz(&proxy).await;
        assert_eq!(
            health["compression"]["computed"], computed_after_other_key,
            "{scope}: {health}"
        );
    }
}

#[tokio::test]
async fn an_absurd_retry_after_is_answered_not_a_panic() {
    let mock = MockUpstream::start().await;
    let proxy = start(&mock);
    let client = reqwest::Client::new();
    let ask = |model: &str| {
        client
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(ROUTER_KEY)
            .json(&chat(model))
            .send()
    };
    let limited = ask("retry-forever")
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(limited.status(), 429);
    assert_eq!(ask("gpt-4o-mini").await.expect("send").status(), 200);
}

#[tokio::test]
async fn admin_keys_and_listeners_are_checked_at_start_up() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    let check = |server: &str| {
        std::fs::write(
            &path,
            common::config(&mock.base_url(), server, "enabled = false"),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("CONDENSER_UNSET_ADMIN_KEY")
            .output()
            .expect("check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // A named admin key variable that is unset used to leave the admin API open for reads.
    let (ok, stderr) =
        check("admin_listen = \"127.0.0.1:9\"\nadmin_key_env = \"CONDENSER_UNSET_ADMIN_KEY\"");
    assert!(!ok && stderr.contains("server.admin_key_env"), "{stderr}");
    // A wildcard admin listener needs the admin key.
    let (ok, stderr) = check("admin_listen = \"0.0.0.0:9\"");
    assert!(!ok && stderr.contains("server.admin_listen"), "{stderr}");
    let (ok, stderr) = check("admin_listen = \"[::]:9\"");
    assert!(!ok && stderr.contains("server.admin_listen"), "{stderr}");
}

/// In a network namespace of its own (`unshare -rn`: no routable address exists there), the
/// binary binds `0.0.0.0` for both listeners: the admin port serves admin only, the public port
/// no admin, and a reload that drops `[auth]` is refused while the public address stays bound.
#[test]
fn wildcard_listeners_in_a_private_network_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy.toml");
    let open_config = dir.path().join("open.toml");
    let base = r#"
[server]
threads = 1
grace_period_seconds = 0
listen = "0.0.0.0:18787"
admin_listen = "0.0.0.0:19787"
admin_key_env = "NS_ADMIN_KEY"

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"
"#;
    std::fs::write(
        &config,
        format!("{base}\n[auth]\n[[auth.keys]]\nname = \"k\"\nkey_env = \"NS_CLIENT_KEY\"\n"),
    )
    .expect("write");
    std::fs::write(&open_config, base).expect("write");
    let script = format!(
        r#"
set -u
ip link set lo up
export NS_ADMIN_KEY=sk-ns-admin NS_CLIENT_KEY=sk-ns-client
"{bin}" serve --config "{config}" >"{dir}/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null http://127.0.0.1:18787/healthz && curl -s -o /dev/null http://127.0.0.1:19787/healthz && break
  sleep 0.1
done
code() {{ curl -s -o /dev/null -w '%{{http_code}}' "$@"; }}
echo "admin_v1=$(code -X POST -H 'Authorization: Bearer sk-ns-client' -H 'Content-Type: application/json' -d '{{"model":"m","messages":[]}}' http://127.0.0.1:19787/v1/chat/completions)"
echo "admin_models=$(code -H 'Authorization: Bearer sk-ns-client' http://127.0.0.1:19787/v1/models)"
echo "admin_metrics=$(code http://127.0.0.1:19787/metrics)"
echo "admin_routes_nokey=$(code http://127.0.0.1:19787/admin/routes)"
echo "admin_routes=$(code -H 'Authorization: Bearer sk-ns-admin' http://127.0.0.1:19787/admin/routes)"
echo "public_metrics=$(code http://127.0.0.1:18787/metrics)"
echo "public_admin=$(code -H 'Authorization: Bearer sk-ns-admin' http://127.0.0.1:18787/admin/routes)"
cp "{open}" "{config}"
echo "reload_open=$(code -X POST -H 'Authorization: Bearer sk-ns-admin' http://127.0.0.1:19787/admin/reload)"
echo "public_nokey=$(code http://127.0.0.1:18787/v1/models)"
kill $pid
wait $pid 2>/dev/null
true
"#,
        bin = env!("CARGO_BIN_EXE_condenser"),
        config = config.display(),
        open = open_config.display(),
        dir = dir.path().display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["-rn", "bash", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let seen: std::collections::HashMap<&str, &str> =
        stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let expected = [
        ("admin_v1", "404"),
        ("admin_models", "404"),
        ("admin_metrics", "200"),
        ("admin_routes_nokey", "401"),
        ("admin_routes", "200"),
        ("public_metrics", "404"),
        ("public_admin", "404"),
        ("reload_open", "400"),
        ("public_nokey", "401"),
    ];
    for (name, code) in expected {
        assert_eq!(
            seen.get(name).copied(),
            Some(code),
            "{name}\nstdout:\n{stdout}\nstderr:\n{}\nlog:\n{log}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
