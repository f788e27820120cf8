//! OpenAI-shaped requests for `claude-*` and `gemini-*` reach mock Anthropic and Gemini APIs in
//! their native formats, and the answers come back as faithful OpenAI responses and streams.

mod common;

use std::time::Duration;

use common::{config, long_document, with_native_providers, Condenser, MockUpstream};
use serde_json::{json, Value};

const ANTHROPIC_KEY: &str = "sk-ant-mock-key";
const GEMINI_KEY: &str = "gemini-mock-key";

async fn setup() -> (MockUpstream, Condenser) {
    let mock = MockUpstream::start().await;
    let cfg = with_native_providers(&config(&mock.base_url(), "", "enabled = false"), &mock);
    let proxy = Condenser::start_with_env(
        &cfg,
        &[
            ("MOCK_ANTHROPIC_KEY", ANTHROPIC_KEY),
            ("MOCK_GEMINI_KEY", GEMINI_KEY),
        ],
    );
    (mock, proxy)
}

async fn post(proxy: &Condenser, body: Value) -> reqwest::Response {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-openai-key")
        .json(&body)
        .send()
        .await
        .expect("send")
}

/// The `data:` payloads of an SSE body.
fn sse_frames(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn anthropic_round_trip_is_native_upstream_and_openai_downstream() {
    let (mock, proxy) = setup().await;
    let question = "When did Marguerite Okonkwo first light the lamp?";
    let resp = post(
        &proxy,
        json!({"model": "claude-sonnet-4-5", "messages": [
        {"role": "system", "content": "Answer from the document."},
        {"role": "user", "content": format!("{}\n\n{question}", long_document())}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-condenser-compressor"], "extractive");
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello! How can I help?"
    );
    assert_eq!(answer["usage"]["total_tokens"], 120);

    let seen = mock.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key").as_deref(), Some(ANTHROPIC_KEY));
    assert_eq!(
        seen.header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(
        seen.header("authorization"),
        None,
        "the OpenAI client key is not sent to Anthropic"
    );
    let sent = seen.json();
    assert_eq!(sent["system"][0]["text"], "Answer from the document.");
    assert_eq!(sent["max_tokens"], 4096);
    let text = sent["messages"][0]["content"][0]["text"]
        .as_str()
        .expect("text");
    assert!(text.ends_with(question), "question kept");
    assert!(
        text.len() < long_document().len() / 2,
        "compressed before translation"
    );
}

#[tokio::test]
async fn anthropic_streams_text_tools_usage_and_errors() {
    let (_mock, proxy) = setup().await;
    let text = post(&proxy, json!({"model": "claude-sonnet-4-5", "stream": true,
        "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hi"}]}))
        .await
        .text()
        .await
        .expect("body");
    let frames = sse_frames(&text);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).expect("json"))
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello!");
    assert_eq!(
        chunks.last().expect("usage")["usage"]["completion_tokens"],
        15
    );

    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let text = post(
        &proxy,
        json!({"model": "claude-sonnet-4-5", "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "Weather?"}]}),
    )
    .await
    .text()
    .await
    .expect("body");
    let args: String = sse_frames(&text)
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(args, "{\"location\": \"San Francisco, CA\"}");

    for model in ["claude-overloaded", "claude-cut"] {
        let text = post(&proxy, json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
            .await
            .text()
            .await
            .unwrap_or_default();
        assert!(
            !text.contains("[DONE]"),
            "{model}: a failed stream must not look complete"
        );
        assert!(
            text.contains("\"error\""),
            "{model}: the error reaches the client: {text}"
        );
    }
}

#[tokio::test]
async fn provider_errors_are_openai_shaped_with_their_status() {
    let (_mock, proxy) = setup().await;
    let resp = post(
        &proxy,
        json!({"model": "claude-fail", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let resp = post(
        &proxy,
        json!({"model": "gemini-fail", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "resource_exhausted");
}

#[tokio::test]
async fn gemini_round_trips_plain_streaming_and_tools() {
    let (mock, proxy) = setup().await;
    let answer: Value = post(&proxy, json!({"model": "gemini-2.5-flash", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France?"}]}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Paris is the capital of France."
    );
    let seen = mock.last();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.header("x-goog-api-key").as_deref(), Some(GEMINI_KEY));
    assert_eq!(
        seen.json()["systemInstruction"]["parts"][0]["text"],
        "Be terse."
    );

    let text = post(
        &proxy,
        json!({"model": "gemini-2.5-flash", "stream": true,
        "messages": [{"role": "user", "content": "Capital of France?"}]}),
    )
    .await
    .text()
    .await
    .expect("body");
    assert_eq!(
        mock.last().path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let content: String = sse_frames(&text)
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "The capital of France is Paris.");
    assert!(text.trim_end().ends_with("data: [DONE]"));

    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let answer: Value = post(
        &proxy,
        json!({"model": "gemini-2.5-flash", "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}]}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"],
        "{\"city\":\"Rome\"}"
    );

    let cut = post(&proxy, json!({"model": "gemini-cut", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(
        !cut.contains("[DONE]") && cut.contains("incomplete_stream"),
        "{cut}"
    );
}

#[tokio::test]
async fn anthropic_front_door_compresses_natively_and_preserves_headers_and_cache_control() {
    let (mock, proxy) = setup().await;
    let question = "When did Marguerite Okonkwo first light the lamp?";
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 256,
        "system": [{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Search the archive."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "lighthouse"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": long_document()},
                {"type": "text", "text": question}]}
        ]
    });
    let resp = reqwest::Client::new()
        .post(proxy.url("/v1/messages"))
        .header("x-api-key", "client-anthropic-key")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-condenser-compressor"], "extractive");
    assert_eq!(
        resp.headers()["x-condenser-tokenizer"],
        "cl100k_base; estimate"
    );
    let answer = resp.bytes().await.expect("body");
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/anthropic/message.json"
    ))
    .expect("fixture");
    assert_eq!(
        answer.to_vec(),
        fixture,
        "Anthropic's answer relayed as sent"
    );

    let seen = mock.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(
        seen.header("anthropic-beta").as_deref(),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(
        seen.header("x-api-key").as_deref(),
        Some(ANTHROPIC_KEY),
        "configured key wins"
    );
    let sent = seen.json();
    assert_eq!(sent["system"], body["system"], "cache_control kept");
    assert_eq!(
        sent["messages"][1], body["messages"][1],
        "tool_use untouched"
    );
    let result = sent["messages"][2]["content"][0]["content"]
        .as_str()
        .expect("tool_result text");
    assert!(
        result.len() < long_document().len() / 2,
        "tool_result compressed"
    );
    assert!(result.contains("14 March 1896"));
    assert_eq!(sent["messages"][2]["content"][1]["text"], question);
    assert_eq!(sent["max_tokens"], 256);
}

#[tokio::test]
async fn anthropic_front_door_errors_are_anthropic_shaped() {
    let (_mock, proxy) = setup().await;
    let resp = reqwest::Client::new()
        .post(proxy.url("/v1/messages"))
        .header("content-type", "application/json")
        .body("{\"model\": \"claude-x\", \"messages\": 5}")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // A route whose upstream is not Anthropic is refused rather than mistranslated.
    let resp = reqwest::Client::new()
        .post(proxy.url("/v1/messages"))
        .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn without_a_configured_key_the_clients_bearer_goes_in_the_providers_header() {
    let mock = MockUpstream::start().await;
    let cfg = with_native_providers(&config(&mock.base_url(), "", "enabled = false"), &mock);
    let proxy = Condenser::start(&cfg);
    let resp = post(
        &proxy,
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = mock.last();
    assert_eq!(
        seen.header("x-api-key").as_deref(),
        Some("client-openai-key")
    );
    assert_eq!(seen.header("authorization"), None);
    let resp = post(
        &proxy,
        json!({"model": "gemini-x", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.last().header("x-goog-api-key").as_deref(),
        Some("client-openai-key")
    );
}
