//! End-to-end behaviour of the real `condenser` binary against a recording mock upstream.

mod common;

use std::time::Duration;

use common::{config, long_document, Condenser, MockUpstream};
use futures_util::StreamExt;
use serde_json::{json, Value};

const COMPRESS_ON: &str =
    "enabled = true\ncompressor = \"extractive\"\nmin_tokens = 200\ntarget_ratio = 0.35";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// POSTs a chat completion through the proxy with extra request headers.
async fn chat(proxy: &Condenser, headers: &[(&str, &str)], body: &Value) -> reqwest::Response {
    let mut request = client().post(proxy.url("/v1/chat/completions")).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send")
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_string())
}

#[tokio::test]
async fn non_streaming_round_trip_relays_the_answer_and_strips_proxy_headers() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(&mock.base_url(), "", "enabled = false"));
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}],
        "some_new_parameter": {"nested": [1, 2, 3]}, "temperature": 0});
    let resp = chat(
        &proxy,
        &[
            ("authorization", "Bearer client-key"),
            ("x-condenser-route", "main"),
            ("x-custom-header", "kept"),
        ],
        &body,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-condenser-compressor").as_deref(),
        Some("off")
    );
    assert_eq!(
        header(&resp, "x-condenser-tokens-before"),
        header(&resp, "x-condenser-tokens-after")
    );
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "received 1 messages"
    );

    let seen = mock.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.body,
        serde_json::to_vec(&body).expect("bytes"),
        "byte-exact when unchanged"
    );
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer client-key")
    );
    assert_eq!(seen.header("x-custom-header").as_deref(), Some("kept"));
    assert_eq!(seen.header("host"), Some(mock.addr.to_string()));
    assert!(seen
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("x-condenser-")));
}

#[tokio::test]
async fn forwarded_body_is_compressed_and_the_question_is_untouched() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(&mock.base_url(), "", COMPRESS_ON));
    let question = "When did Marguerite Okonkwo first light the lighthouse lamp?";
    let body = json!({"model": "gpt-4o", "user": "u-42", "messages": [
        {"role": "system", "content": "You answer from the document."},
        {"role": "user", "content": format!("{}\n\n{question}", long_document())}
    ]});
    let resp = chat(&proxy, &[], &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-condenser-compressor").as_deref(),
        Some("extractive")
    );
    let before: f64 = header(&resp, "x-condenser-tokens-before")
        .expect("before")
        .parse()
        .expect("n");
    let after: f64 = header(&resp, "x-condenser-tokens-after")
        .expect("after")
        .parse()
        .expect("n");
    assert!(after / before < 0.45, "ratio {} too high", after / before);

    let seen = mock.last().json();
    let content = seen["messages"][1]["content"].as_str().expect("content");
    assert!(
        content.ends_with(&format!("\n\n{question}")),
        "question kept verbatim at the end"
    );
    assert!(
        content.contains("14 March 1896"),
        "the answer survives compression"
    );
    assert!(content.len() < long_document().len() / 2);
    assert_eq!(
        seen["messages"][0]["content"],
        "You answer from the document."
    );
    assert_eq!(seen["user"], "u-42", "unknown fields pass through");

    // Same request, compression off per request: forwarded unchanged.
    let resp = chat(&proxy, &[("x-condenser-compress", "off")], &body).await;
    assert_eq!(
        header(&resp, "x-condenser-compressor").as_deref(),
        Some("off")
    );
    assert_eq!(mock.last().body, serde_json::to_vec(&body).expect("bytes"));

    // A compressor chosen per request.
    let resp = chat(&proxy, &[("x-condenser-compress", "truncate")], &body).await;
    assert_eq!(
        header(&resp, "x-condenser-compressor").as_deref(),
        Some("truncate")
    );
    let truncated = mock.last().json();
    assert!(truncated["messages"][1]["content"]
        .as_str()
        .expect("s")
        .contains('…'));
}

#[tokio::test]
async fn streaming_events_reach_the_client_before_the_stream_ends() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(&mock.base_url(), "", COMPRESS_ON));
    let body = json!({"model": "gated", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hi"}]});
    let resp = chat(&proxy, &[], &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("text/event-stream")
    );
    assert!(header(&resp, "x-condenser-tokens-before").is_some());
    let mut stream = resp.bytes_stream();
    // The mock holds the rest of the stream until the first event was seen by the client: a
    // proxy that buffered the response would never deliver it.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first event arrives while the upstream is still streaming")
        .expect("chunk")
        .expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    mock.state.gate.notify_one();
    let mut rest = String::from_utf8_lossy(&first).to_string();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    assert!(rest.contains("\" mock\""));
    assert!(rest.contains("\"total_tokens\":14"), "usage chunk relayed");
    assert!(rest.trim_end().ends_with("data: [DONE]"));
}

#[tokio::test]
async fn tools_and_tool_calls_round_trip_untouched() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(&mock.base_url(), "", COMPRESS_ON));
    let long_arguments = json!({"query": long_document()}).to_string();
    let body = json!({
        "model": "tools",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "auto",
        "messages": [
            {"role": "user", "content": "Search, then tell me the weather in Paris."},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "search", "arguments": long_arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": long_document()},
            {"role": "user", "content": "And the lighthouse keeper's first night?"}
        ]
    });
    let resp = chat(&proxy, &[], &body).await;
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let seen = mock.last().json();
    assert_eq!(seen["tools"], body["tools"]);
    assert_eq!(
        seen["messages"][1], body["messages"][1],
        "tool-call arguments never compressed"
    );
    assert_eq!(seen["messages"][2]["tool_call_id"], "call_1");
    let tool_result = seen["messages"][2]["content"]
        .as_str()
        .expect("tool content");
    assert!(
        tool_result.len() < long_document().len() / 2,
        "tool results are compressed"
    );

    // Streaming tool-call deltas relay unchanged.
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let text = chat(&proxy, &[], &streaming)
        .await
        .text()
        .await
        .expect("text");
    assert!(text.contains(r#""arguments":"{\"city\":""#));
    assert!(text.contains(r#""finish_reason":"tool_calls""#));
}

#[tokio::test]
async fn multi_megabyte_bodies_arrive_byte_exact() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(&mock.base_url(), "", COMPRESS_ON));
    let big = "x".repeat(3 * 1024 * 1024 + 17);
    let body = serde_json::to_vec(
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": big}]}),
    )
    .expect("bytes");
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-condenser-compress", "off")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.last().body.len(), body.len());
    assert!(
        mock.last().body == body,
        "3 MiB body forwarded byte for byte"
    );

    // The same through a passthrough endpoint, chunked (no Content-Length).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .post(proxy.url("/v1/embeddings"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert!(mock.last().body == body);
}

#[tokio::test]
async fn passthrough_models_and_health() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock.base_url(), "", "enabled = false").replace(
        "models = [\"*\"]",
        "models = [\"gpt-4o-mini\", \"text-embedding-3-small\", \"claude-*\"]",
    );
    let proxy = Condenser::start(&cfg);
    let resp = client()
        .post(proxy.url("/v1/embeddings?encoding=float"))
        .json(&json!({"model": "text-embedding-3-small", "input": "hello"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-condenser-route").as_deref(), Some("main"));
    assert_eq!(mock.last().path, "/v1/embeddings?encoding=float");
    let files = client()
        .get(proxy.url("/v1/files"))
        .send()
        .await
        .expect("send");
    assert_eq!(files.status(), 200);
    assert_eq!(mock.last().path, "/v1/files");

    let models: Value = client()
        .get(proxy.url("/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["gpt-4o-mini", "text-embedding-3-small"]);
    assert_eq!(models["object"], "list");

    let health: Value = client()
        .get(proxy.url("/healthz"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");

    // A client's probe of the base URL (Claude Code sends `HEAD /`) is answered like a
    // provider's, not with a 404 and an error in the log.
    let forwarded = mock.received().len();
    let head = client().head(proxy.url("/")).send().await.expect("head");
    assert_eq!(head.status(), 200);
    let root = client().get(proxy.url("/")).send().await.expect("get");
    assert_eq!(root.status(), 200);
    assert_eq!(
        mock.received().len(),
        forwarded,
        "probes are answered by condenser"
    );
}

#[tokio::test]
async fn configured_key_replaces_the_client_key_and_never_reaches_the_log() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock.base_url(), "", "enabled = false").replace(
        "timeout_ms = 2000",
        "timeout_ms = 2000\napi_key_env = \"MOCK_UPSTREAM_KEY\"",
    );
    let secret = "sk-test-very-secret-key-123";
    let proxy = Condenser::start_with_env(&cfg, &[("MOCK_UPSTREAM_KEY", secret)]);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.last().header("authorization"),
        Some(format!("Bearer {secret}"))
    );
    // The access line is written after the response has left, so wait for it.
    let mut logs = proxy.logs();
    for _ in 0..50 {
        if logs.contains("path=/v1/chat/completions status=200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        logs = proxy.logs();
    }
    assert!(
        logs.contains("path=/v1/chat/completions status=200"),
        "access log written: {logs}"
    );
    assert!(!logs.contains(secret), "key leaked into logs");
    assert!(!logs.contains("client-key"), "client key leaked into logs");
}

#[tokio::test]
async fn compressor_timeout_fails_open_to_the_original() {
    let mock = MockUpstream::start().await;
    // `max_bytes` above the ~1 MB document: it is compressed (and times out), not skipped.
    let compression = "enabled = true\ncompressor = \"extractive\"\nmin_tokens = 200\ntarget_ratio = 0.35\ntimeout_ms = 1\nmax_bytes = 4194304";
    let proxy = Condenser::start(&config(&mock.base_url(), "", compression));
    let huge = long_document().repeat(40);
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("{huge}\n\nWhen?")}]});
    let resp = chat(&proxy, &[], &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-condenser-fail-open").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&resp, "x-condenser-tokens-before"),
        header(&resp, "x-condenser-tokens-after")
    );
    assert!(
        mock.last().body == serde_json::to_vec(&body).expect("bytes"),
        "original forwarded"
    );
    let health: Value = client()
        .get(proxy.url("/healthz"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(health["compression"]["fail_open"], 1);
}

#[tokio::test]
async fn unset_key_variable_forwards_the_client_authorization() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock.base_url(), "", "enabled = false").replace(
        "timeout_ms = 2000",
        "timeout_ms = 2000\napi_key_env = \"CONDENSER_TEST_UNSET_KEY_VARIABLE\"",
    );
    let proxy = Condenser::start(&cfg);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.last().header("authorization").as_deref(),
        Some("Bearer client-key")
    );
}

#[tokio::test]
async fn background_mode_forwards_first_sight_uncompressed_and_repeats_compressed() {
    let mock = MockUpstream::start().await;
    let compression = format!("{COMPRESS_ON}\nmode = \"background\"");
    let proxy = Condenser::start(&config(&mock.base_url(), "", &compression));
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": long_document()},
        {"role": "user", "content": "Who lit the lighthouse lamp first?"}]});
    let first = chat(&proxy, &[], &body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "x-condenser-tokens-after"),
        header(&first, "x-condenser-tokens-before"),
        "first sight is forwarded as it came"
    );
    let forwarded = mock.last().json();
    assert_eq!(forwarded["messages"][0]["content"], long_document());
    // The compression finishes off the request path; the repeat is served from the cache.
    let started = std::time::Instant::now();
    let repeat = loop {
        let resp = chat(&proxy, &[], &body).await;
        if header(&resp, "x-condenser-tokens-after") != header(&resp, "x-condenser-tokens-before") {
            break resp;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never compressed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        header(&repeat, "x-condenser-compressor").as_deref(),
        Some("extractive")
    );
    let sent = mock.last().json();
    let text = sent["messages"][0]["content"].as_str().expect("text");
    assert!(text.len() < long_document().len() / 2);
    // Compressed for no particular question (it serves every later turn); the question itself
    // is never touched.
    assert_eq!(
        sent["messages"][1]["content"],
        "Who lit the lighthouse lamp first?"
    );
    let health: Value = client()
        .get(proxy.url("/healthz"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    let background = &health["compression"]["background"];
    assert!(background["queued"].as_u64() >= Some(1), "{health}");
    assert!(background["hits"].as_u64() >= Some(1), "{health}");
    assert_eq!(background["queue_depth"], 0);
}
