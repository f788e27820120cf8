//! `select`: learned sentence selection. The local model (the GGUF base with a LoRA adapter
//! trained by `condenser-train`) reads the question, then the text one sentence per line, and
//! scores every sentence in the same prefill pass: the keep − drop logit difference at the
//! newline that ends it (`select_prompt` owns the layout, shared with training). The best
//! sentences that fit the budget are kept in their original order, exactly as `extractive`
//! keeps them (same splitter, same packing, same rendering), so the policy's guarantees hold:
//! the question is never given to it, code fences stay whole, the output is deterministic.
//! Cost: one prefill of the text with logits at the markers only; nothing is generated.

use std::sync::Arc;
use std::time::Duration;

use super::extractive::{analyse, render, select};
use super::select_prompt::{windows, SelectVocab};
use super::truncate::Truncate;
use super::{CompressError, CompressInput, Compressor};
use crate::llm::{ClassifyWindow, LocalModel, Vocabulary};

pub struct Select {
    model: Arc<LocalModel>,
    vocab: Vocabulary,
    ids: SelectVocab,
    /// Tokens per prefill window (the worker's context).
    window: usize,
    pub timeout: Duration,
}

impl Select {
    /// `vocab` must be the tokenizer of `model` (load it from the same GGUF).
    pub fn new(
        model: Arc<LocalModel>,
        vocab: Vocabulary,
        window: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        let ids = SelectVocab::new(&|t: &str| vocab.tokenize(t, false))?;
        Ok(Self {
            model,
            vocab,
            ids,
            window,
            timeout,
        })
    }

    /// The model's keep score of each sentence of `sentences`, in order.
    pub fn scores(&self, query: &str, sentences: &[&str]) -> Result<Vec<f32>, CompressError> {
        let laid = windows(
            &|t: &str| self.vocab.tokenize(t, true),
            &|t: &str| self.vocab.tokenize(t, false),
            &self.ids,
            query,
            sentences,
            self.window,
        );
        let laid = laid
            .into_iter()
            .map(|w| ClassifyWindow {
                tokens: w.tokens,
                markers: w.markers,
            })
            .collect();
        let scores = self
            .model
            .keep_scores(laid, (self.ids.keep, self.ids.drop), self.timeout)
            .map_err(|e| failed(e.to_string()))?;
        if scores.len() != sentences.len() {
            return Err(failed(format!(
                "{} scores for {} sentences",
                scores.len(),
                sentences.len()
            )));
        }
        Ok(scores)
    }
}

fn failed(reason: String) -> CompressError {
    CompressError::Failed {
        compressor: "select",
        reason,
    }
}

impl Compressor for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn query_aware(&self) -> bool {
        true
    }

    fn blocking(&self) -> bool {
        true
    }

    fn compress(&self, input: &CompressInput<'_>) -> Result<String, CompressError> {
        let text = input.text;
        let sentences = analyse(text, input);
        let total: usize = sentences.iter().map(|s| s.tokens).sum();
        if total <= input.target_tokens {
            return Ok(text.to_string());
        }
        let texts: Vec<&str> = sentences.iter().map(|s| &text[s.span.clone()]).collect();
        let scores: Vec<f64> = self
            .scores(input.query, &texts)?
            .into_iter()
            .map(f64::from)
            .collect();
        let kept = select(&sentences, &scores, input.target_tokens);
        if kept.is_empty() {
            return Truncate.compress(input);
        }
        Ok(render(text, &sentences, &kept))
    }
}
