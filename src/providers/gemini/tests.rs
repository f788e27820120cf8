//! Gemini translation against fixtures written from the Gemini API reference.

use serde_json::{json, Value};

use super::*;
use crate::providers::shared::test_support;
use crate::providers::StreamTranscoder;

fn fixture(name: &str) -> Vec<u8> {
    test_support::fixture(&format!("gemini/{name}"))
}

fn request(body: Value) -> ChatRequest {
    ChatRequest::parse(body.to_string().as_bytes()).expect("valid request")
}

fn transcode(name: &str, step: usize, include_usage: bool) -> Vec<String> {
    let mut transcoder = GeminiStream::new("gemini-x", include_usage);
    test_support::replay(&mut transcoder, &fixture(name), step)
}

#[test]
fn request_maps_roles_tools_and_generation_config() {
    let req = request(json!({
        "model": "models/gemini-2.5-flash", "temperature": 0.1, "max_tokens": 100, "stop": ["END"],
        "response_format": {"type": "json_object"}, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "{\"temp\": 18}"},
            {"role": "user", "content": "Warm?"}
        ]
    }));
    let out = encode_request(&req).expect("encode");
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "Be terse."}]})
    );
    let contents = out["contents"].as_array().expect("contents");
    let roles: Vec<&str> = contents
        .iter()
        .map(|c| c["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, vec!["user", "model", "user"]);
    assert_eq!(
        contents[0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}})
    );
    assert_eq!(
        contents[1]["parts"][0],
        json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}})
    );
    assert_eq!(
        contents[2]["parts"][0],
        json!({"functionResponse": {"name": "get_weather", "response": {"temp": 18}}})
    );
    assert_eq!(contents[2]["parts"][1], json!({"text": "Warm?"}));
    assert_eq!(
        out["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    assert_eq!(
        out["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
    );
    assert_eq!(
        out["generationConfig"],
        json!({"temperature": 0.1, "maxOutputTokens": 100, "stopSequences": ["END"],
        "responseMimeType": "application/json"})
    );
    let encoded = Gemini
        .encode_chat(&req)
        .expect("encode")
        .expect("translated");
    assert_eq!(encoded.path, "/models/gemini-2.5-flash:generateContent");
}

#[test]
fn streaming_requests_use_the_sse_endpoint() {
    let req = request(
        json!({"model": "gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let encoded = Gemini
        .encode_chat(&req)
        .expect("encode")
        .expect("translated");
    assert_eq!(
        encoded.path,
        "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
}

#[test]
fn a_model_cannot_reach_other_paths_of_the_api() {
    for model in [
        "x/../../files",
        "gemini?alt=json",
        "..",
        "gemini%2F..",
        "gemini:countTokens#",
    ] {
        let req = request(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
        let error = Gemini
            .encode_chat(&req)
            .err()
            .unwrap_or_else(|| panic!("{model} accepted"));
        assert_eq!(error.status(), 400, "{model}");
    }
    let req = request(
        json!({"model": "models/gemini-1.5-pro-002", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let encoded = Gemini
        .encode_chat(&req)
        .expect("encode")
        .expect("translated");
    assert_eq!(encoded.path, "/models/gemini-1.5-pro-002:generateContent");
}

#[test]
fn responses_map_text_calls_and_usage() {
    let text = decode_response(&fixture("response.json"), "g").expect("decode");
    assert_eq!(
        text["choices"][0]["message"]["content"], "Paris is the capital of France.",
        "thought parts skipped"
    );
    assert_eq!(text["choices"][0]["finish_reason"], "stop");
    assert_eq!(text["usage"]["completion_tokens"], 10);
    assert_eq!(text["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(text["model"], "gemini-2.5-flash");
    let calls = decode_response(&fixture("function_call.json"), "g").expect("decode");
    assert_eq!(calls["choices"][0]["finish_reason"], "tool_calls");
    let tool_calls = calls["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("calls");
    assert_eq!(tool_calls.len(), 2);
    assert_eq!(tool_calls[1]["id"], "call_1");
    assert_eq!(
        tool_calls[1]["function"]["arguments"],
        "{\"city\":\"Rome\"}"
    );
    assert!(
        tool_calls[0].get("index").is_none(),
        "non-streaming tool calls carry no index"
    );
    let err = decode_error_body(429, &fixture("error.json"));
    assert_eq!(err["error"]["code"], "resource_exhausted");
}

#[test]
fn streams_transcode_text_calls_and_usage_at_every_chunk_size() {
    for step in [1, 9, 4096] {
        let frames = transcode("stream.sse", step, true);
        assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(f).expect("json"))
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "The capital of France is Paris.");
        assert_eq!(chunks.last().expect("usage")["usage"]["total_tokens"], 17);
        assert!(chunks.iter().all(|c| c["id"] == "resp-1"));
    }
    let frames = transcode("stream_function_call.sse", 7, false);
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).expect("json"))
        .collect();
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .expect("tool call delta");
    assert_eq!(call[0]["index"], 0);
    assert_eq!(call[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(
        chunks.last().expect("finish")["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[test]
fn cut_or_failed_streams_end_with_an_error_not_done() {
    let full = fixture("stream.sse");
    let mut t = GeminiStream::new("g", false);
    t.feed(&full[..full.len() / 2]);
    let end = String::from_utf8(t.finish()).expect("utf8");
    assert!(end.contains("incomplete_stream") && !end.contains("[DONE]"));
    let mut t = GeminiStream::new("g", false);
    let out = String::from_utf8(t.feed(b"data: {\"error\": {\"code\": 500, \"message\": \"Internal\", \"status\": \"INTERNAL\"}}\n\n")).expect("utf8");
    assert!(out.contains("\"internal\""));
    assert!(t.finish().is_empty());
}
