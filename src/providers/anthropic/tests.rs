//! Anthropic translation against fixtures written from the Messages API reference.

use serde_json::{json, Value};

use super::*;
use crate::providers::shared::test_support;
use crate::providers::StreamTranscoder;

fn fixture(name: &str) -> Vec<u8> {
    test_support::fixture(&format!("anthropic/{name}"))
}

fn request(body: Value) -> ChatRequest {
    ChatRequest::parse(body.to_string().as_bytes()).expect("valid request")
}

fn transcode(name: &str, step: usize, include_usage: bool) -> Vec<String> {
    let mut transcoder = AnthropicStream::new("claude-x", include_usage);
    test_support::replay(&mut transcoder, &fixture(name), step)
}

#[test]
fn request_maps_system_tools_images_and_tool_results() {
    let req = request(json!({
        "model": "claude-sonnet-4-5", "temperature": 0.2, "stop": "END", "user": "u1",
        "parallel_tool_calls": false, "tool_choice": "required", "stream": true,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Cite sources.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
            {"role": "user", "content": "Which is warmer?"}
        ]
    }));
    let out = encode_request(&req).expect("encode");
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "Be terse."},
        {"type": "text", "text": "Cite sources.", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["metadata"], json!({"user_id": "u1"}));
    assert_eq!(out["stream"], true);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        out["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    let turns = out["messages"].as_array().expect("messages");
    let roles: Vec<&str> = turns
        .iter()
        .map(|t| t["role"].as_str().expect("role"))
        .collect();
    assert_eq!(
        roles,
        vec!["user", "assistant", "user"],
        "tool results and the next question merge into one user turn"
    );
    assert_eq!(
        turns[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    assert_eq!(
        turns[0]["content"][2]["source"],
        json!({"type": "url", "url": "https://example.com/cat.jpg"})
    );
    assert_eq!(
        turns[1]["content"][1],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}})
    );
    assert_eq!(
        turns[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "call_1", "content": "18C"})
    );
    assert_eq!(turns[2]["content"][1]["tool_use_id"], "call_2");
    assert_eq!(
        turns[2]["content"][2],
        json!({"type": "text", "text": "Which is warmer?"})
    );
}

#[test]
fn bad_tool_arguments_and_unsupported_parts_are_rejected() {
    let req = request(json!({"model": "c", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}));
    assert_eq!(encode_request(&req).expect_err("bad args").status(), 400);
    let req = request(
        json!({"model": "c", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
    );
    assert_eq!(encode_request(&req).expect_err("audio").status(), 400);
}

#[test]
fn response_maps_text_tools_finish_reason_and_usage() {
    let text = decode_response(&fixture("message.json"), "claude").expect("decode");
    assert_eq!(text["object"], "chat.completion");
    assert_eq!(
        text["choices"][0]["message"]["content"],
        "Hello! How can I help?"
    );
    assert_eq!(text["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        text["usage"]["prompt_tokens"], 112,
        "cache reads count as prompt tokens"
    );
    assert_eq!(text["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    let tools = decode_response(&fixture("tool_use.json"), "claude").expect("decode");
    let message = &tools["choices"][0]["message"];
    assert_eq!(tools["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        message["content"], "I'll check the weather.",
        "thinking is not leaked into content"
    );
    assert_eq!(
        message["tool_calls"][0]["id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
    let args: Value = serde_json::from_str(
        message["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("s"),
    )
    .expect("json");
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
}

#[test]
fn errors_become_openai_shaped() {
    let err = decode_error_body(429, &fixture("error.json"));
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert!(err["error"]["message"]
        .as_str()
        .expect("m")
        .contains("rate limit"));
    let garbage = decode_error_body(502, b"<html>bad gateway</html>");
    assert!(garbage["error"]["message"]
        .as_str()
        .expect("m")
        .contains("502"));
}

#[test]
fn text_stream_transcodes_at_every_chunk_size() {
    for step in [1, 7, 64, 100_000] {
        let frames = transcode("stream_text.sse", step, true);
        let last = frames.last().expect("frames");
        assert_eq!(last, "[DONE]", "step {step}");
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| serde_json::from_str(f).expect("json"))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello!");
        let finish: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, vec!["stop"]);
        let usage = &chunks.last().expect("usage chunk")["usage"];
        assert_eq!(
            usage,
            &json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 0}})
        );
        assert!(chunks
            .iter()
            .all(|c| c["id"] == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"));
    }
}

#[test]
fn tool_use_stream_keeps_ids_names_and_argument_fragments() {
    let frames = transcode("stream_tool_use.sse", 13, false);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).expect("json"))
        .collect();
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage chunk unless asked"
    );
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert!(
        calls.iter().all(|c| c[0]["index"] == 0),
        "one tool call, index 0"
    );
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"location\": \"San Francisco, CA\"}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text, "Okay, let's check.",
        "thinking deltas are not content"
    );
    assert_eq!(
        chunks.last().expect("last")["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[test]
fn stream_errors_and_cuts_never_end_with_done() {
    let frames = transcode("stream_error.sse", 5, true);
    assert!(!frames.iter().any(|f| f == "[DONE]"));
    let err: Value = serde_json::from_str(frames.last().expect("frame")).expect("json");
    assert_eq!(err["error"]["type"], "overloaded_error");

    let full = fixture("stream_text.sse");
    let mut t = AnthropicStream::new("claude-x", false);
    let cut = t.feed(&full[..full.len() / 2]);
    assert!(!String::from_utf8_lossy(&cut).contains("[DONE]"));
    let end = String::from_utf8(t.finish()).expect("utf8");
    assert!(end.contains("\"error\"") && !end.contains("[DONE]"));
}
