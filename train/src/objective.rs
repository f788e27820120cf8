//! The training objectives behind one interface: what a training sequence is, its loss, and the
//! validation quality that picks the best checkpoint. `select` trains keep/drop scores at
//! sentence markers; `rewrite` trains the generative compressor's reply token by token.

use candle_core::Tensor;

use condenser::compress::select_prompt::SelectVocab;
use condenser::llm::Vocabulary;

use crate::data::Example;
use crate::model::Model;
use crate::{rewrite, select};

/// One training sequence: its tokens, the positions whose output is trained, one label each
/// (`select`: 1 keep / 0 drop at each sentence marker; `rewrite`: the next token's id).
pub struct Sequence {
    pub tokens: Vec<i32>,
    pub markers: Vec<usize>,
    pub labels: Vec<u32>,
}

pub enum Objective {
    Select(SelectVocab),
    Rewrite,
}

impl Objective {
    pub fn named(name: &str, vocab: &Vocabulary) -> anyhow::Result<Self> {
        match name {
            "select" => Ok(Self::Select(select::select_vocab(vocab)?)),
            "rewrite" => Ok(Self::Rewrite),
            other => anyhow::bail!("objective `{other}`: use select or rewrite"),
        }
    }

    /// What the validation quality measures, for logs.
    pub fn quality_name(&self) -> &'static str {
        match self {
            Self::Select(_) => "recall@1/3",
            Self::Rewrite => "token accuracy",
        }
    }

    /// The training sequences of `examples` (a `rewrite` example too long for `max_tokens` is
    /// left out; a `select` example is split into windows).
    pub fn sequences(
        &self,
        vocab: &Vocabulary,
        examples: &[Example],
        max_tokens: usize,
    ) -> anyhow::Result<Vec<Sequence>> {
        match self {
            Self::Select(ids) => Ok(examples
                .iter()
                .flat_map(|e| select::sequences(vocab, ids, e, max_tokens))
                .filter(|s| !s.markers.is_empty())
                .collect()),
            Self::Rewrite => {
                let mut out = Vec::new();
                for e in examples {
                    out.extend(rewrite::sequence(vocab, e, max_tokens)?);
                }
                Ok(out)
            }
        }
    }

    /// Each label's weight in the loss (`select` weighs keep labels by `positive_weight`).
    pub fn label_weight(&self, label: u32, positive_weight: f32) -> f32 {
        match self {
            Self::Select(_) if label == 1 => positive_weight,
            _ => 1.0,
        }
    }

    /// The summed loss of a sequence from the top blocks' output `x`, and its total label weight.
    pub fn loss(
        &self,
        model: &Model,
        x: &Tensor,
        seq: &Sequence,
        positive_weight: f32,
        train: bool,
    ) -> candle_core::Result<(Tensor, f32)> {
        match self {
            Self::Select(ids) => {
                let scores = select::marker_scores(model, x, &seq.markers, ids, train)?;
                select::loss(&scores, &seq.labels, positive_weight)
            }
            Self::Rewrite => rewrite::loss(model, x, seq, train),
        }
    }

    /// (hits, out of): `select` — keep sentences among the top third by score; `rewrite` —
    /// target tokens predicted exactly.
    pub fn hits(
        &self,
        model: &Model,
        x: &Tensor,
        seq: &Sequence,
    ) -> candle_core::Result<(usize, usize)> {
        match self {
            Self::Select(ids) => {
                let scores: Vec<f32> =
                    select::marker_scores(model, x, &seq.markers, ids, false)?.to_vec1()?;
                let mut order: Vec<usize> = (0..scores.len()).collect();
                order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
                let top = scores.len().div_ceil(3);
                let kept = order[..top].iter().filter(|&&i| seq.labels[i] == 1).count();
                let positives = seq.labels.iter().filter(|&&l| l == 1).count();
                Ok((kept, positives))
            }
            Self::Rewrite => rewrite::hits(model, x, seq),
        }
    }
}
