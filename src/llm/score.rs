//! Token self-information: one prefill pass over question + text, each position reduced to the
//! log-probability of the token that follows it.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::{LlmError, TokenSurprisal};

/// One prefill pass per window with logits at the positions that predict text tokens; each
/// position is reduced to the next token's log-probability at once (a full logits buffer for a
/// long text would be hundreds of MB).
pub(super) fn surprisal(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    prefix: &str,
    text: &str,
    deadline: Instant,
) -> Result<Vec<TokenSurprisal>, LlmError> {
    let vocab = model.vocab();
    let prefix = vocab.tokenize(prefix.as_bytes(), true, false);
    let text = vocab.tokenize(text.as_bytes(), false, false);
    let n_ctx = ctx.n_ctx() as usize;
    let window = n_ctx.saturating_sub(prefix.len() + 1);
    if window < 32 {
        return Err(LlmError::Worker(format!(
            "context of {n_ctx} tokens is too small for the prefix"
        )));
    }
    let mut out = Vec::with_capacity(text.len());
    let batch_size = 512;
    let mut batch = LlamaBatch::new(batch_size, 1);
    for chunk in text.chunks(window) {
        ctx.clear_kv_cache();
        let all: Vec<LlamaToken> = prefix.iter().chain(chunk.iter()).copied().collect();
        let first_scored = prefix.len().max(1) - 1;
        for (start, piece) in all
            .chunks(batch_size)
            .enumerate()
            .map(|(i, p)| (i * batch_size, p))
        {
            if Instant::now() >= deadline {
                return Err(LlmError::Deadline);
            }
            batch.clear();
            for (k, token) in piece.iter().enumerate() {
                let pos = start + k;
                let wants_logits = pos >= first_scored && pos + 1 < all.len();
                batch
                    .add(*token, pos as i32, &[0], wants_logits)
                    .map_err(|e| LlmError::Worker(e.to_string()))?;
            }
            ctx.decode(&mut batch)
                .map_err(|e| LlmError::Worker(e.to_string()))?;
            for (k, _) in piece.iter().enumerate() {
                let pos = start + k;
                if pos < first_scored || pos + 1 >= all.len() {
                    continue;
                }
                let logits = ctx.get_logits_ith(k as i32);
                let next = all[pos + 1];
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                let logprob = logits[next.0 as usize] - max - sum.ln();
                out.push(TokenSurprisal {
                    bytes: vocab.token_to_piece(next, false, None),
                    bits: -logprob / std::f32::consts::LN_2,
                });
            }
        }
    }
    Ok(out)
}
