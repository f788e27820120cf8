//! The `lora` command's settings: everything that defines a training run. Stored with the run's
//! checkpoints (a resumed run must match) and in the adapter manifest; the defaults are the
//! shipped `select` adapter's recipe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything that defines a run (the `lora` command's flags); stored with its checkpoints and
/// in the adapter manifest. The defaults are the shipped adapter's recipe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
pub struct TrainConfig {
    /// The GGUF base model.
    #[arg(long, default_value = "adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub base: PathBuf,
    /// The folder `data` wrote.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "select")]
    pub objective: String,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// LoRA on this many top blocks; the blocks below are frozen and cached.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down"
    )]
    pub targets: Vec<String>,
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f32,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Sequences per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per prompt window (the select compressor scores in windows of this size).
    #[arg(long, default_value_t = condenser::compress::select_prompt::WINDOW_TOKENS)]
    pub max_tokens: usize,
    /// Train on the first N training examples only (the shipped adapter: 1,000, which two CPU
    /// cores cache in about 47 minutes and train for one epoch in about 25).
    #[arg(long, default_value = "1000")]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub val_limit: usize,
    #[arg(long, default_value_t = 40)]
    pub val_every: usize,
    /// Validations without a better loss before training stops.
    #[arg(long, default_value_t = 4)]
    pub patience: usize,
    /// Weight of keep labels in the loss.
    #[arg(long, default_value_t = 3.0)]
    pub positive_weight: f32,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Keep every trained block's activations for one backward pass instead of recomputing
    /// them block by block: a little faster, about the trained-block count times the graph
    /// memory (README, "Training cost").
    #[arg(long)]
    #[serde(default)]
    pub keep_activations: bool,
}
