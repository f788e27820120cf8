//! Client authentication (`[auth]`) through the real binary: requests without an accepted key
//! get 401 in the caller's dialect, keys are accepted from `Authorization: Bearer` and
//! `x-api-key`, from the environment or as a SHA-256, a key limited to some routes gets 403
//! elsewhere, the client's key never reaches the upstream, and a non-loopback listener without
//! `[auth]` is refused at start-up.

mod common;

use common::{config, Condenser, MockUpstream};
use serde_json::{json, Value};

const TEAM_KEY: &str = "sk-condenser-team-0123456789";
const READER_KEY: &str = "sk-condenser-reader-9876543210";

fn sha256_hex(key: &str) -> String {
    condenser::config::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_auth(mock: &MockUpstream) -> String {
    let base = config(&mock.base_url(), "", "enabled = false");
    // Routes match in order: `other` goes before the catch-all.
    let other_route =
        "[[routes]]\nname = \"other\"\nmodels = [\"other-*\"]\nupstream = \"mock\"\n\n";
    base.replacen("[[routes]]", &format!("{other_route}[[routes]]"), 1)
        + &format!(
            r#"
[auth]
[[auth.keys]]
name = "team"
key_env = "CONDENSER_TEST_TEAM_KEY"

[[auth.keys]]
name = "reader"
sha256 = "{}"
routes = ["other"]
"#,
            sha256_hex(READER_KEY)
        )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn only_accepted_keys_pass_and_never_reach_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy =
        Condenser::start_with_env(&with_auth(&mock), &[("CONDENSER_TEST_TEAM_KEY", TEAM_KEY)]);
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(proxy.url(path)).json(&body);

    for request in [
        post("/v1/chat/completions", chat("gpt-4o-mini")),
        post("/v1/chat/completions", chat("gpt-4o-mini")).bearer_auth("sk-wrong"),
        post("/v1/embeddings", json!({"model": "e", "input": "x"})).bearer_auth("sk-wrong"),
    ] {
        let resp = request.send().await.expect("send");
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    }
    // The Anthropic front door answers in Anthropic's shape.
    let resp = post(
        "/v1/messages",
        json!({"model": "claude-x", "max_tokens": 8, "messages": []}),
    )
    .header("x-api-key", "sk-wrong")
    .send()
    .await
    .expect("send");
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert!(
        mock.received().is_empty(),
        "nothing unauthenticated went upstream"
    );

    // Accepted from either header; the client's key is not forwarded.
    let ok = post("/v1/chat/completions", chat("gpt-4o-mini"))
        .bearer_auth(TEAM_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    let ok = post("/v1/chat/completions", chat("gpt-4o-mini"))
        .header("x-api-key", TEAM_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    for request in mock.received() {
        assert!(
            request.header("authorization").is_none(),
            "{:?}",
            request.headers
        );
        assert!(
            request.header("x-api-key").is_none(),
            "{:?}",
            request.headers
        );
    }

    // A key limited to `other` may use it, and nothing else.
    let allowed = post("/v1/chat/completions", chat("other-model"))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(allowed.status(), 200);
    let denied = post("/v1/chat/completions", chat("gpt-4o-mini"))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.expect("json");
    assert_eq!(body["error"]["code"], "route_not_allowed");
    // The access log names the key, never shows it.
    let logs = proxy.logs();
    assert!(
        logs.contains("client=reader") || logs.contains("client=\"reader\""),
        "{logs}"
    );
    assert!(!logs.contains(TEAM_KEY) && !logs.contains(READER_KEY));
}

#[tokio::test]
async fn a_public_listener_without_auth_is_refused_at_start_up() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(&mock.base_url(), "", "enabled = false")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&path)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[auth]") && stderr.contains("server.allow_unauthenticated"),
        "{stderr}"
    );
    let allowed = config(
        &mock.base_url(),
        "allow_unauthenticated = true\nlisten = \"0.0.0.0:0\"",
        "",
    );
    std::fs::write(&path, allowed).expect("write");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test]
async fn per_key_concurrency_and_rate_limits_answer_503_and_429_with_retry_after() {
    use futures_util::StreamExt;
    let mock = MockUpstream::start().await;
    let cfg = config(&mock.base_url(), "", "enabled = false")
        + r#"
[auth]
[[auth.keys]]
name = "team"
key_env = "CONDENSER_TEST_TEAM_KEY"
max_in_flight = 1
requests_per_minute = 3
"#;
    let proxy = Condenser::start_with_env(&cfg, &[("CONDENSER_TEST_TEAM_KEY", TEAM_KEY)]);
    let client = reqwest::Client::new();
    let send = |model: &str, stream: bool| {
        client
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(TEAM_KEY)
            .json(&json!({"model": model, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // One request held open upstream (the mock holds `gated` streams after the first event).
    let held = send("gated", true).await.expect("send");
    assert_eq!(held.status(), 200);
    assert_eq!(
        held.headers()
            .get("x-ratelimit-remaining-requests")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let mut stream = held.bytes_stream();
    let _first = stream.next().await.expect("first event");
    let busy = send("gpt-4o-mini", false).await.expect("send");
    assert_eq!(busy.status(), 503);
    assert_eq!(
        busy.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = busy.json().await.expect("json");
    assert_eq!(body["error"]["code"], "overloaded");
    // Releasing the held request frees the place.
    mock.state.gate.notify_one();
    while stream.next().await.is_some() {}
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The bucket holds 3 a minute; the held request took one, the refused one none: two more
    // pass, the next is limited.
    for _ in 0..2 {
        assert_eq!(
            send("gpt-4o-mini", false).await.expect("send").status(),
            200
        );
    }
    let limited = send("gpt-4o-mini", false).await.expect("send");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        limited
            .headers()
            .get("x-ratelimit-remaining-requests")
            .and_then(|v| v.to_str().ok()),
        Some("0")
    );
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn input_tokens_are_limited_per_key_as_sent_upstream_after_compression() {
    let mock = MockUpstream::start().await;
    let cfg = config(
        &mock.base_url(),
        "",
        "enabled = true\nmin_tokens = 200\ntarget_ratio = 0.35",
    ) + r#"
[auth]
[[auth.keys]]
name = "team"
key_env = "CONDENSER_TEST_TEAM_KEY"
input_tokens_per_minute = 2000
compress_header = true
"#;
    let proxy = Condenser::start_with_env(&cfg, &[("CONDENSER_TEST_TEAM_KEY", TEAM_KEY)]);
    let client = reqwest::Client::new();
    let document = common::long_document();
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": format!("{document}\n\nWho lit the lamp?")}]});
    // Admission reserves the body's bytes / 4; the end of the request settles it.
    let estimate = (serde_json::to_vec(&body).expect("json").len() / 4) as i64;
    let send = |compress: &'static str| {
        client
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(TEAM_KEY)
            .header("x-condenser-compress", compress)
            .json(&body)
            .send()
    };
    let number = |resp: &reqwest::Response, name: &str| -> i64 {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {:?}", resp.headers()))
    };
    let first = send("on").await.expect("send");
    assert_eq!(first.status(), 200);
    assert_eq!(number(&first, "x-ratelimit-limit-tokens"), 2000);
    assert_eq!(
        number(&first, "x-ratelimit-remaining-tokens"),
        (2000 - estimate).max(0)
    );
    let (before, sent) = (
        number(&first, "x-condenser-tokens-before"),
        number(&first, "x-condenser-tokens-after"),
    );
    assert!(sent < before / 2, "compressed: {before} → {sent}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The first request's reservation (more than the bucket holds) was settled to what it
    // sent upstream, not what the client wrote: the bucket is positive again, so the second
    // is admitted (a minute's refill at 2000/min adds about 33 a second).
    assert!(
        estimate > 2000 && sent < 2000,
        "{estimate} reserved, {sent} sent"
    );
    let second = send("on").await.expect("send");
    assert_eq!(second.status(), 200);
    let remaining = number(&second, "x-ratelimit-remaining-tokens");
    assert_eq!(remaining, (2000 - sent - estimate).max(0));
    // Uncompressed requests overdraw the bucket: the key then waits.
    let mut limited = None;
    for _ in 0..2 {
        let resp = send("off").await.expect("send");
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let limited = limited.expect("an overdrawn key is limited");
    assert_eq!(number(&limited, "x-ratelimit-remaining-tokens"), 0);
    assert!(number(&limited, "retry-after") >= 1);
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2000 input tokens per minute"),
        "{message}"
    );
}
