//! The `rewrite` objective: supervised fine-tuning of the generative compressor. A training
//! sequence is the compressor's own chat prompt (`compress::rewrite::prompt` in the model's chat
//! template, as `generate` renders it) followed by the target — the example's evidence sentences
//! in order — and the end-of-reply token; the loss is cross-entropy on the target tokens only.

use candle_core::{Tensor, D};

use condenser::compress::rewrite::prompt;
use condenser::compress::Tokenizer;
use condenser::llm::Vocabulary;

use crate::data::Example;
use crate::model::Model;
use crate::objective::Sequence;

/// The budget the prompt names, as a share of the text's o200k tokens: the ratio the product
/// compresses to by default. The evidence is usually far shorter, so the adapter learns to keep
/// what the question needs within the budget, not to fill it.
pub const TRAINING_RATIO: f64 = 0.35;

/// The example as one sequence: prompt, target, end of reply. `markers` are the positions whose
/// next-token prediction is trained (the last prompt token through the last target token) and
/// `labels` the tokens they must predict. None when it does not fit `max_tokens`; an error when
/// the model has no chat template to render the prompt with.
pub fn sequence(
    vocab: &Vocabulary,
    example: &Example,
    max_tokens: usize,
) -> anyhow::Result<Option<Sequence>> {
    let text = example.text();
    let target = example.target();
    let budget = ((Tokenizer::O200k.count(&text) as f64 * TRAINING_RATIO).ceil() as usize)
        .max(Tokenizer::O200k.count(&target));
    let mut tokens = vocab.chat_tokens(&prompt(&example.question, &text, budget))?;
    let start = tokens.len();
    tokens.extend(vocab.tokenize(&target, false));
    tokens.push(vocab.end_of_reply());
    if tokens.len() > max_tokens || start == 0 {
        return Ok(None);
    }
    let markers: Vec<usize> = (start - 1..tokens.len() - 1).collect();
    let labels = tokens[start..].iter().map(|&t| t as u32).collect();
    Ok(Some(Sequence {
        tokens,
        markers,
        labels,
    }))
}

/// Full-vocabulary logits at the trained positions: `[positions, vocabulary]`.
fn logits(model: &Model, x: &Tensor, seq: &Sequence, train: bool) -> candle_core::Result<Tensor> {
    model.head_logits_all(x, &seq.markers, train)
}

/// Summed cross-entropy of the target tokens and their count (every target token weighs 1).
pub fn loss(
    model: &Model,
    x: &Tensor,
    seq: &Sequence,
    train: bool,
) -> candle_core::Result<(Tensor, f32)> {
    let logits = logits(model, x, seq, train)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let n = seq.labels.len();
    let labels = Tensor::from_vec(seq.labels.clone(), (n, 1), x.device())?;
    let picked = log_probs.gather(&labels, 1)?;
    Ok((picked.sum_all()?.neg()?, n as f32))
}

/// Target tokens the model predicts exactly (argmax, teacher-forced) and the target's length.
pub fn hits(model: &Model, x: &Tensor, seq: &Sequence) -> candle_core::Result<(usize, usize)> {
    let predicted: Vec<u32> = logits(model, x, seq, false)?.argmax(D::Minus1)?.to_vec1()?;
    let hits = predicted
        .iter()
        .zip(&seq.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok((hits, seq.labels.len()))
}
