//! Unit tests of the candle model: LoRA math, frozen-weight gradients, the cached split.

use candle_core::{Device, Tensor, Var};

use super::*;
use crate::tiny::{self, max_diff};

/// Gradients of Σ t² (a loss that reaches every element of `t`).
fn squared_sum_grads(t: &Tensor) -> candle_core::backprop::GradStore {
    t.sqr()
        .and_then(|s| s.sum_all())
        .and_then(|s| s.backward())
        .expect("backward")
}

fn tiny_model(dir: &tempfile::TempDir) -> Model {
    let path = dir.path().join("tiny.gguf");
    tiny::write(&path, None, 1).expect("tiny gguf");
    Model::load(&path).expect("loads")
}

fn no_dropout() -> Pass {
    Pass::Train {
        dropout: 0.0,
        seed: 0,
    }
}

fn targets() -> Vec<String> {
    LINEARS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_lora_linear_computes_the_merged_weight() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut model = tiny_model(&dir);
    let vars = model.add_lora(1, &targets(), 2, 4.0, 3).expect("lora");
    tiny::randomize_lora_b(&vars);
    let linear = &model.blocks[tiny::LAYERS - 1].linears["attn_q"];
    let lora = linear.lora.as_ref().expect("adapted");
    assert!((lora.scale - 2.0).abs() < 1e-9, "scale = alpha / rank");
    let merged = (linear.weight()
        + (lora.b.as_tensor().matmul(lora.a.as_tensor()).expect("ba") * lora.scale).expect("s"))
    .expect("merged");
    let x = Tensor::randn(0f32, 1.0, (5, tiny::EMBD), &Device::Cpu).expect("x");
    let expected = x.matmul(&merged.t().expect("t")).expect("xw");
    for pass in [Pass::Infer, no_dropout()] {
        let got = linear.forward(&x, pass).expect("forward");
        let diff = max_diff(&got, &expected);
        assert!(diff < 1e-4, "{pass:?}");
    }
}

#[test]
fn gradients_reach_the_lora_factors_and_no_base_weight() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut model = tiny_model(&dir);
    let vars = model.add_lora(2, &targets(), 2, 4.0, 3).expect("lora");
    let x = model.embed(&[1, 5, 9, 3, 7]).expect("embed");
    let lower = model.blocks(&x, 0..1, Pass::Infer).expect("lower");
    let top = model
        .blocks(&lower, 1..tiny::LAYERS, no_dropout())
        .expect("top");
    let loss = model
        .head_logits(&top, &[2, 4], &[1, 2], true)
        .expect("head")
        .sum_all()
        .expect("sum");
    let grads = loss.backward().expect("backward");
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        if name.ends_with("lora_a") {
            // B is zero at the start, so A's gradient is zero; B's is not.
            continue;
        }
        let norm = g
            .sqr()
            .expect("sq")
            .sum_all()
            .expect("s")
            .to_scalar::<f32>()
            .expect("f");
        assert!(norm > 0.0, "{name}: zero gradient");
    }
    for block in &model.blocks {
        for (name, linear) in &block.linears {
            assert!(
                grads.get(linear.weight()).is_none(),
                "base weight {name} got a gradient"
            );
        }
    }
    assert!(
        grads.get(&model.embed).is_none(),
        "the embeddings got a gradient"
    );
}

#[test]
fn frozen_linear_backward_is_the_input_gradient_of_a_matmul() {
    let w = Tensor::randn(0f32, 1.0, (6, 4), &Device::Cpu).expect("w");
    let x = Var::randn(0f32, 1.0, (3, 4), &Device::Cpu).expect("x");
    let frozen = x
        .as_tensor()
        .apply_op1(FrozenLinear { weight: w.clone() })
        .expect("op");
    let plain = x.as_tensor().matmul(&w.t().expect("t")).expect("mm");
    let diff = max_diff(&frozen, &plain);
    assert!(diff < 1e-5);
    let gf = squared_sum_grads(&frozen);
    let gp = squared_sum_grads(&plain);
    let (a, b) = (
        gf.get(x.as_tensor()).expect("ga"),
        gp.get(x.as_tensor()).expect("gb"),
    );
    let diff = max_diff(a, b);
    assert!(diff < 1e-4);
}

#[test]
fn the_training_graph_computes_what_the_fused_forward_computes() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = tiny_model(&dir);
    let x = model.embed(&[4, 8, 15, 16, 23, 42]).expect("embed");
    let fused = model
        .blocks(&x, 0..tiny::LAYERS, Pass::Infer)
        .expect("fused");
    let composed = model
        .blocks(&x, 0..tiny::LAYERS, no_dropout())
        .expect("composed");
    let diff = max_diff(&fused, &composed);
    assert!(diff < 1e-3);
}
