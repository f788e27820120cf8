//! condenser-train's library: run settings (`config`), training data from the evidence in the
//! data (`data`), a llama GGUF in candle with LoRA on its top blocks (`model`, with the fused
//! causal softmax of `attention`), the objectives (`objective` over `select` and `rewrite`), the
//! training loop with checkpoints (`lora`), and GGUF export and merge (`export`). The binary in
//! `main.rs` is the command line over these.

pub mod attention;
pub mod config;
pub mod data;
pub mod export;
pub mod lora;
pub mod model;
pub mod objective;
pub mod recompute;
pub mod rewrite;
pub mod select;
#[doc(hidden)]
pub mod tiny;
