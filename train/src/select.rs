//! The `select` objective: sequences laid out by `compress::select_prompt`, the lower blocks'
//! output cached per sequence, and the loss — weighted logistic loss on the keep − drop logit
//! difference at each sentence marker.

use candle_core::{Device, Tensor};

use condenser::compress::select_prompt::{windows, SelectVocab};
use condenser::llm::Vocabulary;

use crate::data::Example;
use crate::model::Model;
use crate::objective::Sequence;

pub fn select_vocab(vocab: &Vocabulary) -> anyhow::Result<SelectVocab> {
    SelectVocab::new(&|t: &str| vocab.tokenize(t, false)).map_err(anyhow::Error::msg)
}

/// An example's prompt windows, each with its sentences' labels.
pub fn sequences(
    vocab: &Vocabulary,
    ids: &SelectVocab,
    example: &Example,
    max_tokens: usize,
) -> Vec<Sequence> {
    let sentences: Vec<&str> = example.sentences.iter().map(String::as_str).collect();
    let laid = windows(
        &|t: &str| vocab.tokenize(t, true),
        &|t: &str| vocab.tokenize(t, false),
        ids,
        &example.question,
        &sentences,
        max_tokens,
    );
    let mut labels = example.labels.iter().copied();
    laid.into_iter()
        .map(|w| Sequence {
            labels: labels
                .by_ref()
                .take(w.markers.len())
                .map(u32::from)
                .collect(),
            tokens: w.tokens,
            markers: w.markers,
        })
        .collect()
}

/// Keep − drop logit per marker, from the top blocks' output `x` (`[T, d]`).
pub fn marker_scores(
    model: &Model,
    x: &Tensor,
    markers: &[usize],
    ids: &SelectVocab,
    train: bool,
) -> candle_core::Result<Tensor> {
    let logits = model.head_logits(x, markers, &[ids.keep, ids.drop], train)?;
    let keep = logits.narrow(1, 0, 1)?.squeeze(1)?;
    let drop = logits.narrow(1, 1, 1)?.squeeze(1)?;
    keep - drop
}

/// Sum over markers of the weighted logistic loss: softplus(−s) for keep, softplus(s) for drop,
/// keep labels weighted by `positive_weight` (they are the rare class, and missing one costs
/// more than keeping an extra sentence). Returns (sum, total weight).
pub fn loss(
    scores: &Tensor,
    labels: &[u32],
    positive_weight: f32,
) -> candle_core::Result<(Tensor, f32)> {
    let sign: Vec<f32> = labels
        .iter()
        .map(|&l| if l == 1 { -1.0 } else { 1.0 })
        .collect();
    let weight: Vec<f32> = labels
        .iter()
        .map(|&l| if l == 1 { positive_weight } else { 1.0 })
        .collect();
    let total: f32 = weight.iter().sum();
    let n = labels.len();
    let z = scores.mul(&Tensor::from_vec(sign, n, &Device::Cpu)?)?;
    // softplus(z) = relu(z) + ln(1 + e^{−|z|}), stable for any z.
    let softplus = (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let weighted = softplus.mul(&Tensor::from_vec(weight, n, &Device::Cpu)?)?;
    Ok((weighted.sum_all()?, total))
}
