//! Greedy chat completion: the model's own chat template, one prefill of the prompt, then
//! argmax decoding until an end-of-generation token, the token budget or the deadline. Argmax
//! rather than a sampler keeps outputs deterministic, which compression caches and provider prompt
//! caches rely on.
//!
//! With `reuse_prompt_prefix`, the worker's KV cache outlives a request: the tokens it holds are
//! remembered ([`CachedPrefix`]), and the next prompt only prefills what follows the longest
//! prefix it shares with them. Requests with one system prompt, or one document asked several
//! questions, skip most of their prefill (llama.cpp's server does the same with its prompt cache,
//! and warns the same way that logits are not bit-identical across batch splits).

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use super::{ChatTurn, Generation, LlmError};

const BATCH: usize = 512;

/// The tokens whose keys and values sit in a worker's KV cache, sequence 0, positions
/// `0..tokens.len()`. Whatever else touches the context must call [`CachedPrefix::forget`].
#[derive(Debug, Default)]
pub(super) struct CachedPrefix {
    tokens: Vec<LlamaToken>,
}

impl CachedPrefix {
    pub(super) fn forget(&mut self, ctx: &mut LlamaContext<'_>) {
        ctx.clear_kv_cache();
        self.tokens.clear();
    }

    /// Keeps the longest cached prefix of `prompt` (never all of it: the last prompt token is
    /// decoded again for its logits), drops the rest from the KV cache, and returns its length.
    fn keep_shared(&mut self, ctx: &mut LlamaContext<'_>, prompt: &[LlamaToken]) -> usize {
        let shared = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        let trimmed = u32::try_from(shared)
            .ok()
            .and_then(|p0| ctx.clear_kv_cache_seq(Some(0), Some(p0), None).ok())
            .unwrap_or(false);
        if !trimmed {
            self.forget(ctx);
            return 0;
        }
        self.tokens.truncate(shared);
        shared
    }
}

pub(super) fn complete(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    cached: &mut CachedPrefix,
    turns: &[ChatTurn],
    max_tokens: usize,
    deadline: Instant,
) -> Result<Generation, LlmError> {
    let result = decode_and_generate(model, ctx, cached, turns, max_tokens, deadline);
    if matches!(result, Err(LlmError::Worker(_))) {
        // A failed decode leaves the KV cache in an unknown state.
        cached.forget(ctx);
    }
    result
}

fn decode_and_generate(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    cached: &mut CachedPrefix,
    turns: &[ChatTurn],
    max_tokens: usize,
    deadline: Instant,
) -> Result<Generation, LlmError> {
    let tokens = prompt_tokens(model, turns)?;
    let vocab = model.vocab();
    let n_ctx = ctx.n_ctx() as usize;
    if tokens.len() + max_tokens > n_ctx {
        return Err(LlmError::TooLong {
            prompt: tokens.len(),
            context: n_ctx,
        });
    }
    let reused = cached.keep_shared(ctx, &tokens);
    let mut batch = LlamaBatch::new(BATCH, 1);
    let last = tokens.len() - 1;
    for (start, piece) in tokens[reused..]
        .chunks(BATCH)
        .enumerate()
        .map(|(i, p)| (reused + i * BATCH, p))
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
        cached.tokens.extend_from_slice(piece);
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
        cached.tokens.push(next);
        logits_index = 0;
    }
    Ok(Generation {
        text: String::from_utf8_lossy(&out).trim().to_string(),
        prompt_tokens: tokens.len(),
        reused_prompt_tokens: reused,
        completion_tokens: produced,
        finished,
    })
}

/// The tokens of `turns` in the model's own chat template, special tokens parsed, the assistant
/// turn opened: what `complete` decodes, and what `condenser-train` puts before a reply.
pub(super) fn prompt_tokens(
    model: &LlamaModel,
    turns: &[ChatTurn],
) -> Result<Vec<LlamaToken>, LlmError> {
    let prompt = render(model, turns)?;
    Ok(model.vocab().tokenize(prompt.as_bytes(), true, true))
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
