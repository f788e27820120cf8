//! `prune`: query-aware token pruning with a small model, in-process or on an inference server
//! (`llm::ModelBackend`; the Selective-Context / LLMLingua family). One prefill pass of the
//! text, conditioned on the user's question, gives every token's self-information; words
//! carrying the least information are dropped until the budget is met.
//! Numbers, capitalised names, code identifiers and words of the question are dropped last.
//! Prefill speed, no generation — but on 2 CPU threads ~275 tokens/s, so it suits background
//! compression or a GPU rather than an inline deadline.
//!
//! The scoring pass is the whole cost and does not depend on the target ratio, so the last few
//! scorings are memoised (`memo.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::memo::Memo;
use super::registry::ModelParts;
use super::{CompressError, CompressInput, Compressor};
use crate::llm::{ModelBackend, TokenSurprisal};
use crate::text::terms;

/// Scorings kept; each is a few bytes per token of text.
const MEMO_ENTRIES: usize = 8;

type Scoring = Arc<Vec<TokenSurprisal>>;

pub struct Prune {
    model: Arc<dyn ModelBackend>,
    /// Longest a request waits for the model (queueing included).
    pub timeout: Duration,
    memo: Memo<Vec<TokenSurprisal>>,
}

impl Prune {
    pub fn new(model: Arc<dyn ModelBackend>, timeout: Duration) -> Self {
        Self {
            model,
            timeout,
            memo: Memo::new(MEMO_ENTRIES),
        }
    }

    fn score(&self, prefix: &str, text: &str) -> Result<Scoring, CompressError> {
        self.memo.get_or_try(Memo::<()>::key(&[prefix, text]), || {
            self.model
                .surprisal(prefix, text, self.timeout)
                .map_err(|e| failed(e.to_string()))
        })
    }
}

/// The registry's builder (`[compressors.prune]`).
pub fn build(parts: &ModelParts<'_>) -> Result<Arc<dyn Compressor>, String> {
    Ok(Arc::new(Prune::new(
        parts.model.backend(),
        parts.deadline(),
    )))
}

fn failed(reason: String) -> CompressError {
    CompressError::Failed {
        compressor: "prune",
        reason,
    }
}

/// A word with its trailing whitespace, as a byte span of the text.
struct Word {
    start: usize,
    end: usize,
    bits: f32,
    protected: bool,
    tokens: usize,
}

/// Numbers, names (capitalised), code identifiers (`snake_case`, `camelCase`, `a::b`, `f()`)
/// and the question's own words carry answers: they are dropped last.
fn is_protected(word: &str, query_terms: &[String]) -> bool {
    let w = word.trim();
    let camel = w
        .as_bytes()
        .windows(2)
        .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase());
    w.chars().any(|c| c.is_ascii_digit())
        || w.chars().next().is_some_and(char::is_uppercase)
        || camel
        || w.contains('_')
        || w.contains("::")
        || w.contains("()")
        || terms(w).iter().any(|t| query_terms.contains(t))
}

impl Compressor for Prune {
    fn name(&self) -> &'static str {
        "prune"
    }

    fn query_aware(&self) -> bool {
        true
    }

    fn blocking(&self) -> bool {
        true
    }

    fn compress(&self, input: &CompressInput<'_>) -> Result<String, CompressError> {
        let text = input.text;
        let prefix = format!("Question: {}\n\nContext: ", input.query.trim());
        let scored = self.score(&prefix, text)?;
        // Align token pieces to the text; the model's detokenisation must reproduce it.
        let mut offsets = Vec::with_capacity(scored.len());
        let mut at = 0usize;
        for token in scored.iter() {
            let end = at + token.bytes.len();
            if text.as_bytes().get(at..end) != Some(token.bytes.as_slice()) {
                return Err(failed("token pieces do not reproduce the text".into()));
            }
            offsets.push((at, end, token.bits));
            at = end;
        }
        let query_terms = terms(input.query);
        let mut words: Vec<Word> = Vec::new();
        let mut start = 0;
        for (i, c) in text.char_indices() {
            let boundary =
                !c.is_whitespace() && i > start && text[..i].ends_with(char::is_whitespace);
            if boundary {
                words.push(Word {
                    start,
                    end: i,
                    bits: 0.0,
                    protected: false,
                    tokens: 0,
                });
                start = i;
            }
        }
        if start < text.len() {
            words.push(Word {
                start,
                end: text.len(),
                bits: 0.0,
                protected: false,
                tokens: 0,
            });
        }
        let mut t = 0;
        for w in &mut words {
            while t < offsets.len() && offsets[t].0 < w.end {
                if offsets[t].1 > w.start {
                    w.bits += offsets[t].2;
                }
                t += 1;
            }
            let slice = &text[w.start..w.end];
            w.protected = is_protected(slice, &query_terms);
            // Counted as it appears mid-text (one leading space), so word counts add up to
            // about the text's count instead of over-counting every whitespace token.
            w.tokens = input.tokenizer.count(&format!(" {}", slice.trim())).max(1);
        }
        let total: usize = words.iter().map(|w| w.tokens).sum();
        if total <= input.target_tokens {
            return Ok(text.to_string());
        }
        // Least informative first; protected words only after every unprotected one.
        let mut order: Vec<usize> = (0..words.len()).collect();
        order.sort_by(|&a, &b| {
            (words[a].protected, words[a].bits)
                .partial_cmp(&(words[b].protected, words[b].bits))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        let mut keep = vec![true; words.len()];
        let mut remaining = total;
        for i in order {
            if remaining <= input.target_tokens {
                break;
            }
            keep[i] = false;
            remaining -= words[i].tokens;
        }
        let mut out = String::with_capacity(text.len() / 2);
        for (w, kept) in words.iter().zip(keep) {
            let slice = &text[w.start..w.end];
            if kept {
                out.push_str(slice);
            } else if slice.contains('\n') && !out.ends_with('\n') {
                // Keep line structure when a line's last word goes.
                out.push('\n');
            }
        }
        Ok(out)
    }
}
