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
        #[command(flatten)]
        config: lora::TrainConfig,
        /// Run folder: config, checkpoints, cache.
        #[arg(long)]
        out: PathBuf,
        /// Continue the run in `--out` from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Writes a run's best checkpoint as a GGUF LoRA adapter and records it in the manifest.
    Export {
        #[arg(long)]
        run: PathBuf,
        /// `best` (highest validation recall) or `last`.
        #[arg(long, default_value = "best")]
        checkpoint: String,
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

/// candle allocates a fresh buffer for every tensor op; glibc returns large freed buffers to
/// the kernel and page-faults new ones in: an early run here spent 54 s of its 134 s of CPU in the
/// kernel. Keeping freed memory in the heap avoids that.
fn keep_freed_memory_in_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory_in_the_heap();
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
            mut config,
            out,
            resume,
        } => {
            config.batch = config.batch.max(1);
            config.val_every = config.val_every.max(1);
            config.patience = config.patience.max(1);
            let state = lora::train(config, &out, resume)?;
            eprintln!(
                "done at step {}: best validation {:?} at step {}",
                state.step, state.best, state.best_step
            );
        }
        Command::Export {
            run,
            checkpoint,
            out,
            manifest,
        } => {
            let checkpoint = match checkpoint.as_str() {
                "best" => export::Checkpoint::Best,
                "last" => export::Checkpoint::Last,
                other => anyhow::bail!("--checkpoint {other}: use best or last"),
            };
            let entry = export::export(&run, checkpoint, &out, Some(&manifest))?;
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
