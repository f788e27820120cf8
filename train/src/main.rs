//! `condenser-train`: builds training data from the evidence in the data, trains LoRA adapters
//! on the GGUF base with candle (CPU), exports them as GGUF adapters llama.cpp loads, and merges
//! an adapter into the base. `data → lora → export → merge`; see the README.

use condenser_train::{data, export, lora};

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "condenser-train",
    about = "Trains condenser's LoRA compressors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Labelled examples (train.jsonl, val.jsonl) from HotPotQA, optionally SQuAD v2.
    Data {
        #[arg(long, default_value = "../shared/data/hotpotqa-train-5900.jsonl.gz")]
        hotpotqa: PathBuf,
        /// SQuAD v2 dev JSON (single passages), optional.
        #[arg(long)]
        squad: Option<PathBuf>,
        /// At most this many SQuAD questions.
        #[arg(long, default_value_t = 1000)]
        squad_limit: usize,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0.05)]
        val_fraction: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Trains a LoRA adapter on the top blocks of the base model.
    Lora {
        #[arg(long, default_value = "adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf")]
        base: PathBuf,
        /// The folder `data` wrote.
        #[arg(long)]
        data: PathBuf,
        /// Run folder: config, checkpoints, cache.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "select")]
        objective: String,
        #[arg(long, default_value_t = 8)]
        rank: usize,
        #[arg(long, default_value_t = 16.0)]
        alpha: f64,
        /// LoRA on this many top blocks; the blocks below are frozen and cached.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down"
        )]
        targets: Vec<String>,
        #[arg(long, default_value_t = 0.05)]
        dropout: f32,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value_t = 0.01)]
        weight_decay: f64,
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Sequences per optimizer step (gradient accumulation).
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Tokens per prompt window.
        #[arg(long, default_value_t = 2048)]
        max_tokens: usize,
        /// Train on the first N training examples only (the shipped adapter: 400, what two
        /// CPU cores cache and train in about an hour).
        #[arg(long, default_value = "400")]
        limit: Option<usize>,
        #[arg(long, default_value_t = 32)]
        val_limit: usize,
        #[arg(long, default_value_t = 20)]
        val_every: usize,
        #[arg(long, default_value_t = 4)]
        patience: usize,
        /// Weight of keep labels in the loss.
        #[arg(long, default_value_t = 3.0)]
        positive_weight: f32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Continue the run in `--out` from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Writes a run's best checkpoint as a GGUF LoRA adapter and records it in the manifest.
    Export {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "adapters/manifest.toml")]
        manifest: PathBuf,
    },
    /// Base + adapter → one GGUF (`q8_0` or `f16` for the adapted weights).
    Merge {
        #[arg(long, default_value = "adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf")]
        base: PathBuf,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long, default_value_t = 1.0)]
        scale: f32,
        #[arg(long, default_value = "q8_0")]
        dtype: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data {
            hotpotqa,
            squad,
            squad_limit,
            out,
            val_fraction,
            seed,
        } => {
            let (mut all, mut dropped) = data::hotpotqa(&hotpotqa)?;
            if let Some(path) = squad {
                let (mut extra, d) = data::squad(&path)?;
                fastrand::Rng::with_seed(seed).shuffle(&mut extra);
                extra.truncate(squad_limit);
                all.extend(extra);
                dropped += d;
            }
            let (train, val) = data::split(all, val_fraction, seed);
            std::fs::create_dir_all(&out)?;
            data::write(&out.join("train.jsonl"), &train)?;
            data::write(&out.join("val.jsonl"), &val)?;
            let positives: usize = train
                .iter()
                .map(|e| e.labels.iter().filter(|&&l| l == 1).count())
                .sum();
            let sentences: usize = train.iter().map(|e| e.labels.len()).sum();
            eprintln!(
                "{} train, {} validation examples ({dropped} dropped by the filters); {positives} of {sentences} training sentences labelled keep",
                train.len(),
                val.len()
            );
        }
        Command::Lora {
            base,
            data,
            out,
            objective,
            rank,
            alpha,
            layers,
            targets,
            dropout,
            lr,
            weight_decay,
            warmup,
            epochs,
            batch,
            max_tokens,
            limit,
            val_limit,
            val_every,
            patience,
            positive_weight,
            seed,
            resume,
        } => {
            let cfg = lora::TrainConfig {
                base,
                data,
                objective,
                rank,
                alpha,
                layers,
                targets,
                dropout,
                lr,
                weight_decay,
                warmup,
                epochs,
                batch: batch.max(1),
                max_tokens,
                limit,
                val_limit,
                val_every: val_every.max(1),
                patience: patience.max(1),
                positive_weight,
                seed,
            };
            let state = lora::train(cfg, &out, resume)?;
            eprintln!(
                "done at step {}: best validation loss {:?} at step {}",
                state.step, state.best_val_loss, state.best_step
            );
        }
        Command::Export { run, out, manifest } => {
            let entry = export::export(&run, &out, Some(&manifest))?;
            eprintln!(
                "wrote {} ({}), recorded in {}",
                out.display(),
                entry.sha256,
                manifest.display()
            );
        }
        Command::Merge {
            base,
            adapter,
            scale,
            dtype,
            out,
        } => {
            let dtype = match dtype.as_str() {
                "q8_0" => candle_core::quantized::GgmlDType::Q8_0,
                "f16" => candle_core::quantized::GgmlDType::F16,
                other => anyhow::bail!("--dtype {other}: use q8_0 or f16"),
            };
            let n = export::merge(&base, &adapter, scale, &out, dtype)?;
            eprintln!("merged {n} adapted weights into {}", out.display());
        }
    }
    Ok(())
}
