//! Anthropic Messages API (`POST /v1/messages`, `x-api-key`, `anthropic-version`): OpenAI chat
//! requests encoded natively, answers decoded back. System and developer messages become
//! `system`; tool calls and tool results become `tool_use` / `tool_result` blocks; consecutive
//! same-role turns are merged because the API requires alternation; `cache_control` on a content
//! part is carried onto its block.

pub mod inbound;
mod stream;

use serde_json::{json, Map, Value};

use super::shared::{push_turn, stop_sequences, tool_calls};
use super::{openai_error, unix_now, EncodedRequest, Provider, StreamTranscoder};
use crate::error::ProxyError;
use crate::openai::completion;
use crate::openai::ChatRequest;

pub use stream::AnthropicStream;

pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by Anthropic; OpenAI clients often leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub struct Anthropic;

fn invalid(msg: impl Into<String>) -> ProxyError {
    ProxyError::InvalidRequest(msg.into())
}

/// OpenAI content (string or parts) → Anthropic blocks.
fn content_blocks(content: &Value) -> Result<Vec<Value>, ProxyError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .map(part_block)
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.into_iter().flatten().collect()),
        _ => Err(invalid(
            "message content must be a string or an array of parts",
        )),
    }
}

fn part_block(part: &Value) -> Result<Option<Value>, ProxyError> {
    let mut block = match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            json!({"type": "text", "text": part.get("text").and_then(Value::as_str).unwrap_or("")})
        }
        Some("image_url") => {
            let url = part
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("image_url part without a url"))?;
            json!({"type": "image", "source": image_source(url)?})
        }
        // Parts Anthropic cannot take (audio, files by id) are refused rather than silently dropped.
        Some(other) => {
            return Err(invalid(format!(
                "content part type `{other}` is not supported by Anthropic upstreams"
            )))
        }
        None => return Ok(None),
    };
    if let Some(cache) = part.get("cache_control") {
        block["cache_control"] = cache.clone();
    }
    Ok(Some(block))
}

fn image_source(url: &str) -> Result<Value, ProxyError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid("malformed data: URL"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| invalid("data: URLs must be base64"))?;
        Ok(json!({"type": "base64", "media_type": media_type, "data": data}))
    } else {
        Ok(json!({"type": "url", "url": url}))
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub fn encode_request(request: &ChatRequest) -> Result<Value, ProxyError> {
    let body = &request.body;
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    for message in request.messages() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.extend(content_blocks(content)?),
            "user" => push_turn(&mut turns, "user", "content", content_blocks(content)?),
            "assistant" => {
                let mut blocks = content_blocks(content)?;
                for (id, name, input) in tool_calls(message)? {
                    blocks
                        .push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                push_turn(&mut turns, "assistant", "content", blocks);
            }
            "tool" | "function" => {
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": text_of(content),
                });
                push_turn(&mut turns, "user", "content", vec![result]);
            }
            other => return Err(invalid(format!("unsupported message role `{other}`"))),
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(request.model));
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(turns));
    for key in ["temperature", "top_p"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stops) = stop_sequences(body) {
        out.insert("stop_sequences".into(), stops);
    }
    if request.stream {
        out.insert("stream".into(), json!(true));
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = t.get("function").unwrap_or(t);
                let mut tool = json!({
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = f.get("description") {
                    tool["description"] = d.clone();
                }
                if let Some(c) = t.get("cache_control") {
                    tool["cache_control"] = c.clone();
                }
                tool
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    let mut tool_choice = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({"type": "tool", "name": name})),
        _ => None,
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(choice) = tool_choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic usage → OpenAI usage (cache reads and writes count as prompt tokens, as OpenAI's do).
pub fn usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt =
        n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": n("cache_read_input_tokens")},
    })
}

pub fn decode_response(body: &[u8], model: &str) -> Result<Value, String> {
    let message: Value =
        serde_json::from_slice(body).map_err(|e| format!("Anthropic answer is not JSON: {e}"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                }
            })),
            _ => {} // thinking / redacted_thinking blocks have no OpenAI counterpart
        }
    }
    let stop = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let id = message.get("id").and_then(Value::as_str).unwrap_or("msg");
    let model = message
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(model);
    let choice = completion::choice(
        0,
        completion::assistant_message(&text, tool_calls),
        finish_reason(stop),
    );
    let usage = usage(message.get("usage").unwrap_or(&Value::Null));
    Ok(completion::completion_value(
        id,
        model,
        unix_now(),
        vec![choice],
        usage,
    ))
}

/// `{"type":"error","error":{"type","message"}}` → OpenAI error body.
pub fn decode_error_body(status: u16, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = parsed
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "Anthropic upstream answered {status}: {}",
                String::from_utf8_lossy(body)
            )
        });
    openai_error(&message, kind, kind)
}

impl Provider for Anthropic {
    fn auth_header(&self, key: &str) -> (&'static str, String) {
        ("x-api-key", key.to_string())
    }

    fn encode_chat(&self, request: &ChatRequest) -> Result<Option<EncodedRequest>, ProxyError> {
        let body = encode_request(request)?;
        Ok(Some(EncodedRequest {
            path: "/messages".into(),
            body: serde_json::to_vec(&body).map_err(|e| invalid(e.to_string()))?,
            headers: vec![("anthropic-version", API_VERSION.into())],
        }))
    }

    fn decode_chat(&self, body: &[u8], model: &str) -> Result<Vec<u8>, String> {
        decode_response(body, model).map(|v| v.to_string().into_bytes())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> Vec<u8> {
        decode_error_body(status, body).to_string().into_bytes()
    }

    fn stream_transcoder(&self, model: &str, include_usage: bool) -> Box<dyn StreamTranscoder> {
        Box::new(AnthropicStream::new(model, include_usage))
    }
}

#[cfg(test)]
mod tests;
