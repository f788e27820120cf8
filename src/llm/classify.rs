//! Sentence keep/drop scores for the `select` compressor: one prefill pass per window with
//! logits requested only at the marker positions, each reduced at once to the difference of
//! two LM-head logits (keep − drop). Nothing is generated, and only a handful of positions'
//! logits are materialised, so the cost is the prefill alone.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::LlmError;

/// One window of a select prompt (see `compress::select_prompt`).
#[derive(Debug, Clone)]
pub struct ClassifyWindow {
    pub tokens: Vec<i32>,
    pub markers: Vec<usize>,
}

pub(super) fn keep_scores(
    ctx: &mut LlamaContext<'_>,
    windows: &[ClassifyWindow],
    (keep, drop): (i32, i32),
    deadline: Instant,
) -> Result<Vec<f32>, LlmError> {
    let n_ctx = ctx.n_ctx() as usize;
    let batch_size = 512;
    let mut batch = LlamaBatch::new(batch_size, 1);
    let mut out = Vec::new();
    for window in windows {
        if window.tokens.len() > n_ctx {
            return Err(LlmError::TooLong {
                prompt: window.tokens.len(),
                context: n_ctx,
            });
        }
        ctx.clear_kv_cache();
        let mut is_marker = vec![false; window.tokens.len()];
        for &m in &window.markers {
            if let Some(flag) = is_marker.get_mut(m) {
                *flag = true;
            }
        }
        for (chunk, tokens) in window.tokens.chunks(batch_size).enumerate() {
            if Instant::now() >= deadline {
                return Err(LlmError::Deadline);
            }
            let start = chunk * batch_size;
            batch.clear();
            let mut wanted = Vec::new();
            for (k, token) in tokens.iter().enumerate() {
                let pos = start + k;
                batch
                    .add(LlamaToken(*token), pos as i32, &[0], is_marker[pos])
                    .map_err(|e| LlmError::Worker(e.to_string()))?;
                if is_marker[pos] {
                    wanted.push(k);
                }
            }
            ctx.decode(&mut batch)
                .map_err(|e| LlmError::Worker(e.to_string()))?;
            for k in wanted {
                let logits = ctx.get_logits_ith(k as i32);
                let at = |id: i32| logits.get(id as usize).copied().unwrap_or(0.0);
                out.push(at(keep) - at(drop));
            }
        }
    }
    Ok(out)
}
