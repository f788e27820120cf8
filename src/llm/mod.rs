//! The compressor models: what a model-backed compressor asks of a model ([`ModelBackend`]), and
//! the two places it can run. `local` is a GGUF model run by llama.cpp in this process (the
//! `local-model` feature); `remote` is an OpenAI-compatible inference server reached over HTTP
//! (llama.cpp's `llama-server`, vLLM, or `condenser serve-model` on a GPU host), which needs no
//! llama.cpp in the proxy at all. `serve` is the server side of that protocol over a local model.
//!
//! Both backends answer the same questions with the same numbers for the same model: token
//! self-information of a text after a prefix (`prune`), and a greedy chat completion (`rewrite`).

#[cfg(feature = "local-model")]
mod classify;
#[cfg(feature = "local-model")]
mod generate;
#[cfg(feature = "local-model")]
mod local;
mod remote;
#[cfg(feature = "local-model")]
mod score;
#[cfg(feature = "local-model")]
pub mod serve;
#[cfg(feature = "local-model")]
mod vocab;

use std::time::Duration;

#[cfg(feature = "local-model")]
pub use classify::ClassifyWindow;
#[cfg(feature = "local-model")]
pub use local::{LocalModel, LocalModelConfig, LocalModelStats};
pub use remote::{RemoteModel, RemoteModelConfig};
#[cfg(feature = "local-model")]
pub use score::PromptToken;
#[cfg(feature = "local-model")]
pub use vocab::Vocabulary;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot load the local model: {0}")]
    Load(String),
    #[error("the local model's queue is full")]
    QueueFull,
    #[error("the model missed its deadline")]
    Deadline,
    #[error("the prompt has {prompt} tokens; the context holds {context}")]
    TooLong { prompt: usize, context: usize },
    #[error("local model failure: {0}")]
    Worker(String),
    #[error("inference server: {0}")]
    Remote(String),
}

/// Self-information of one token of the scored text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSurprisal {
    /// The token's bytes of the text (of a token that straddles the prefix, only the text's
    /// part), so the pieces of a scoring concatenate to the text.
    pub bytes: Vec<u8>,
    /// −log2 p(token | everything before it).
    pub bits: f32,
}

impl TokenSurprisal {
    /// A token of `bytes` whose probability after what precedes it is `e^logprob`; a token with
    /// nothing before it (`None`) carries no information here: 0 bits.
    pub fn new(bytes: Vec<u8>, logprob: Option<f64>) -> Self {
        Self {
            bytes,
            bits: logprob.map_or(0.0, |lp| (-lp / std::f64::consts::LN_2) as f32),
        }
    }
}

/// One message of the chat given to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTurn {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatTurn {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    /// Leading prompt tokens found in the KV cache from the previous request, not prefilled.
    pub reused_prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Whether the model ended the answer itself (false: the token budget ran out).
    pub finished: bool,
}

/// What a model-backed compressor asks of its model, wherever the model runs.
pub trait ModelBackend: Send + Sync {
    /// Self-information of every token of `text`, read after `prefix`. The prompt is
    /// `prefix + text` tokenized as one string (as a server given that string would), so a token
    /// may straddle the two; its [`TokenSurprisal::bytes`] are then the text's part.
    fn surprisal(
        &self,
        prefix: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Vec<TokenSurprisal>, LlmError>;

    /// Greedy (deterministic) completion of a chat, rendered with the model's own template.
    fn generate(
        &self,
        turns: &[ChatTurn],
        max_tokens: usize,
        timeout: Duration,
    ) -> Result<Generation, LlmError>;
}
