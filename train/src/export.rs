//! `condenser-train export` writes a run's best LoRA factors as the GGUF adapter llama.cpp
//! loads (`condenser::lora::write_lora`) and records it in `adapters/manifest.toml`: base
//! model and its sha256, objective, rank/alpha/targets, data and split seed, steps, final
//! validation scores. `merge` folds an adapter into the base and writes one GGUF that `model =`
//! loads without `lora`.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use condenser::lora::{write_lora, LoraPair};

use crate::lora::{TrainConfig, TrainState, ValScores, BEST, CONFIG_FILE, LAST, STATE_FILE};

/// Which of a run's checkpoints to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// The highest validation recall.
    Best,
    /// The last validation.
    Last,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub file: String,
    pub sha256: String,
    pub objective: String,
    pub base: String,
    pub base_sha256: String,
    pub rank: usize,
    pub alpha: f64,
    pub layers: usize,
    pub targets: Vec<String>,
    pub data: String,
    pub seed: u64,
    /// Steps trained in the run, and the step of the exported checkpoint.
    pub steps: usize,
    pub checkpoint_step: usize,
    pub val_loss: f64,
    /// `select`: the exported checkpoint's validation recall@⅓.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_recall_at_third: Option<f64>,
    /// `rewrite`: the share of validation target tokens it predicts exactly (teacher-forced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_token_accuracy: Option<f64>,
    #[serde(default)]
    pub eval: toml::Table,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub adapter: Vec<ManifestEntry>,
}

pub fn sha256(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

pub fn export(
    run: &Path,
    checkpoint: Checkpoint,
    out: &Path,
    manifest: Option<&Path>,
) -> anyhow::Result<ManifestEntry> {
    let cfg: TrainConfig = serde_json::from_slice(
        &std::fs::read(run.join(CONFIG_FILE))
            .with_context(|| format!("{}: not a training run", run.display()))?,
    )?;
    let state: TrainState = serde_json::from_slice(&std::fs::read(run.join(STATE_FILE))?)?;
    let (file, step, val): (&str, usize, Option<ValScores>) = match checkpoint {
        Checkpoint::Best => (BEST, state.best_step, state.best),
        Checkpoint::Last => (LAST, state.step, state.last_val),
    };
    let val = val.context("the run has no validation yet")?;
    let tensors = candle_core::safetensors::load(run.join(file), &Device::Cpu)?;
    let mut names: Vec<&String> = tensors.keys().filter(|n| n.ends_with(".lora_a")).collect();
    names.sort();
    let mut pairs = Vec::with_capacity(names.len());
    for a_name in names {
        let weight = a_name.trim_end_matches(".lora_a").to_string();
        let a = &tensors[a_name];
        let b = tensors
            .get(&format!("{weight}.lora_b"))
            .with_context(|| format!("{weight}: lora_a without lora_b"))?;
        let (rank, n_in) = a.dims2()?;
        let (n_out, _) = b.dims2()?;
        pairs.push(LoraPair {
            weight,
            n_in,
            n_out,
            rank,
            a: a.flatten_all()?.to_vec1()?,
            b: b.flatten_all()?.to_vec1()?,
        });
    }
    write_lora(out, "llama", cfg.alpha as f32, &pairs)?;
    let entry = ManifestEntry {
        file: out
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: sha256(out)?,
        objective: cfg.objective.clone(),
        base: cfg
            .base
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        base_sha256: sha256(&cfg.base)?,
        rank: cfg.rank,
        alpha: cfg.alpha,
        layers: cfg.layers,
        targets: cfg.targets.clone(),
        data: match cfg.limit {
            Some(n) => format!("{} (first {n} training examples)", cfg.data.display()),
            None => cfg.data.display().to_string(),
        },
        seed: cfg.seed,
        steps: state.step,
        checkpoint_step: step,
        val_loss: val.loss,
        val_recall_at_third: (cfg.objective == "select").then_some(val.quality),
        val_token_accuracy: (cfg.objective == "rewrite").then_some(val.quality),
        eval: toml::Table::new(),
    };
    if let Some(path) = manifest {
        let mut m: Manifest = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display()))?,
            Err(_) => Manifest::default(),
        };
        let keep_eval = m
            .adapter
            .iter()
            .find(|e| e.file == entry.file)
            .map(|e| e.eval.clone())
            .unwrap_or_default();
        m.adapter.retain(|e| e.file != entry.file);
        m.adapter.push(ManifestEntry {
            eval: keep_eval,
            ..entry.clone()
        });
        std::fs::write(path, toml::to_string_pretty(&m)?)?;
    }
    Ok(entry)
}

/// Base + adapter → one GGUF. Adapted weights are dequantized, `W + scale·B·A` added, and
/// requantized as `dtype`; every other tensor and all metadata are copied as they are.
pub fn merge(
    base: &Path,
    adapter: &Path,
    scale: f32,
    out: &Path,
    dtype: GgmlDType,
) -> anyhow::Result<usize> {
    let mut base_file =
        std::fs::File::open(base).with_context(|| format!("opening {}", base.display()))?;
    let base_content = gguf_file::Content::read(&mut base_file)
        .with_context(|| format!("{} is not a GGUF file", base.display()))?;
    let mut adapter_file =
        std::fs::File::open(adapter).with_context(|| format!("opening {}", adapter.display()))?;
    let adapter_content = gguf_file::Content::read(&mut adapter_file)
        .with_context(|| format!("{} is not a GGUF file", adapter.display()))?;
    let md = |k: &str| {
        adapter_content
            .metadata
            .get(k)
            .and_then(|v| v.to_string().ok())
            .cloned()
    };
    if md("general.type").as_deref() != Some("adapter")
        || md("adapter.type").as_deref() != Some("lora")
    {
        bail!("{} is not a GGUF LoRA adapter", adapter.display());
    }
    let alpha = adapter_content
        .metadata
        .get("adapter.lora.alpha")
        .and_then(|v| v.to_f32().ok())
        .with_context(|| format!("{}: no adapter.lora.alpha", adapter.display()))?;
    let mut names: Vec<String> = base_content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut merged = 0;
    for name in &names {
        let q = base_content.tensor(&mut base_file, name, &Device::Cpu)?;
        let (a_name, b_name) = (format!("{name}.lora_a"), format!("{name}.lora_b"));
        if !adapter_content.tensor_infos.contains_key(&a_name) {
            tensors.push((name.clone(), q));
            continue;
        }
        let a = adapter_content
            .tensor(&mut adapter_file, &a_name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        let b = adapter_content
            .tensor(&mut adapter_file, &b_name, &Device::Cpu)
            .with_context(|| format!("{}: {a_name} without {b_name}", adapter.display()))?
            .dequantize(&Device::Cpu)?;
        let w = q.dequantize(&Device::Cpu)?;
        let rank = a.dim(0)?;
        if b.dim(1)? != rank || a.dim(1)? != w.dim(1)? || b.dim(0)? != w.dim(0)? {
            bail!(
                "{}: {name} is {:?} in the base but the adapter's factors are {:?} and {:?}",
                adapter.display(),
                w.dims(),
                a.dims(),
                b.dims()
            );
        }
        let delta = (b.matmul(&a)? * (alpha as f64 / rank as f64 * scale as f64))?;
        let w: Tensor = (w + delta)?;
        tensors.push((name.clone(), QTensor::quantize(&w, dtype)?));
        merged += 1;
    }
    if merged == 0 {
        bail!(
            "{} adapts no tensor of {}",
            adapter.display(),
            base.display()
        );
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = base_content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    gguf_file::write(&mut file, &metadata, &refs)?;
    Ok(merged)
}
