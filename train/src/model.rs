//! A llama-architecture decoder read from a GGUF file into candle, for training LoRA adapters
//! on top of it. Every base weight is dequantized to f32 and frozen: frozen linears go through
//! [`FrozenLinear`], whose backward pass returns the input's gradient only, so no gradient is
//! ever computed for a base weight (a plain `matmul` would compute one and throw it away).
//!
//! Training is split by depth: the lower, LoRA-free layers run once per example without a graph
//! (fused kernels), and only the top layers, which carry the adapters, run with autograd
//! (composed ops: candle's fused rope / rms_norm / softmax have no backward).
//! GGUF llama files store Q and K permuted for interleaved rope, so interleaved rope is used,
//! as llama.cpp does for this architecture.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::backend::BackendStorage;
use candle_core::quantized::gguf_file;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var};

use crate::attention::CausalSoftmax;

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub eps: f64,
    pub rope_base: f32,
    pub n_vocab: usize,
}

impl Hparams {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

/// The linear weights of one block, by their GGUF short names.
pub const LINEARS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// `x · Wᵀ` for a frozen `W` (`[out, in]`): the backward pass yields the input's gradient only.
struct FrozenLinear {
    weight: Tensor,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out_features, in_features) = self.weight.dims2()?;
        let dims = layout.shape().dims();
        let Some((&k, batch)) = dims.split_last() else {
            candle_core::bail!("frozen-linear: scalar input");
        };
        if k != in_features || !layout.is_contiguous() {
            candle_core::bail!(
                "frozen-linear: input {:?} against weight {:?}",
                dims,
                self.weight.dims()
            );
        }
        let m: usize = batch.iter().product();
        let lhs = Layout::contiguous_with_offset((m, k), layout.start_offset());
        let (weight, weight_layout) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(weight) = &*weight else {
            candle_core::bail!("frozen-linear: weight not on the CPU");
        };
        let rhs = weight_layout.transpose(0, 1)?;
        let out = storage.matmul(weight, (1, m, out_features, k), &lhs, &rhs)?;
        let mut shape = batch.to_vec();
        shape.push(out_features);
        Ok((out, Shape::from(shape)))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dims = grad.dims().to_vec();
        let out_features = self.weight.dim(0)?;
        let rows = grad.elem_count() / out_features;
        let g = grad.reshape((rows, out_features))?.matmul(&self.weight)?;
        let mut shape = dims;
        if let Some(last) = shape.last_mut() {
            *last = self.weight.dim(1)?;
        }
        Ok(Some(g.reshape(shape)?))
    }
}

/// How blocks run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pass {
    /// Fused kernels, no autograd graph, no dropout: caching the lower blocks, validation.
    Infer,
    /// Composed ops that autograd differentiates, with dropout on the LoRA inputs. The masks are
    /// drawn from `seed` (mixed with the block and the linear), so running a block twice with
    /// the same seed applies the same masks: block-wise recomputation relies on it.
    Train { dropout: f32, seed: u64 },
    /// A training pass's forward without its graph: fused kernels and the same dropout masks
    /// as `Train` with this seed, for the block inputs that recomputation starts from.
    Replay { dropout: f32, seed: u64 },
}

impl Pass {
    /// The pass of one linear of one block: its own dropout stream.
    fn for_linear(self, block: usize, linear: usize) -> Self {
        let stream = |seed| mix(mix(seed, block as u64), linear as u64);
        match self {
            Self::Train { dropout, seed } => Self::Train {
                dropout,
                seed: stream(seed),
            },
            Self::Replay { dropout, seed } => Self::Replay {
                dropout,
                seed: stream(seed),
            },
            Self::Infer => Self::Infer,
        }
    }

    /// Whether the pass builds an autograd graph (composed ops only).
    fn builds_graph(self) -> bool {
        matches!(self, Self::Train { .. })
    }

    /// The dropout rate and mask seed, where dropout applies.
    fn dropout(self) -> Option<(f32, u64)> {
        match self {
            Self::Train { dropout, seed } | Self::Replay { dropout, seed } if dropout > 0.0 => {
                Some((dropout, seed))
            }
            _ => None,
        }
    }
}

/// SplitMix64 of `a` combined with `b`: independent seeds from (seed, index) pairs.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Inverted dropout with a mask drawn from `seed`: each element kept with probability 1 − p
/// and scaled by 1 / (1 − p).
fn seeded_dropout(x: &Tensor, p: f32, seed: u64) -> candle_core::Result<Tensor> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.f32() >= p { keep } else { 0.0 })
        .collect();
    x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
}

/// A low-rank update `scale · B · A` of one base weight; `A` is `[rank, in]`, `B` `[out, rank]`.
pub struct Lora {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

pub struct Linear {
    weight: Tensor,
    pub lora: Option<Lora>,
}

impl Linear {
    fn forward(&self, x: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let base = if pass.builds_graph() {
            x.contiguous()?.apply_op1(FrozenLinear {
                weight: self.weight.clone(),
            })?
        } else {
            x.broadcast_matmul(&self.weight.t()?)?
        };
        let Some(lora) = &self.lora else {
            return Ok(base);
        };
        let input = match pass.dropout() {
            Some((p, seed)) => seeded_dropout(x, p, seed)?,
            None => x.clone(),
        };
        let (a, b) = if pass.builds_graph() {
            (lora.a.as_tensor().clone(), lora.b.as_tensor().clone())
        } else {
            // Detached: a pass without a graph must not record one through the variables.
            (lora.a.as_tensor().detach(), lora.b.as_tensor().detach())
        };
        let low = input.broadcast_matmul(&a.t()?)?;
        let update = low.broadcast_matmul(&b.t()?)?;
        base + (update * lora.scale)?
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

pub struct Block {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    pub linears: HashMap<&'static str, Linear>,
}

pub struct Model {
    pub hp: Hparams,
    pub embed: Tensor,
    pub norm: Tensor,
    pub blocks: Vec<Block>,
    cos: Tensor,
    sin: Tensor,
}

fn md_u32(content: &gguf_file::Content, key: &str) -> anyhow::Result<usize> {
    Ok(content
        .metadata
        .get(key)
        .with_context(|| format!("GGUF metadata lacks {key}"))?
        .to_u32()? as usize)
}

fn md_f32(content: &gguf_file::Content, key: &str) -> Option<f32> {
    content.metadata.get(key).and_then(|v| v.to_f32().ok())
}

const MAX_POSITIONS: usize = 8192;

impl Model {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{} is not a GGUF file", path.display()))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            bail!(
                "{}: architecture `{arch}`; condenser-train supports llama",
                path.display()
            );
        }
        let n_head = md_u32(&content, "llama.attention.head_count")?;
        let embed_q = content.tensor(&mut file, "token_embd.weight", &Device::Cpu)?;
        let hp = Hparams {
            n_layer: md_u32(&content, "llama.block_count")?,
            n_embd: md_u32(&content, "llama.embedding_length")?,
            n_head,
            n_head_kv: md_u32(&content, "llama.attention.head_count_kv").unwrap_or(n_head),
            n_ff: md_u32(&content, "llama.feed_forward_length")?,
            eps: md_f32(&content, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64,
            rope_base: md_f32(&content, "llama.rope.freq_base").unwrap_or(10_000.0),
            n_vocab: embed_q.shape().dims()[0],
        };
        if content.tensor_infos.contains_key("output.weight") {
            bail!("{}: an untied output head is not supported", path.display());
        }
        let embed = embed_q.dequantize(&Device::Cpu)?;
        let mut tensor = |name: &str| -> anyhow::Result<Tensor> {
            Ok(content
                .tensor(&mut file, name, &Device::Cpu)
                .with_context(|| format!("{}: tensor {name}", path.display()))?
                .dequantize(&Device::Cpu)?)
        };
        let norm = tensor("output_norm.weight")?;
        let mut blocks = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let mut linears = HashMap::new();
            for name in LINEARS {
                let weight = tensor(&format!("blk.{i}.{name}.weight"))?;
                linears.insert(name, Linear { weight, lora: None });
            }
            blocks.push(Block {
                attn_norm: tensor(&format!("blk.{i}.attn_norm.weight"))?,
                ffn_norm: tensor(&format!("blk.{i}.ffn_norm.weight"))?,
                linears,
            });
        }
        let (cos, sin) = rope_tables(hp.head_dim(), hp.rope_base)?;
        Ok(Self {
            hp,
            embed,
            norm,
            blocks,
            cos,
            sin,
        })
    }

    /// Adds rank-`rank` LoRA factors to `targets` of the top `layers` blocks: `A` small random,
    /// `B` zero, so training starts from the base model exactly. Returns the new variables.
    pub fn add_lora(
        &mut self,
        layers: usize,
        targets: &[String],
        rank: usize,
        alpha: f64,
        seed: u64,
    ) -> anyhow::Result<Vec<(String, Var)>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut vars = Vec::new();
        let first = self.hp.n_layer.saturating_sub(layers);
        for (i, block) in self.blocks.iter_mut().enumerate().skip(first) {
            for target in targets {
                let linear = block.linears.get_mut(target.as_str()).with_context(|| {
                    format!("unknown LoRA target `{target}` (one of {LINEARS:?})")
                })?;
                let (n_out, n_in) = linear.weight.dims2()?;
                let bound = (1.0 / n_in as f64).sqrt();
                let init: Vec<f32> = (0..rank * n_in)
                    .map(|_| ((rng.f64() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(init, (rank, n_in), &Device::Cpu)?)?;
                let b = Var::zeros((n_out, rank), DType::F32, &Device::Cpu)?;
                let name = format!("blk.{i}.{target}.weight");
                vars.push((format!("{name}.lora_a"), a.clone()));
                vars.push((format!("{name}.lora_b"), b.clone()));
                linear.lora = Some(Lora {
                    a,
                    b,
                    scale: alpha / rank as f64,
                });
            }
        }
        Ok(vars)
    }

    pub fn embed(&self, tokens: &[i32]) -> anyhow::Result<Tensor> {
        let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?;
        Ok(self.embed.index_select(&ids, 0)?)
    }

    /// Frees the weights of blocks `0..split` once their output is cached: training and
    /// validation read the cache and run only the blocks above, so the frozen lower weights
    /// (most of the f32 model) need not stay resident. Running a released block is an error.
    pub fn release_blocks_below(&mut self, split: usize) {
        for block in self.blocks.iter_mut().take(split) {
            block.linears.clear();
        }
    }

    /// Runs blocks `range` over hidden states `x` (`[T, d]`).
    pub fn blocks(
        &self,
        x: &Tensor,
        range: std::ops::Range<usize>,
        pass: Pass,
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (index, block) in self
            .blocks
            .iter()
            .enumerate()
            .take(range.end)
            .skip(range.start)
        {
            x = self.block(index, block, &x, pass)?;
        }
        Ok(x)
    }

    fn block(
        &self,
        index: usize,
        b: &Block,
        x: &Tensor,
        pass: Pass,
    ) -> candle_core::Result<Tensor> {
        let hp = &self.hp;
        let (seq, hd) = (x.dim(0)?, hp.head_dim());
        let norm = |x: &Tensor, w: &Tensor| {
            if pass.builds_graph() {
                candle_nn::ops::rms_norm_slow(x, w, hp.eps as f32)
            } else {
                candle_nn::ops::rms_norm(x, w, hp.eps as f32)
            }
        };
        let lin = |name: &str, x: &Tensor| match (
            b.linears.get(name),
            LINEARS.iter().position(|&l| l == name),
        ) {
            (Some(l), Some(slot)) => l.forward(x, pass.for_linear(index, slot)),
            _ => candle_core::bail!("missing {name}"),
        };
        let h = norm(x, &b.attn_norm)?;
        let heads = |t: Tensor, n: usize| t.reshape((1, seq, n, hd))?.transpose(1, 2)?.contiguous();
        let q = heads(lin("attn_q", &h)?, hp.n_head)?;
        let k = heads(lin("attn_k", &h)?, hp.n_head_kv)?;
        let v = heads(lin("attn_v", &h)?, hp.n_head_kv)?;
        let (cos, sin) = (self.cos.narrow(0, 0, seq)?, self.sin.narrow(0, 0, seq)?);
        let rope = if pass.builds_graph() {
            candle_nn::rotary_emb::rope_i_slow
        } else {
            candle_nn::rotary_emb::rope_i
        };
        let (q, k) = (rope(&q, &cos, &sin)?, rope(&k, &cos, &sin)?);
        let group = hp.n_head / hp.n_head_kv;
        let repeat = |t: Tensor| -> candle_core::Result<Tensor> {
            if group == 1 {
                return Ok(t);
            }
            t.unsqueeze(2)?
                .broadcast_as((1, hp.n_head_kv, group, seq, hd))?
                .reshape((1, hp.n_head, seq, hd))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let scale = 1.0 / (hd as f32).sqrt();
        let probs = q.matmul(&k.t()?)?.apply_op1(CausalSoftmax { scale })?;
        let att = probs
            .matmul(&v.contiguous()?)?
            .transpose(1, 2)?
            .reshape((seq, hp.n_embd))?;
        let x = (x + lin("attn_output", &att)?)?;
        let h = norm(&x, &b.ffn_norm)?;
        let gate = lin("ffn_gate", &h)?.silu()?;
        let up = lin("ffn_up", &h)?;
        let down = lin("ffn_down", &(gate * up)?)?;
        x + down
    }

    /// Final norm of the rows `positions` of `x`, projected on the LM-head rows `tokens`
    /// (the head is tied to the embeddings): `[positions, tokens]` logits.
    pub fn head_logits(
        &self,
        x: &Tensor,
        positions: &[usize],
        tokens: &[i32],
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let normed = self.final_norm(x, positions, train)?;
        let ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
        let head = self
            .embed
            .index_select(&Tensor::new(ids.as_slice(), &Device::Cpu)?, 0)?;
        normed.matmul(&head.t()?)
    }

    /// Final norm of the rows `positions` of `x`, projected on the whole (tied) LM head:
    /// `[positions, vocabulary]` logits.
    pub fn head_logits_all(
        &self,
        x: &Tensor,
        positions: &[usize],
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let normed = self.final_norm(x, positions, train)?;
        normed.matmul(&self.embed.t()?)
    }

    fn final_norm(
        &self,
        x: &Tensor,
        positions: &[usize],
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let rows: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let rows = Tensor::new(rows.as_slice(), &Device::Cpu)?;
        let picked = x.index_select(&rows, 0)?;
        if train {
            candle_nn::ops::rms_norm_slow(&picked, &self.norm, self.hp.eps as f32)
        } else {
            candle_nn::ops::rms_norm(&picked, &self.norm, self.hp.eps as f32)
        }
    }
}

fn rope_tables(head_dim: usize, base: f32) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(MAX_POSITIONS * half);
    let mut sin = Vec::with_capacity(MAX_POSITIONS * half);
    for p in 0..MAX_POSITIONS {
        for f in &inv {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (MAX_POSITIONS, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (MAX_POSITIONS, half), &Device::Cpu)?,
    ))
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
