//! Greedy chat completion: the model's own chat template, one prefill of the prompt, then
//! argmax decoding until an end-of-generation token, the token budget or the deadline. Argmax
//! rather than a sampler keeps outputs deterministic, which compression caches and provider prompt
//! caches rely on.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use super::LlmError;

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
    pub completion_tokens: usize,
    /// Whether the model ended the answer itself (false: the token budget ran out).
    pub finished: bool,
}

const BATCH: usize = 512;

pub(super) fn complete(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    turns: &[ChatTurn],
    max_tokens: usize,
    deadline: Instant,
) -> Result<Generation, LlmError> {
    let prompt = render(model, turns)?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
    let n_ctx = ctx.n_ctx() as usize;
    if tokens.len() + max_tokens > n_ctx {
        return Err(LlmError::TooLong {
            prompt: tokens.len(),
            context: n_ctx,
        });
    }
    ctx.clear_kv_cache();
    let mut batch = LlamaBatch::new(BATCH, 1);
    let last = tokens.len() - 1;
    for (start, piece) in tokens
        .chunks(BATCH)
        .enumerate()
        .map(|(i, p)| (i * BATCH, p))
    {
        if Instant::now() >= deadline {
            return Err(LlmError::Deadline);
        }
        batch.clear();
        for (k, token) in piece.iter().enumerate() {
            let pos = start + k;
            batch
                .add(*token, pos as i32, &[0], pos == last)
                .map_err(worker_error)?;
        }
        ctx.decode(&mut batch).map_err(worker_error)?;
    }
    let mut logits_index = batch.n_tokens() - 1;
    let mut out = Vec::new();
    let mut produced = 0;
    let mut finished = false;
    while produced < max_tokens {
        if Instant::now() >= deadline {
            return Err(LlmError::Deadline);
        }
        let next = argmax(ctx.get_logits_ith(logits_index));
        if vocab.is_eog(next) {
            finished = true;
            break;
        }
        out.extend(vocab.token_to_piece(next, false, None));
        produced += 1;
        batch.clear();
        batch
            .add(next, (tokens.len() + produced - 1) as i32, &[0], true)
            .map_err(worker_error)?;
        ctx.decode(&mut batch).map_err(worker_error)?;
        logits_index = 0;
    }
    Ok(Generation {
        text: String::from_utf8_lossy(&out).trim().to_string(),
        prompt_tokens: tokens.len(),
        completion_tokens: produced,
        finished,
    })
}

fn render(model: &LlamaModel, turns: &[ChatTurn]) -> Result<String, LlmError> {
    let template = model
        .chat_template(None)
        .map_err(|e| LlmError::Worker(format!("the model has no chat template: {e}")))?;
    let messages = turns
        .iter()
        .map(|t| LlamaChatMessage::new(t.role.clone(), t.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(worker_error)?;
    model
        .apply_chat_template(&template, &messages, true)
        .map_err(worker_error)
}

fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    LlamaToken(best as i32)
}

fn worker_error(e: impl std::fmt::Display) -> LlmError {
    LlmError::Worker(e.to_string())
}
