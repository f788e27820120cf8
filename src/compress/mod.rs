//! Context compression: the [`Compressor`] trait, one file per compressor and their registry,
//! the message-selection policy, the result cache, and the pipeline that applies them to a chat
//! request.
//!
//! Compressors are synchronous and deterministic: the same input always yields the same output,
//! so the upstream provider's prompt cache keeps hitting on repeated context. The pipeline decides
//! where they run (inline for small texts, on the blocking pool for big ones) and enforces the
//! deadline, failing open to the original text.

mod blocks;
mod cache;
mod extractive;
mod identity;
mod lines;
mod memo;
pub mod offload;
mod pipeline;
mod policy;
mod prune;
pub mod registry;
pub mod rewrite;
#[cfg(feature = "local-model")]
mod select;
pub mod select_prompt;
pub mod settings;
pub mod shared;
mod tokens;
mod truncate;

pub use cache::CompressionCache;
pub use extractive::Extractive;
pub use identity::Identity;
pub use pipeline::{CompressionOutcome, Pipeline, PipelineStats};
pub use policy::{plan, question_text, question_turn, text_slots, Piece, Plan, PlanTarget};
pub use prune::Prune;
pub use registry::{build_plain, COMPRESSORS};
pub use rewrite::Rewrite;
#[cfg(feature = "local-model")]
pub use select::{Select, DEFAULT_BLEND};
pub use settings::{
    CompressionMode, CompressorKind, ModelSettings, PipelineSettings, RemoteSettings, Role,
};
pub use tokens::Tokenizer;
pub use truncate::Truncate;

/// What a compressor gets: one span of prose, the user's question, and a token budget.
#[derive(Debug, Clone, Copy)]
pub struct CompressInput<'a> {
    pub text: &'a str,
    /// The last user question; query-aware compressors rank content against it.
    pub query: &'a str,
    /// Tokens the output should not exceed.
    pub target_tokens: usize,
    pub tokenizer: Tokenizer,
}

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("compressor `{compressor}` failed: {reason}")]
    Failed {
        compressor: &'static str,
        reason: String,
    },
    #[error("compression exceeded its {0} ms deadline")]
    Timeout(u64),
}

pub trait Compressor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether fenced code blocks may be given to this compressor (otherwise they are kept intact).
    fn handles_code(&self) -> bool {
        false
    }
    /// Whether the output depends on the query (it then takes part in the cache key).
    fn query_aware(&self) -> bool {
        false
    }
    /// Whether a call can take long enough (a local model) that it must never run on an I/O
    /// thread, whatever the text's size.
    fn blocking(&self) -> bool {
        false
    }
    fn compress(&self, input: &CompressInput<'_>) -> Result<String, CompressError>;
}
