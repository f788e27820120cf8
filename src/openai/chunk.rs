//! OpenAI stream frames: `chat.completion.chunk` objects as SSE `data:` frames, and the
//! `[DONE]` frame that ends a stream.

use serde_json::{json, Value};

use super::unix_now;

/// One SSE frame carrying `json`.
pub fn data_frame(json: &Value) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// Writes OpenAI stream frames for one response.
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    created: u64,
}

impl ChunkWriter {
    pub fn new(id: &str, model: &str) -> Self {
        Self {
            id: id.to_string(),
            model: model.to_string(),
            created: unix_now(),
        }
    }

    pub fn chunk(&self, delta: Value, finish: Option<&str>) -> Vec<u8> {
        data_frame(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    }

    /// The final chunk of `stream_options.include_usage`: no choices, only usage.
    pub fn usage_chunk(&self, usage: Value) -> Vec<u8> {
        data_frame(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": usage,
        }))
    }
}
