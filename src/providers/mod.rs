//! Upstream API dialects. One file (or folder) per provider behind [`Provider`]: encode an
//! OpenAI chat request into the provider's native request, decode its answers (JSON, SSE stream,
//! errors) back into OpenAI shapes. Pure and synchronous, so streams transcode chunk by chunk.
//! Compression happens before encoding, on the OpenAI-shaped messages, so every compressor works
//! for every provider.

pub mod anthropic;
pub mod gemini;
pub mod shared;
pub mod sse;

use std::sync::Arc;

use crate::config::UpstreamKind;
use crate::error::ProxyError;
use crate::openai::ChatRequest;

/// A translated upstream request.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRequest {
    /// Path after the upstream's base path, query included (`/messages`,
    /// `/models/gemini-2.0-flash:streamGenerateContent?alt=sse`).
    pub path: String,
    pub body: Vec<u8>,
    /// Headers the provider requires, added unless the client sent them (`anthropic-version`).
    pub headers: Vec<(&'static str, String)>,
}

/// Turns a provider's SSE stream into OpenAI `chat.completion.chunk` frames, incrementally.
pub trait StreamTranscoder: Send {
    /// Consumes one upstream chunk; returns the OpenAI frames it completed.
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8>;
    /// The upstream ended its body. Returns the closing frames, or an error frame when the
    /// provider's stream had not finished properly (never a clean `[DONE]` after a failure).
    fn finish(&mut self) -> Vec<u8>;
}

pub trait Provider: Send + Sync {
    /// The header carrying an API key.
    fn auth_header(&self, key: &str) -> (&'static str, String);
    /// `None` when the request is forwarded as-is (OpenAI-compatible upstreams).
    fn encode_chat(&self, request: &ChatRequest) -> Result<Option<EncodedRequest>, ProxyError>;
    /// A successful non-streaming answer as an OpenAI `chat.completion`.
    fn decode_chat(&self, body: &[u8], model: &str) -> Result<Vec<u8>, String>;
    /// An upstream error body as an OpenAI error body.
    fn decode_error(&self, status: u16, body: &[u8]) -> Vec<u8>;
    fn stream_transcoder(&self, model: &str, include_usage: bool) -> Box<dyn StreamTranscoder>;
}

/// OpenAI-compatible upstreams: everything is relayed untouched.
pub struct OpenAiCompatible;

impl Provider for OpenAiCompatible {
    fn auth_header(&self, key: &str) -> (&'static str, String) {
        ("authorization", format!("Bearer {key}"))
    }
    fn encode_chat(&self, _request: &ChatRequest) -> Result<Option<EncodedRequest>, ProxyError> {
        Ok(None)
    }
    fn decode_chat(&self, body: &[u8], _model: &str) -> Result<Vec<u8>, String> {
        Ok(body.to_vec())
    }
    fn decode_error(&self, _status: u16, body: &[u8]) -> Vec<u8> {
        body.to_vec()
    }
    fn stream_transcoder(&self, _model: &str, _include_usage: bool) -> Box<dyn StreamTranscoder> {
        Box::new(Relay)
    }
}

struct Relay;

impl StreamTranscoder for Relay {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        chunk.to_vec()
    }
    fn finish(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// The provider registry: one instance per dialect, chosen by the upstream's `kind`.
pub fn for_kind(kind: UpstreamKind) -> Arc<dyn Provider> {
    match kind {
        UpstreamKind::Openai => Arc::new(OpenAiCompatible),
        UpstreamKind::Anthropic => Arc::new(anthropic::Anthropic),
        UpstreamKind::Gemini => Arc::new(gemini::Gemini),
    }
}

pub(crate) use crate::openai::unix_now;

/// An OpenAI-shaped error body.
pub(crate) fn openai_error(message: &str, kind: &str, code: &str) -> serde_json::Value {
    crate::openai::error::error_value(message, kind, None, code)
}
