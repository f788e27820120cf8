//! Test fixture (used by the tests only): a tiny random llama-architecture GGUF. With `vocab_from`, the tokenizer
//! metadata (and vocabulary size) of a real GGUF is copied in, so llama.cpp can load it too.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

pub const EMBD: usize = 64;
pub const LAYERS: usize = 3;
pub const HEADS: usize = 4;
pub const HEADS_KV: usize = 2;
pub const FF: usize = 128;

pub fn write(path: &Path, vocab_from: Option<&Path>, seed: u64) -> anyhow::Result<usize> {
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.block_count".into(), Value::U32(LAYERS as u32)),
        ("llama.embedding_length".into(), Value::U32(EMBD as u32)),
        ("llama.feed_forward_length".into(), Value::U32(FF as u32)),
        (
            "llama.attention.head_count".into(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(HEADS_KV as u32),
        ),
        (
            "llama.rope.dimension_count".into(),
            Value::U32((EMBD / HEADS) as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(10_000.0)),
        ("llama.context_length".into(), Value::U32(2048)),
        ("general.alignment".into(), Value::U32(32)),
    ];
    let mut n_vocab = 96;
    if let Some(real) = vocab_from {
        let mut file = std::fs::File::open(real)?;
        let content = gguf_file::Content::read(&mut file)?;
        for (k, v) in content.metadata {
            if k.starts_with("tokenizer.") {
                if k == "tokenizer.ggml.tokens" {
                    n_vocab = v.to_vec()?.len();
                }
                metadata.push((k, v));
            }
        }
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut random = |shape: (usize, usize), scale: f32| -> anyhow::Result<QTensor> {
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| (rng.f32() * 2.0 - 1.0) * scale)
            .collect();
        Ok(QTensor::quantize(
            &Tensor::from_vec(data, shape, &Device::Cpu)?,
            GgmlDType::F32,
        )?)
    };
    let ones = |n: usize| -> anyhow::Result<QTensor> {
        Ok(QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?,
            GgmlDType::F32,
        )?)
    };
    let kv = EMBD / HEADS * HEADS_KV;
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), random((n_vocab, EMBD), 0.5)?),
        ("output_norm.weight".into(), ones(EMBD)?),
    ];
    for i in 0..LAYERS {
        let p = format!("blk.{i}");
        tensors.push((format!("{p}.attn_norm.weight"), ones(EMBD)?));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(EMBD)?));
        tensors.push((format!("{p}.attn_q.weight"), random((EMBD, EMBD), 0.2)?));
        tensors.push((format!("{p}.attn_k.weight"), random((kv, EMBD), 0.2)?));
        tensors.push((format!("{p}.attn_v.weight"), random((kv, EMBD), 0.2)?));
        tensors.push((
            format!("{p}.attn_output.weight"),
            random((EMBD, EMBD), 0.2)?,
        ));
        tensors.push((format!("{p}.ffn_gate.weight"), random((FF, EMBD), 0.2)?));
        tensors.push((format!("{p}.ffn_up.weight"), random((FF, EMBD), 0.2)?));
        tensors.push((format!("{p}.ffn_down.weight"), random((EMBD, FF), 0.2)?));
    }
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path)?;
    gguf_file::write(&mut file, &md, &ts)?;
    Ok(n_vocab)
}

/// Largest absolute element-wise difference of two tensors (tests compare computations with it).
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("difference")
}

/// Gives LoRA's B factors random values: they start at zero, which would make every update (and
/// A's gradient) trivially zero in a test.
pub fn randomize_lora_b(vars: &[(String, candle_core::Var)]) {
    for (name, var) in vars {
        if name.ends_with("lora_b") {
            let dims = var.dims().to_vec();
            var.set(&Tensor::randn(0f32, 0.3, dims, &Device::Cpu).expect("randn"))
                .expect("set");
        }
    }
}
