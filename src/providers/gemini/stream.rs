//! Gemini `streamGenerateContent?alt=sse` → OpenAI chunks. Each SSE event is a whole
//! `GenerateContentResponse` fragment: its text becomes `content` deltas, each `functionCall`
//! (Gemini sends them whole) a tool-call delta with its full arguments, `finishReason` the
//! finish chunk; the last `usageMetadata` feeds the usage chunk. A stream that ends without a
//! finish reason, or an `error` payload, becomes an OpenAI error frame, never `[DONE]`.

use serde_json::{json, Value};

use super::{candidate_parts, finish_reason, usage};
use crate::openai::chunk::{data_frame, ChunkWriter, DONE_FRAME};
use crate::providers::sse::SseParser;
use crate::providers::{openai_error, StreamTranscoder};

pub struct GeminiStream {
    parser: SseParser,
    frames: ChunkWriter,
    include_usage: bool,
    started: bool,
    tool_calls: usize,
    usage: Value,
    finished: bool,
    failed: bool,
}

impl GeminiStream {
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            parser: SseParser::default(),
            frames: ChunkWriter::new("chatcmpl-gemini", model),
            include_usage,
            started: false,
            tool_calls: 0,
            usage: Value::Null,
            finished: false,
            failed: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        self.frames.chunk(delta, finish)
    }

    fn error_frame(&mut self, message: &str, code: &str) -> Vec<u8> {
        self.failed = true;
        data_frame(&openai_error(message, "api_error", code))
    }

    fn on_response(&mut self, response: &Value) -> Vec<u8> {
        if let Some(error) = response.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("Gemini stream error")
                .to_string();
            let code = error
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_ascii_lowercase();
            return self.error_frame(&message, &code);
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            if let Some(id) = response.get("responseId").and_then(Value::as_str) {
                self.frames.id = id.to_string();
            }
            if let Some(model) = response.get("modelVersion").and_then(Value::as_str) {
                self.frames.model = model.to_string();
            }
            out.extend(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(meta) = response.get("usageMetadata") {
            self.usage = meta.clone();
        }
        let Some(candidate) = response.pointer("/candidates/0") else {
            return out;
        };
        let (text, calls) = candidate_parts(candidate, self.tool_calls);
        if !text.is_empty() {
            out.extend(self.chunk(json!({"content": text}), None));
        }
        if !calls.is_empty() {
            self.tool_calls += calls.len();
            out.extend(self.chunk(json!({"tool_calls": calls}), None));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finished = true;
            out.extend(self.chunk(json!({}), Some(finish_reason(reason, self.tool_calls > 0))));
        }
        out
    }
}

impl StreamTranscoder for GeminiStream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in self.parser.feed(chunk) {
            if self.failed {
                break;
            }
            match serde_json::from_str::<Value>(&event.data) {
                Ok(value) => out.extend(self.on_response(&value)),
                Err(_) => out.extend(
                    self.error_frame("malformed event in the Gemini stream", "malformed_stream"),
                ),
            }
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        if self.failed {
            return Vec::new();
        }
        if !self.finished || !self.parser.pending().iter().all(u8::is_ascii_whitespace) {
            return self.error_frame(
                "the Gemini stream ended before a finish reason",
                "incomplete_stream",
            );
        }
        let mut out = Vec::new();
        if self.include_usage {
            out.extend(self.frames.usage_chunk(usage(&self.usage)));
        }
        out.extend_from_slice(DONE_FRAME);
        out
    }
}
