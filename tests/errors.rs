//! Bad input and upstream faults: every one answered with an OpenAI-shaped error and the right
//! status, never a hang or a dropped connection.

mod common;

use std::time::Duration;

use common::{config, Condenser, MockUpstream};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(body["error"]["type"].is_string());
    body
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(&mock.base_url(), "", "enabled = true"));
    let url = proxy.url("/v1/chat/completions");
    let cases: &[(&str, &str)] = &[
        ("{\"model\": \"gpt-4o\", \"messages\": [", "invalid_json"),
        ("{\"model\": \"gpt-4o\"}", "invalid_request"),
        (
            "{\"model\": \"gpt-4o\", \"messages\": {\"role\": \"user\"}}",
            "invalid_request",
        ),
        ("{\"model\": 4, \"messages\": []}", "invalid_request"),
        (
            "{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": 7}]}",
            "invalid_request",
        ),
    ];
    let http = client();
    for (body, code) in cases {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("send");
        expect_error(resp, 400, code).await;
    }
    let resp = http
        .post(&url)
        .header("x-condenser-compress", "gzip")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("send");
    expect_error(resp, 400, "unknown_compressor").await;
    assert!(
        mock.received().is_empty(),
        "nothing invalid reached the upstream"
    );
    // The connection stays usable after errors.
    let ok = http
        .post(&url)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    let resp = http.get(proxy.url("/nope")).send().await.expect("send");
    expect_error(resp, 404, "unknown_url").await;
}

#[tokio::test]
async fn body_over_the_limit_gets_413() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(
        &mock.base_url(),
        "max_body_bytes = 1048576",
        "enabled = false",
    ));
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "y".repeat(2 * 1024 * 1024)}]});
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .expect("send");
    expect_error(resp, 413, "request_too_large").await;
    // Chunked, so the cap is enforced while reading rather than from Content-Length.
    let bytes = serde_json::to_vec(&big).expect("bytes");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(128 * 1024).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // Some clients see the 413, others a reset while still uploading; neither hangs.
    if let Ok(resp) = resp {
        expect_error(resp, 413, "request_too_large").await;
    }
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn unknown_model_without_default_route_gets_404_naming_it() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock.base_url(), "", "enabled = false")
        .replace("models = [\"*\"]", "models = [\"gpt-*\"]");
    let proxy = Condenser::start(&cfg);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "claude-3-opus", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("send");
    let body = expect_error(resp, 404, "model_not_found").await;
    assert!(body["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("claude-3-opus"));
}

#[tokio::test]
async fn upstream_faults_map_to_502_504_and_relayed_errors() {
    let mock = MockUpstream::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let cfg = format!(
        "{}\n[[upstreams]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{dead_port}/v1\"\n\n[[routes]]\nname = \"to-dead\"\nmodels = [\"dead-*\"]\nupstream = \"dead\"\n",
        config(&mock.base_url(), "", "enabled = false").replace("models = [\"*\"]", "models = [\"slow\", \"fail\"]")
    )
    .replace("timeout_ms = 2000", "timeout_ms = 500");
    let proxy = Condenser::start(&cfg);
    let http = client();
    let send = |model: &str| {
        http.post(proxy.url("/v1/chat/completions"))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    expect_error(
        send("dead-model").await.expect("send"),
        502,
        "upstream_unreachable",
    )
    .await;
    expect_error(send("slow").await.expect("send"), 504, "upstream_timeout").await;
    let relayed = send("fail").await.expect("send");
    assert_eq!(relayed.status(), 429);
    let body: Value = relayed.json().await.expect("json");
    assert_eq!(
        body["error"]["code"], "rate_limit_exceeded",
        "upstream error relayed as-is"
    );
}
