//! Google Gemini (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `x-goog-api-key`): OpenAI chat requests encoded natively, answers decoded back. System and
//! developer messages become `systemInstruction`; assistant turns are `model` turns; tool calls
//! and results become `functionCall` / `functionResponse` parts (the function name of a result is
//! found from the assistant call it answers, since OpenAI tool messages carry only the id).

mod stream;

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::shared::{push_turn, stop_sequences, tool_calls};
use super::{openai_error, unix_now, EncodedRequest, Provider, StreamTranscoder};
use crate::error::ProxyError;
use crate::openai::completion;
use crate::openai::ChatRequest;

pub use stream::GeminiStream;

pub struct Gemini;

fn invalid(msg: impl Into<String>) -> ProxyError {
    ProxyError::InvalidRequest(msg.into())
}

fn mime_from_url(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    let path = lower.split(['?', '#']).next().unwrap_or("");
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

fn parts_of(content: &Value) -> Result<Vec<Value>, ProxyError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(
                        json!({"text": item.get("text").and_then(Value::as_str).unwrap_or("")}),
                    ),
                    Some("image_url") => {
                        let url = item
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid("image_url part without a url"))?;
                        if let Some(rest) = url.strip_prefix("data:") {
                            let (meta, data) = rest
                                .split_once(',')
                                .ok_or_else(|| invalid("malformed data: URL"))?;
                            let mime = meta
                                .strip_suffix(";base64")
                                .ok_or_else(|| invalid("data: URLs must be base64"))?;
                            parts.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                        } else {
                            parts.push(json!({"fileData": {"mimeType": mime_from_url(url), "fileUri": url}}));
                        }
                    }
                    Some(other) => {
                        return Err(invalid(format!(
                            "content part type `{other}` is not supported by Gemini upstreams"
                        )))
                    }
                    None => {}
                }
            }
            Ok(parts)
        }
        _ => Err(invalid(
            "message content must be a string or an array of parts",
        )),
    }
}

/// The model id as Gemini's path wants it (`models/` prefix removed).
fn model_id(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

pub fn encode_request(request: &ChatRequest) -> Result<Value, ProxyError> {
    let body = &request.body;
    let mut system = Vec::new();
    let mut contents = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for message in request.messages() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.extend(parts_of(content)?),
            "user" => push_turn(&mut contents, "user", "parts", parts_of(content)?),
            "assistant" => {
                let mut parts = parts_of(content)?;
                for (id, name, args) in tool_calls(message)? {
                    if let Some(id) = id {
                        call_names.insert(id, name.clone());
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                push_turn(&mut contents, "model", "parts", parts);
            }
            "tool" | "function" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = call_names
                    .get(id)
                    .cloned()
                    .or_else(|| {
                        message
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .ok_or_else(|| {
                        invalid(format!("tool message `{id}` answers no earlier tool call"))
                    })?;
                let text = match content {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let response: Value = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"content": text}));
                push_turn(
                    &mut contents,
                    "user",
                    "parts",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            other => return Err(invalid(format!("unsupported message role `{other}`"))),
        }
    }
    let mut out = Map::new();
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    out.insert("contents".into(), Value::Array(contents));
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let declarations: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut d = json!({"name": f.get("name").cloned().unwrap_or(Value::Null)});
                if let Some(desc) = f.get("description") {
                    d["description"] = desc.clone();
                }
                if let Some(p) = f.get("parameters") {
                    d["parameters"] = p.clone();
                }
                d
            })
            .collect();
        out.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    let mode = match body.get("tool_choice") {
        Some(Value::String(s)) if s == "auto" => Some(json!({"mode": "AUTO"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"mode": "ANY"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"mode": "NONE"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|name| json!({"mode": "ANY", "allowedFunctionNames": [name]})),
        _ => None,
    };
    if let Some(mode) = mode {
        out.insert("toolConfig".into(), json!({"functionCallingConfig": mode}));
    }
    let mut generation = Map::new();
    let copy = [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ];
    for (from, to) in copy {
        if let Some(v) = body.get(from).filter(|v| !v.is_null()) {
            generation.insert(to.into(), v.clone());
        }
    }
    if let Some(max) = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .filter(|v| !v.is_null())
    {
        generation.insert("maxOutputTokens".into(), max.clone());
    }
    if let Some(stops) = stop_sequences(body) {
        generation.insert("stopSequences".into(), stops);
    }
    if body
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        == Some("json_object")
    {
        generation.insert("responseMimeType".into(), json!("application/json"));
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(out))
}

/// Gemini `finishReason` → OpenAI `finish_reason`.
pub fn finish_reason(reason: &str, called_tools: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
}

pub fn usage(meta: &Value) -> Value {
    let n = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount");
    let completion = n("candidatesTokenCount") + n("thoughtsTokenCount");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": n("cachedContentTokenCount")},
    })
}

/// Text (thought parts skipped) and tool calls of a candidate, numbering calls from `first_index`.
pub fn candidate_parts(candidate: &Value, first_index: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(call) = part.get("functionCall") {
            let index = first_index + calls.len();
            let id = call
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("call_{index}"), str::to_string);
            calls.push(json!({
                "index": index,
                "id": id,
                "type": "function",
                "function": {
                    "name": call.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": call.get("args").map_or_else(|| "{}".to_string(), Value::to_string),
                }
            }));
        }
    }
    (text, calls)
}

pub fn decode_response(body: &[u8], model: &str) -> Result<Value, String> {
    let response: Value =
        serde_json::from_slice(body).map_err(|e| format!("Gemini answer is not JSON: {e}"))?;
    let candidates = response
        .get("candidates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let choices: Vec<Value> = candidates
        .iter()
        .enumerate()
        .map(|(i, candidate)| {
            let (text, mut calls) = candidate_parts(candidate, 0);
            for call in &mut calls {
                if let Some(o) = call.as_object_mut() {
                    o.remove("index");
                }
            }
            let reason = candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP");
            let called = !calls.is_empty();
            let message = completion::assistant_message(&text, calls);
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            completion::choice(index, message, finish_reason(reason, called))
        })
        .collect();
    let id = response
        .get("responseId")
        .and_then(Value::as_str)
        .unwrap_or("chatcmpl-gemini");
    let model = response
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(model);
    let usage = usage(response.get("usageMetadata").unwrap_or(&Value::Null));
    Ok(completion::completion_value(
        id,
        model,
        unix_now(),
        choices,
        usage,
    ))
}

/// `{"error":{"code","message","status"}}` → OpenAI error body.
pub fn decode_error_body(status: u16, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let parsed = parsed
        .as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or(parsed);
    let code = parsed
        .pointer("/error/status")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN")
        .to_ascii_lowercase();
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "Gemini upstream answered {status}: {}",
                String::from_utf8_lossy(body)
            )
        });
    let kind = if status < 500 {
        "invalid_request_error"
    } else {
        "api_error"
    };
    openai_error(&message, kind, &code)
}

impl Provider for Gemini {
    fn auth_header(&self, key: &str) -> (&'static str, String) {
        ("x-goog-api-key", key.to_string())
    }

    fn encode_chat(&self, request: &ChatRequest) -> Result<Option<EncodedRequest>, ProxyError> {
        let body = encode_request(request)?;
        let model = model_id(&request.model);
        // The model goes into the upstream URL: a `/`, `?`, `%` or `..` from the client would
        // reach other endpoints of the API with condenser's key.
        let valid = !model.is_empty()
            && model != "."
            && model != ".."
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(invalid(format!(
                "`{}` is not a Gemini model id (letters, digits, `-`, `_`, `.`)",
                request.model
            )));
        }
        let path = if request.stream {
            format!("/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/models/{model}:generateContent")
        };
        Ok(Some(EncodedRequest {
            path,
            body: serde_json::to_vec(&body).map_err(|e| invalid(e.to_string()))?,
            headers: Vec::new(),
        }))
    }

    fn decode_chat(&self, body: &[u8], model: &str) -> Result<Vec<u8>, String> {
        decode_response(body, model).map(|v| v.to_string().into_bytes())
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> Vec<u8> {
        decode_error_body(status, body).to_string().into_bytes()
    }

    fn stream_transcoder(&self, model: &str, include_usage: bool) -> Box<dyn StreamTranscoder> {
        Box::new(GeminiStream::new(model, include_usage))
    }
}

#[cfg(test)]
mod tests;
