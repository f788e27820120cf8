//! What the fuzz targets share: one compression pipeline with the model-free compressors and a
//! runtime to drive it, and the properties every target checks on what it produced.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use condenser::compress::registry;
use condenser::compress::{
    CompressionMode, CompressorKind, Pipeline, PipelineSettings, Role, Tokenizer,
};
use serde_json::Value;

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let compressors = registry::build_all(&BTreeMap::new()).expect("model-free compressors");
        Pipeline::new(1 << 20, compressors)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

const ROLES: &[Role] = &[Role::System, Role::Developer, Role::User, Role::Tool];

/// Runs the compression policy and a compressor over `messages`, as a route with
/// `min_tokens = 0` would, and checks what the proxy relies on: every message is still there,
/// and the counts it reports are consistent.
pub fn compress(messages: &mut [Value], compressor: CompressorKind) {
    let before = messages.len();
    let outcome = runtime().block_on(pipeline().apply(
        messages,
        compressor,
        PipelineSettings {
            roles: ROLES,
            min_tokens: 0,
            target_ratio: 0.35,
            timeout_ms: 60_000,
            mode: CompressionMode::Inline,
            scope: "",
        },
        Tokenizer::for_model("gpt-4o"),
    ));
    assert_eq!(messages.len(), before, "a message was lost");
    if !outcome.changed {
        assert_eq!(outcome.tokens_after, outcome.tokens_before);
    }
}

/// The model-free compressors the targets run.
pub fn compressors() -> impl Iterator<Item = CompressorKind> {
    ["extractive", "truncate"]
        .into_iter()
        .filter_map(CompressorKind::named)
}

/// Checks `frames` is a well-formed OpenAI SSE body: `data:` events of JSON objects, and at most
/// one `[DONE]`, last, never after an error event.
pub fn assert_openai_sse(frames: &[u8]) {
    let text = std::str::from_utf8(frames).expect("frames are UTF-8");
    let mut done = false;
    let mut failed = false;
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        assert!(!done, "an event after [DONE]: {text}");
        let data = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not a data event: {event:?}"));
        if data == "[DONE]" {
            assert!(!failed, "[DONE] after an error: {text}");
            done = true;
            continue;
        }
        let value: Value = serde_json::from_str(data).expect("event data is JSON");
        assert!(value.is_object(), "{data}");
        failed |= value.get("error").is_some();
    }
}
