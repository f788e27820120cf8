//! Retries and failover through the real binary: an upstream that answers 503 twice is retried
//! until it answers; a refused upstream fails over to the route's fallback; a 429's
//! `Retry-After` is honoured and, when every attempt is spent, the last answer is relayed. The
//! client sees one answer and `x-condenser-attempts`. An upstream of several deployments spreads
//! concurrent requests by load and retries a refused deployment's request on another.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Condenser, MockUpstream};
use serde_json::{json, Value};

/// Serves `app` on a free loopback port; returns the port.
async fn serve(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// An upstream that answers each request after `delay`; returns its port and request count.
async fn slow(delay: Duration) -> (u16, Arc<AtomicUsize>) {
    scripted(0, 503, "0", delay).await
}

/// The primary upstream as deployments at `ports` instead of one `base_url`.
fn with_deployments(config: &str, ports: &[u16]) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ base_url = \"http://127.0.0.1:{p}/v1\" }}"))
        .collect();
    let mut lines: Vec<String> = Vec::new();
    for line in config.lines() {
        if line.starts_with("base_url = ") && lines.last().is_some_and(|l| l == "kind = \"openai\"")
        {
            lines.push(format!("deployments = [{}]", list.join(", ")));
        } else {
            lines.push(line.to_string());
        }
    }
    lines.join("\n")
}

/// An upstream that answers `failures` times with `status` (and `Retry-After: retry_after`),
/// then with a chat completion; returns its port and its request count.
async fn flaky(failures: usize, status: u16, retry_after: &'static str) -> (u16, Arc<AtomicUsize>) {
    scripted(failures, status, retry_after, Duration::ZERO).await
}

/// `flaky`, each answer given after `delay`.
async fn scripted(
    failures: usize,
    status: u16,
    retry_after: &'static str,
    delay: Duration,
) -> (u16, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let seen = seen.clone();
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                if n < failures {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    let error = json!({"error": {"message": "busy", "type": "server_error", "code": null}});
                    return (status, [("retry-after", retry_after)], axum::Json(error)).into_response();
                }
                axum::Json(json!({
                    "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "recovered"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                }))
                .into_response()
            }
        }),
    );
    (serve(app).await, count)
}

fn proxy_config(primary: &str, retries: u32, fallback: Option<&str>) -> String {
    let backup = fallback.map_or(String::new(), |url| {
        format!("\n[[upstreams]]\nname = \"backup\"\nkind = \"openai\"\nbase_url = \"{url}\"\n")
    });
    let fallbacks = if fallback.is_some() {
        "fallbacks = [\"backup\"]"
    } else {
        ""
    };
    format!(
        r#"
[server]
threads = 1
grace_period_seconds = 0

[[upstreams]]
name = "primary"
kind = "openai"
base_url = "{primary}"
timeout_ms = 10000
max_retries = {retries}
retry_backoff_ms = 20
{backup}
[[routes]]
name = "main"
models = ["*"]
upstream = "primary"
{fallbacks}
"#
    )
}

async fn ask(proxy: &Condenser) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    let attempts = resp
        .headers()
        .get("x-condenser-attempts")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        resp.status().as_u16(),
        attempts,
        resp.json().await.expect("json"),
    )
}

#[tokio::test]
async fn a_failing_upstream_is_retried_until_it_answers() {
    let (port, count) = flaky(2, 503, "0").await;
    let proxy = Condenser::start(&proxy_config(
        &format!("http://127.0.0.1:{port}/v1"),
        2,
        None,
    ));
    let (status, attempts, body) = ask(&proxy).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "recovered");
    assert_eq!(attempts.as_deref(), Some("3"));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // The access-log line is written as the request ends: give it a moment.
    let mut logged = false;
    for _ in 0..40 {
        if proxy.logs().contains("attempts=3") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged, "{}", proxy.logs());
}

#[tokio::test]
async fn a_refused_upstream_fails_over_to_the_fallback() {
    let backup = MockUpstream::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port(); // bound and released: nothing listens there
    let proxy = Condenser::start(&proxy_config(
        &format!("http://127.0.0.1:{closed}/v1"),
        1,
        Some(&backup.base_url()),
    ));
    let (status, attempts, body) = ask(&proxy).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        attempts.as_deref(),
        Some("3"),
        "two refusals, then the fallback"
    );
    assert_eq!(backup.received().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_last_answer_is_relayed() {
    let (port, count) = flaky(10, 429, "1").await;
    let proxy = Condenser::start(&proxy_config(
        &format!("http://127.0.0.1:{port}/v1"),
        1,
        None,
    ));
    let started = Instant::now();
    let (status, attempts, body) = ask(&proxy).await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited for Retry-After"
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["error"]["message"], "busy",
        "the upstream's own answer"
    );
    assert_eq!(attempts.as_deref(), Some("2"));
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_that_keeps_failing_is_ejected_then_probed_again() {
    let backup = MockUpstream::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let cfg = proxy_config(
        &format!("http://127.0.0.1:{closed}/v1"),
        0,
        Some(&backup.base_url()),
    )
    .replace(
        "retry_backoff_ms = 20",
        "retry_backoff_ms = 20\neject_after = 2\neject_for_ms = 1500",
    );
    let proxy = Condenser::start(&cfg);
    // Two failures in a row: each request tries the primary, then the fallback.
    for _ in 0..2 {
        assert_eq!(ask(&proxy).await.1.as_deref(), Some("2"));
    }
    // Ejected: straight to the fallback.
    assert_eq!(ask(&proxy).await.1.as_deref(), Some("1"));
    // After the cool-down one request probes the primary again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(ask(&proxy).await.1.as_deref(), Some("2"));
    assert_eq!(
        backup.received().len(),
        4,
        "every answer came from the fallback"
    );
}

#[tokio::test]
async fn concurrent_requests_are_spread_over_deployments_by_load() {
    let (a, a_count) = slow(Duration::from_millis(400)).await;
    let (b, b_count) = slow(Duration::from_millis(400)).await;
    let cfg = with_deployments(&proxy_config("http://unused/v1", 0, None), &[a, b]);
    let proxy = Condenser::start(&cfg);
    let asks: Vec<_> = (0..8).map(|_| ask(&proxy)).collect();
    for (status, attempts, body) in futures_util::future::join_all(asks).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(attempts.as_deref(), Some("1"));
    }
    // Each request went to the deployment with fewer in flight: four each, whatever the order.
    assert_eq!(
        (
            a_count.load(Ordering::SeqCst),
            b_count.load(Ordering::SeqCst)
        ),
        (4, 4)
    );
}

#[tokio::test]
async fn a_refused_deployment_is_retried_on_another_and_ejected() {
    let (up, count) = slow(Duration::ZERO).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let cfg = with_deployments(&proxy_config("http://unused/v1", 1, None), &[closed, up]).replace(
        "retry_backoff_ms = 20",
        "retry_backoff_ms = 20\neject_after = 1\neject_for_ms = 60000",
    );
    let proxy = Condenser::start(&cfg);
    let mut attempts_seen = Vec::new();
    for _ in 0..10 {
        let (status, attempts, body) = ask(&proxy).await;
        assert_eq!(status, 200, "{body}");
        attempts_seen.push(attempts.unwrap_or_default());
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        10,
        "every answer came from the live deployment"
    );
    // At most one request met the refusing deployment before it was ejected.
    let retried = attempts_seen.iter().filter(|a| *a == "2").count();
    assert!(retried <= 1, "{attempts_seen:?}");
    let logs = proxy.logs();
    assert!(
        logs.contains(&format!("deployment=\"127.0.0.1:{up}\"")),
        "the access log names the deployment: {logs}"
    );
}
