//! Token log-probabilities of a prompt: one prefill pass over prefix + text, each position
//! reduced at once to the log-probability of the token that follows it.

use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::LlmError;

/// One token of the scored text.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptToken {
    /// The token's bytes of the text (a token straddling the prefix keeps only the text's part).
    pub bytes: Vec<u8>,
    /// ln p(token | everything before it); `None` for a token with nothing before it.
    pub logprob: Option<f32>,
}

/// `prefix + text` is tokenized as one string — as an inference server given that prompt would
/// tokenize it, so a remote scoring of the same string matches this one. Texts longer than the
/// context are scored in windows, each read after the prefix's tokens again; one prefill per
/// window with logits only at the positions that predict text tokens (a full logits buffer for
/// a long text would be hundreds of MB).
pub(super) fn log_probs(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    prefix: &str,
    text: &str,
    deadline: Instant,
) -> Result<Vec<PromptToken>, LlmError> {
    let vocab = model.vocab();
    let joint = format!("{prefix}{text}");
    let tokens = vocab.tokenize(joint.as_bytes(), true, false);
    let pieces: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| vocab.token_to_piece(*t, false, None))
        .collect();
    // Tokens that end within the prefix are the prefix; the next one may straddle it.
    let mut prefix_end = 0usize;
    let mut split = 0usize;
    while split < pieces.len() && prefix_end + pieces[split].len() <= prefix.len() {
        prefix_end += pieces[split].len();
        split += 1;
    }
    let straddle = prefix.len() - prefix_end;
    let (prefix_tokens, text_tokens) = tokens.split_at(split);
    let n_ctx = ctx.n_ctx() as usize;
    let window = n_ctx.saturating_sub(prefix_tokens.len() + 1);
    if window < 32 {
        return Err(LlmError::Worker(format!(
            "context of {n_ctx} tokens is too small for the prefix"
        )));
    }
    let mut out = Vec::with_capacity(text_tokens.len());
    let batch_size = 512;
    let mut batch = LlamaBatch::new(batch_size, 1);
    for (window_index, chunk) in text_tokens.chunks(window).enumerate() {
        ctx.clear_kv_cache();
        let all: Vec<LlamaToken> = prefix_tokens.iter().chain(chunk.iter()).copied().collect();
        let first_text = prefix_tokens.len();
        let mut chunk_logprobs: Vec<Option<f32>> = vec![None; chunk.len()];
        for (start, piece) in all
            .chunks(batch_size)
            .enumerate()
            .map(|(i, p)| (i * batch_size, p))
        {
            if Instant::now() >= deadline {
                return Err(LlmError::Deadline);
            }
            batch.clear();
            // Position `pos` predicts `pos + 1`: logits wherever that is a text token.
            let predicts_text = |pos: usize| pos + 1 >= first_text && pos + 1 < all.len();
            for (k, token) in piece.iter().enumerate() {
                let pos = start + k;
                batch
                    .add(*token, pos as i32, &[0], predicts_text(pos))
                    .map_err(|e| LlmError::Worker(e.to_string()))?;
            }
            ctx.decode(&mut batch)
                .map_err(|e| LlmError::Worker(e.to_string()))?;
            for k in 0..piece.len() {
                let pos = start + k;
                if !predicts_text(pos) {
                    continue;
                }
                let logits = ctx.get_logits_ith(k as i32);
                let next = all[pos + 1];
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                chunk_logprobs[pos + 1 - first_text] =
                    Some(logits[next.0 as usize] - max - sum.ln());
            }
        }
        for (i, logprob) in chunk_logprobs.into_iter().enumerate() {
            let index = split + window_index * window + i;
            let mut bytes = pieces[index].clone();
            if index == split {
                bytes.drain(..straddle.min(bytes.len()));
            }
            out.push(PromptToken { bytes, logprob });
        }
    }
    Ok(out)
}
