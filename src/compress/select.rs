//! `select`: learned sentence selection. The local model (the GGUF base with a LoRA adapter
//! trained by `condenser-train`) reads the question, then the text one sentence per line, and
//! scores every sentence in the same prefill pass: the keep − drop logit difference at the
//! newline that ends it (`select_prompt` owns the layout, shared with training). The model's
//! ranking is blended with `extractive`'s (`blend`, rank-normalised: the adapter alone ranks
//! below BM25 but sees what BM25 misses, and the blend beats both — README). The best
//! sentences that fit the budget are kept in their original order, exactly as `extractive`
//! keeps them (same splitter, same packing, same rendering), so the policy's guarantees hold:
//! the question is never given to it, code fences stay whole, the output is deterministic.
//! Cost: one prefill of the text with logits at the markers only; nothing is generated.

use std::sync::Arc;
use std::time::Duration;

use super::extractive::{analyse, render, select, Extractive};
use super::memo::Memo;
use super::registry::{ModelHandle, ModelParts};
use super::select_prompt::{windows, SelectVocab, WINDOW_TOKENS};
use super::truncate::Truncate;
use super::{CompressError, CompressInput, Compressor};
use crate::llm::{ClassifyWindow, LocalModel, Vocabulary};

/// Clones share the model, the tokenizer and the memo of scorings: a clone with another blend
/// costs no second prefill for a text already scored.
#[derive(Clone)]
pub struct Select {
    model: Arc<LocalModel>,
    vocab: Arc<Vocabulary>,
    ids: SelectVocab,
    /// Tokens per prefill window (`select_prompt::WINDOW_TOKENS`, as in training).
    window: usize,
    pub timeout: Duration,
    /// Recent scorings: the same text compressed to another budget costs no second prefill.
    memo: Arc<Memo<Vec<f32>>>,
    /// Weight of `extractive`'s ranking blended with the model's (0: the model alone).
    blend: f64,
}

/// The blend chosen on the training file's validation split (never on dev data); see the
/// README's `select` section for the measurements.
pub const DEFAULT_BLEND: f64 = 0.7;

/// Scorings kept; each is 4 bytes per sentence.
const MEMO_ENTRIES: usize = 8;

/// The registry's builder (`[compressors.select]`, with its optional `blend`): the tokenizer is
/// the model's own, and windows never exceed the configured context.
pub fn build(parts: &ModelParts<'_>) -> Result<Arc<dyn Compressor>, String> {
    let settings = parts.settings;
    let model = match &parts.model {
        ModelHandle::Local(model) => model.clone(),
        ModelHandle::Remote(_) => {
            return Err(
                "`select` runs in-process only: it reads the model's tokenizer and \
                 logits at sentence markers, which the completions protocol does not carry"
                    .into(),
            )
        }
    };
    let vocab = Vocabulary::load(&settings.model).map_err(|e| e.to_string())?;
    let window = WINDOW_TOKENS.min(settings.context as usize);
    let select = Select::new(model, vocab, window, parts.deadline())?
        .with_blend(settings.blend.unwrap_or(DEFAULT_BLEND));
    Ok(Arc::new(select))
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
            vocab: Arc::new(vocab),
            ids,
            window,
            timeout,
            memo: Arc::new(Memo::new(MEMO_ENTRIES)),
            blend: DEFAULT_BLEND,
        })
    }

    /// Remembers the last `entries` scorings (default 8); an offline eval keeps them all.
    pub fn with_memo_capacity(mut self, entries: usize) -> Self {
        self.memo = Arc::new(Memo::new(entries));
        self
    }

    /// Blends `extractive`'s ranking in with weight `blend` (0–1).
    pub fn with_blend(mut self, blend: f64) -> Self {
        self.blend = blend.clamp(0.0, 1.0);
        self
    }

    /// The model's keep score of each sentence of `sentences`, in order.
    pub fn scores(&self, query: &str, sentences: &[&str]) -> Result<Vec<f32>, CompressError> {
        let mut key = vec![query];
        key.extend_from_slice(sentences);
        let scores = self
            .memo
            .get_or_try(Memo::<()>::key(&key), || self.score(query, sentences))?;
        Ok(scores.as_ref().clone())
    }

    fn score(&self, query: &str, sentences: &[&str]) -> Result<Vec<f32>, CompressError> {
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
        let model: Vec<f64> = self
            .scores(input.query, &texts)?
            .into_iter()
            .map(f64::from)
            .collect();
        let scores = if self.blend > 0.0 {
            let lexical = Extractive::default().score(&sentences, input.query);
            let (model, lexical) = (ranks(&model), ranks(&lexical));
            model
                .iter()
                .zip(&lexical)
                .map(|(m, l)| (1.0 - self.blend) * m + self.blend * l)
                .collect()
        } else {
            model
        };
        let kept = select(&sentences, &scores, input.target_tokens);
        if kept.is_empty() {
            return Truncate.compress(input);
        }
        Ok(render(text, &sentences, &kept))
    }
}

/// Each score's rank as a fraction in [0, 1] (1 = best): puts two scales on one footing.
fn ranks(scores: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)));
    let top = scores.len().saturating_sub(1).max(1) as f64;
    let mut out = vec![0.0; scores.len()];
    for (rank, i) in order.into_iter().enumerate() {
        out[i] = rank as f64 / top;
    }
    out
}
