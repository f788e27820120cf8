//! Anthropic Messages SSE → OpenAI `chat.completion.chunk` frames. `message_start` opens the
//! assistant turn; `text_delta` becomes `content`; a `tool_use` block start becomes a tool-call
//! delta with id and name, its `input_json_delta`s become argument fragments under the same
//! tool-call index; `message_delta` carries the finish reason; `message_stop` ends with the usage
//! chunk (when asked) and `[DONE]`. An `error` event, or a body that ends before
//! `message_stop`, becomes an OpenAI error frame and never a clean `[DONE]`.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{finish_reason, usage};
use crate::openai::chunk::{data_frame, ChunkWriter, DONE_FRAME};
use crate::providers::sse::SseParser;
use crate::providers::{openai_error, StreamTranscoder};

pub struct AnthropicStream {
    parser: SseParser,
    frames: ChunkWriter,
    include_usage: bool,
    usage: Value,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_index: HashMap<u64, usize>,
    finished: bool,
    failed: bool,
}

impl AnthropicStream {
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            parser: SseParser::default(),
            frames: ChunkWriter::new("chatcmpl-anthropic", model),
            include_usage,
            usage: json!({}),
            tool_index: HashMap::new(),
            finished: false,
            failed: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        self.frames.chunk(delta, finish)
    }

    fn error_frame(&mut self, message: &str, kind: &str) -> Vec<u8> {
        self.failed = true;
        data_frame(&openai_error(message, kind, kind))
    }

    fn on_event(&mut self, event: &Value) -> Vec<u8> {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let message = &event["message"];
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.frames.id = id.to_string();
                }
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.frames.model = model.to_string();
                }
                // A usage that is not an object is ignored, so that a malformed stream cannot
                // make the output-token update below index into a non-object.
                if let Some(u) = message.get("usage").filter(|u| u.is_object()) {
                    self.usage = u.clone();
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None)
            }
            "content_block_start" => {
                let block = &event["content_block"];
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Vec::new();
                }
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let tool = self.tool_index.len();
                self.tool_index.insert(index, tool);
                self.chunk(
                    json!({"tool_calls": [{"index": tool, "id": block["id"], "type": "function",
                        "function": {"name": block["name"], "arguments": ""}}]}),
                    None,
                )
            }
            "content_block_delta" => {
                let delta = &event["delta"];
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.chunk(json!({"content": delta["text"]}), None),
                    Some("input_json_delta") => {
                        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let Some(&tool) = self.tool_index.get(&index) else {
                            return Vec::new();
                        };
                        self.chunk(
                            json!({"tool_calls": [{"index": tool, "function": {"arguments": delta["partial_json"]}}]}),
                            None,
                        )
                    }
                    // thinking_delta / signature_delta: no OpenAI counterpart.
                    _ => Vec::new(),
                }
            }
            "message_delta" => {
                if let (Some(out), Some(usage)) = (
                    event.pointer("/usage/output_tokens"),
                    self.usage.as_object_mut(),
                ) {
                    usage.insert("output_tokens".into(), out.clone());
                }
                let stop = event
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                self.chunk(json!({}), Some(finish_reason(stop)))
            }
            "message_stop" => {
                self.finished = true;
                let mut out = Vec::new();
                if self.include_usage {
                    out.extend(self.frames.usage_chunk(usage(&self.usage)));
                }
                out.extend_from_slice(DONE_FRAME);
                out
            }
            "error" => {
                let kind = event
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error")
                    .to_string();
                let message = event
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("Anthropic stream error")
                    .to_string();
                self.error_frame(&message, &kind)
            }
            _ => Vec::new(), // ping, content_block_stop
        }
    }
}

impl StreamTranscoder for AnthropicStream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in self.parser.feed(chunk) {
            if self.finished || self.failed {
                break;
            }
            match serde_json::from_str::<Value>(&event.data) {
                Ok(value) => out.extend(self.on_event(&value)),
                Err(_) => out.extend(
                    self.error_frame("malformed event in the Anthropic stream", "api_error"),
                ),
            }
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        if self.finished || self.failed {
            return Vec::new();
        }
        self.error_frame(
            "the Anthropic stream ended before message_stop",
            "api_error",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_that_is_not_an_object_is_ignored_not_a_panic() {
        let mut stream = AnthropicStream::new("m", true);
        let body = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":\"Hello\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},",
            "\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let out = String::from_utf8(stream.feed(body.as_bytes())).expect("utf-8");
        assert!(out.contains("\"finish_reason\":\"stop\""), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    }
}
