//! The LoRA factors' gradients for one training sequence, two ways with the same result:
//! [`Backprop::whole_graph`] keeps every top block's activations for one backward pass;
//! [`Backprop::blockwise`] (activation checkpointing at block boundaries) keeps only each
//! block's input, then walks the blocks top-down, rebuilding one block's graph at a time and
//! back-propagating the gradient of its output through it. The second costs one more forward
//! pass of the trained blocks and holds a single block's graph instead of all of them: at
//! 1k-token windows the graph is most of the trainer's memory (README, "Training cost").
//!
//! The block inputs come from a forward pass with fused kernels and no graph ([`Pass::Replay`])
//! and the same dropout masks as the graph's ([`Pass::Train`]'s masks are seeded): the rebuilt
//! blocks see what they would have seen, up to the fused kernels' rounding.

use std::ops::Range;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::model::{Model, Pass};

/// One sequence's backward pass: the cached input of the trained `blocks`, the loss of their
/// output, and the LoRA variables whose gradients are wanted.
pub struct Backprop<'a> {
    pub model: &'a Model,
    pub input: &'a Tensor,
    pub blocks: Range<usize>,
    pub pass: Pass,
    pub loss: &'a dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    pub vars: &'a [(String, Var)],
}

/// How [`Backprop::gradients`] computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// [`Backprop::whole_graph`].
    WholeGraph,
    /// [`Backprop::blockwise`].
    Blockwise,
}

/// One sequence's loss and its gradient for each LoRA variable (in the order of `vars`;
/// `None` where the loss does not reach a variable).
pub struct SequenceGradients {
    pub loss: f32,
    pub grads: Vec<Option<Tensor>>,
    /// A store from the last backward pass, for the optimizer's `step` to be handed the sums.
    pub store: GradStore,
}

impl Backprop<'_> {
    pub fn gradients(&self, strategy: Strategy) -> candle_core::Result<SequenceGradients> {
        match strategy {
            Strategy::WholeGraph => self.whole_graph(),
            Strategy::Blockwise => self.blockwise(),
        }
    }

    /// Runs the blocks with one autograd graph and back-propagates the loss through all of
    /// them at once.
    pub fn whole_graph(&self) -> candle_core::Result<SequenceGradients> {
        let top = self
            .model
            .blocks(self.input, self.blocks.clone(), self.pass)?;
        let l = (self.loss)(&top)?;
        let store = l.backward()?;
        let mut grads = vec![None; self.vars.len()];
        self.collect(&store, &mut grads);
        Ok(SequenceGradients {
            loss: l.to_scalar()?,
            grads,
            store,
        })
    }

    /// The same gradients as [`Self::whole_graph`], holding one block's graph at a time.
    pub fn blockwise(&self) -> candle_core::Result<SequenceGradients> {
        // Forward without a graph (fused kernels, the same dropout masks): each block's input.
        let replay = match self.pass {
            Pass::Train { dropout, seed } => Pass::Replay { dropout, seed },
            other => other,
        };
        let mut inputs = Vec::with_capacity(self.blocks.len());
        let mut x = self.input.detach();
        for block in self.blocks.clone() {
            let output = self.model.blocks(&x, block..block + 1, replay)?;
            inputs.push(std::mem::replace(&mut x, output));
        }
        let top = Var::from_tensor(&x)?;
        let l = (self.loss)(top.as_tensor())?;
        let mut store = l.backward()?;
        let mut grads = vec![None; self.vars.len()];
        self.collect(&store, &mut grads);
        let mut upstream = store.get(top.as_tensor()).cloned().ok_or_else(|| {
            candle_core::Error::Msg("the loss does not reach the top output".into())
        })?;
        // Backward, top block first: rebuild the block's graph from its input and push the
        // gradient of its output through it (Σ output ⊙ upstream has exactly that gradient).
        for (block, input) in self.blocks.clone().rev().zip(inputs.into_iter().rev()) {
            let x = Var::from_tensor(&input)?;
            let output = self
                .model
                .blocks(x.as_tensor(), block..block + 1, self.pass)?;
            store = (output * &upstream)?.sum_all()?.backward()?;
            self.collect(&store, &mut grads);
            if let Some(g) = store.get(x.as_tensor()) {
                upstream = g.clone();
            }
        }
        Ok(SequenceGradients {
            loss: l.to_scalar()?,
            grads,
            store,
        })
    }

    fn collect(&self, store: &GradStore, into: &mut [Option<Tensor>]) {
        for ((_, var), slot) in self.vars.iter().zip(into.iter_mut()) {
            if let Some(g) = store.get(var.as_tensor()) {
                *slot = Some(g.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LINEARS;
    use crate::tiny;

    /// A tiny model with LoRA on its top two blocks and non-zero B factors.
    fn adapted(dir: &tempfile::TempDir) -> (Model, Vec<(String, Var)>) {
        let path = dir.path().join("tiny.gguf");
        tiny::write(&path, None, 5).expect("tiny gguf");
        let mut model = Model::load(&path).expect("loads");
        let targets: Vec<String> = LINEARS.iter().map(|s| s.to_string()).collect();
        let vars = model.add_lora(2, &targets, 2, 4.0, 3).expect("lora");
        tiny::randomize_lora_b(&vars);
        (model, vars)
    }

    fn gradients(
        model: &Model,
        vars: &[(String, Var)],
        how: Strategy,
        seed: u64,
    ) -> SequenceGradients {
        let x = model.embed(&[3, 1, 4, 1, 5, 9, 2, 6]).expect("embed");
        let lower = model
            .blocks(&x, 0..tiny::LAYERS - 2, Pass::Infer)
            .expect("lower");
        let loss = |top: &Tensor| {
            model
                .head_logits(top, &[2, 5, 7], &[1, 2, 3], true)?
                .sqr()?
                .sum_all()
        };
        Backprop {
            model,
            input: &lower,
            blocks: tiny::LAYERS - 2..tiny::LAYERS,
            pass: Pass::Train { dropout: 0.3, seed },
            loss: &loss,
            vars,
        }
        .gradients(how)
        .expect("grads")
    }

    #[test]
    fn blockwise_recomputation_gives_the_whole_graph_gradients() {
        let dir = tempfile::tempdir().expect("tmp");
        let (model, vars) = adapted(&dir);
        let whole = gradients(&model, &vars, Strategy::WholeGraph, 11);
        let blockwise = gradients(&model, &vars, Strategy::Blockwise, 11);
        assert!((whole.loss - blockwise.loss).abs() <= 1e-3 * whole.loss.abs());
        for (((name, _), a), b) in vars.iter().zip(&whole.grads).zip(&blockwise.grads) {
            let (a, b) = (
                a.as_ref().unwrap_or_else(|| panic!("{name}: no gradient")),
                b.as_ref()
                    .unwrap_or_else(|| panic!("{name}: no blockwise gradient")),
            );
            let scale = a
                .abs()
                .and_then(|t| t.max_all())
                .and_then(|t| t.to_scalar::<f32>());
            let scale = scale.expect("scale");
            assert!(scale > 0.0, "{name}: zero gradient");
            // Fused and composed kernels round differently; masks that differed would not.
            assert!(tiny::max_diff(a, b) <= 1e-3 * scale, "{name}");
        }
    }

    #[test]
    fn dropout_masks_follow_the_seed() {
        let dir = tempfile::tempdir().expect("tmp");
        let (model, vars) = adapted(&dir);
        let first = gradients(&model, &vars, Strategy::Blockwise, 11);
        let again = gradients(&model, &vars, Strategy::Blockwise, 11);
        let other = gradients(&model, &vars, Strategy::Blockwise, 12);
        assert_eq!(first.loss, again.loss, "same seed, same masks");
        assert_ne!(first.loss, other.loss, "another seed, other masks");
    }
}
