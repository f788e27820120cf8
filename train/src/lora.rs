//! `condenser-train lora`: trains LoRA factors on the top blocks of the GGUF base for an
//! objective (`select` or `rewrite`, see `objective`). AdamW with linear warmup then cosine decay, gradient accumulation over
//! `--batch` sequences, validation every `--val-every` steps with early stopping, a checkpoint
//! at every validation and `--resume` from the last one.
//!
//! Cost model (measured, see the README): the LoRA-free lower blocks run once per sequence and
//! their output is cached on disk, so an epoch costs only the top blocks' forward and backward.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use condenser::llm::Vocabulary;

pub use crate::config::TrainConfig;
use crate::data;
use crate::model::{mix, Model, Pass};
use crate::objective::{Objective, Sequence};
use crate::recompute;

/// Progress saved at every validation.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TrainState {
    pub step: usize,
    pub total_steps: usize,
    /// The best checkpoint's validation scores (best = highest recall@1/3: the compressor ranks
    /// sentences, so ranking is what counts; the loss keeps falling on calibration alone, and
    /// rises with overconfidence while the ranking still improves).
    pub best: Option<ValScores>,
    pub best_step: usize,
    pub evals_without_gain: usize,
    pub last_val: Option<ValScores>,
    pub finished: bool,
    /// (step, mean training loss of the last steps — none before the first —, validation loss).
    pub history: Vec<(usize, Option<f64>, f64)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ValScores {
    pub loss: f64,
    /// The objective's quality (`Objective::hits`), higher is better: `select` — keep
    /// sentences kept when the top third of each example's sentences (by score) is kept;
    /// `rewrite` — target tokens predicted exactly. (Runs written before `rewrite` existed
    /// stored it as `recall_at_third`.)
    #[serde(alias = "recall_at_third")]
    pub quality: f64,
}

pub const CONFIG_FILE: &str = "config.json";
pub const STATE_FILE: &str = "state.json";
pub const LAST: &str = "last.safetensors";
pub const BEST: &str = "best.safetensors";

struct Cached {
    seq: Sequence,
    lower: PathBuf,
}

/// Runs the frozen lower blocks over each sequence once and stores their output in `dir`. An
/// entry's file name carries a key of what it was computed from (the base file's size, the
/// split, the tokens), so a run with other settings in the same folder computes its own
/// entries instead of reading stale ones, and a run over more examples reuses the entries of
/// the sequences it shares with an earlier run.
fn cache_lower(
    model: &Model,
    seqs: Vec<Sequence>,
    dir: &Path,
    tag: &str,
    base_id: u64,
) -> anyhow::Result<Vec<Cached>> {
    std::fs::create_dir_all(dir)?;
    let split = first_trained_block(model);
    let bar = progress(seqs.len() as u64, &format!("caching {tag} lower blocks"));
    let started = Instant::now();
    let mut tokens = 0usize;
    let mut total_tokens = 0usize;
    let mut out = Vec::with_capacity(seqs.len());
    for (i, seq) in seqs.into_iter().enumerate() {
        let key = seq
            .tokens
            .iter()
            .fold(mix(base_id, split as u64), |h, &t| mix(h, t as u32 as u64));
        let path = dir.join(format!("{tag}-{i}-{key:016x}.safetensors"));
        if !path.is_file() {
            let x = model.embed(&seq.tokens)?;
            let lower = model.blocks(&x, 0..split, Pass::Infer)?;
            candle_core::safetensors::save(&HashMap::from([("x".to_string(), lower)]), &path)?;
            // Only what was computed counts towards the speed (a resumed run reads the rest).
            tokens += seq.tokens.len();
        }
        total_tokens += seq.tokens.len();
        bar.set_message(format!(
            "{:.0} tok/s",
            tokens as f64 / started.elapsed().as_secs_f64().max(1e-3)
        ));
        bar.inc(1);
        if bar.is_hidden() && (i + 1).is_multiple_of(50) {
            eprintln!(
                "{tag}: {} sequences cached, {:.0} tok/s",
                i + 1,
                tokens as f64 / started.elapsed().as_secs_f64().max(1e-3)
            );
        }
        out.push(Cached { seq, lower: path });
    }
    bar.finish();
    report(
        &bar,
        format!(
            "{tag}: {} sequences, {total_tokens} tokens; {tokens} computed through the lower blocks at {:.0} tok/s, the rest cached",
            out.len(),
            tokens as f64 / started.elapsed().as_secs_f64().max(1e-3)
        ),
    );
    Ok(out)
}

/// The first of the top blocks that carry LoRA: those below it are frozen and cached.
fn first_trained_block(model: &Model) -> usize {
    let trained = model
        .blocks
        .iter()
        .rev()
        .take_while(|b| b.linears.values().any(|l| l.lora.is_some()))
        .count();
    model.hp.n_layer - trained
}

fn load_lower(c: &Cached) -> anyhow::Result<Tensor> {
    let mut t = candle_core::safetensors::load(&c.lower, &candle_core::Device::Cpu)?;
    t.remove("x").context("cache entry without x")
}

pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// The blocks that carry LoRA (those below are cached).
fn trained_blocks(model: &Model) -> std::ops::Range<usize> {
    first_trained_block(model)..model.hp.n_layer
}

fn validate(
    model: &Model,
    objective: &Objective,
    val: &[Cached],
    positive_weight: f32,
) -> anyhow::Result<ValScores> {
    let (mut sum, mut weight) = (0f64, 0f64);
    let (mut hits, mut out_of) = (0usize, 0usize);
    for c in val {
        let top = model.blocks(&load_lower(c)?, trained_blocks(model), Pass::Infer)?;
        let (l, w) = objective.loss(model, &top, &c.seq, positive_weight, false)?;
        sum += l.to_scalar::<f32>()? as f64;
        weight += w as f64;
        let (h, n) = objective.hits(model, &top, &c.seq)?;
        hits += h;
        out_of += n;
    }
    Ok(ValScores {
        loss: sum / weight.max(1e-9),
        quality: hits as f64 / out_of.max(1) as f64,
    })
}

/// Prints above the bar on a terminal, as a plain line in a log.
fn report(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Gradient accumulation: one backward pass per sequence (only one sequence's graph alive at a
/// time, which bounds memory; by default only one block's, see `recompute`), the LoRA gradients
/// summed; the loss is normalised by the batch's total label weight, so the step equals one
/// backward over the whole batch. `step` seeds the dropout masks, so a step is reproducible.
fn accumulate<'a>(
    model: &Model,
    objective: &Objective,
    cfg: &TrainConfig,
    step: usize,
    batch: impl Iterator<Item = &'a Cached> + Clone,
    vars: &[(String, Var)],
) -> anyhow::Result<(GradStore, f64)> {
    let weight: f32 = batch
        .clone()
        .flat_map(|c| c.seq.labels.iter())
        .map(|&l| objective.label_weight(l, cfg.positive_weight))
        .sum();
    let strategy = if cfg.keep_activations {
        recompute::Strategy::WholeGraph
    } else {
        recompute::Strategy::Blockwise
    };
    let mut sums: Vec<Option<Tensor>> = vec![None; vars.len()];
    let mut last: Option<GradStore> = None;
    let mut total = 0f64;
    for (k, c) in batch.enumerate() {
        let loss = |top: &Tensor| {
            let (l, _) = objective.loss(model, top, &c.seq, cfg.positive_weight, true)?;
            l / weight.max(1e-6) as f64
        };
        let g = recompute::Backprop {
            model,
            input: &load_lower(c)?,
            blocks: trained_blocks(model),
            pass: Pass::Train {
                dropout: cfg.dropout,
                seed: mix(mix(cfg.seed, step as u64), k as u64),
            },
            loss: &loss,
            vars,
        }
        .gradients(strategy)?;
        total += g.loss as f64;
        for (sum, grad) in sums.iter_mut().zip(g.grads) {
            if let Some(grad) = grad {
                *sum = Some(match sum.take() {
                    Some(s) => (s + grad)?,
                    None => grad,
                });
            }
        }
        last = Some(g.store);
    }
    let mut store = last.context("empty batch")?;
    for (sum, (_, var)) in sums.into_iter().zip(vars) {
        if let Some(sum) = sum {
            store.insert(var.as_tensor(), sum);
        }
    }
    Ok((store, total))
}

fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    if step < cfg.warmup {
        return cfg.lr * (step + 1) as f64 / cfg.warmup as f64;
    }
    let progress = (step - cfg.warmup) as f64 / (total.saturating_sub(cfg.warmup)).max(1) as f64;
    cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

pub fn save_vars(vars: &[(String, Var)], path: &Path) -> anyhow::Result<()> {
    let map: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&map, path)?;
    Ok(())
}

fn load_vars(vars: &[(String, Var)], path: &Path) -> anyhow::Result<()> {
    let saved = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
    for (name, var) in vars {
        let t = saved
            .get(name)
            .with_context(|| format!("{}: no tensor {name}", path.display()))?;
        var.set(t)?;
    }
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn train(cfg: TrainConfig, out: &Path, resume: bool) -> anyhow::Result<TrainState> {
    let vocab = Vocabulary::load(&cfg.base)?;
    let objective = Objective::named(&cfg.objective, &vocab)?;
    std::fs::create_dir_all(out)?;
    let config_path = out.join(CONFIG_FILE);
    if resume && config_path.is_file() {
        let saved: TrainConfig = serde_json::from_slice(&std::fs::read(&config_path)?)?;
        if saved != cfg {
            anyhow::bail!(
                "{} holds a run with other settings; resume with the same flags or another --out",
                config_path.display()
            );
        }
    } else {
        write_json(&config_path, &cfg)?;
    }
    let mut model = Model::load(&cfg.base)?;
    let vars = model.add_lora(cfg.layers, &cfg.targets, cfg.rank, cfg.alpha, cfg.seed)?;
    let mut train_examples = data::read(&cfg.data.join("train.jsonl"))?;
    if let Some(limit) = cfg.limit {
        train_examples.truncate(limit);
    }
    let mut val_examples = data::read(&cfg.data.join("val.jsonl"))?;
    val_examples.truncate(cfg.val_limit);
    let cache = out.join("cache");
    let base_id = std::fs::metadata(&cfg.base)?.len();
    let mut sets = Vec::with_capacity(2);
    for (examples, tag) in [(&train_examples, "train"), (&val_examples, "val")] {
        let sequences = objective.sequences(&vocab, examples, cfg.max_tokens)?;
        if sequences.is_empty() {
            anyhow::bail!(
                "no {tag} sequence for the `{}` objective: no {tag} examples, or none within \
                 --max-tokens {}",
                cfg.objective,
                cfg.max_tokens
            );
        }
        sets.push(cache_lower(&model, sequences, &cache, tag, base_id)?);
    }
    let val_set = sets.pop().context("validation set")?;
    let train_set = sets.pop().context("training set")?;
    model.release_blocks_below(first_trained_block(&model));

    let steps_per_epoch = train_set.len().div_ceil(cfg.batch.max(1));
    let mut state = TrainState {
        total_steps: steps_per_epoch * cfg.epochs,
        ..TrainState::default()
    };
    let state_path = out.join(STATE_FILE);
    if resume && state_path.is_file() {
        state = serde_json::from_slice(&std::fs::read(&state_path)?)?;
        load_vars(&vars, &out.join(LAST))?;
        eprintln!("resuming at step {} of {}", state.step, state.total_steps);
        if state.finished {
            return Ok(state);
        }
    }
    let mut opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    // The same shuffled order every run, so a resumed run sees what an uninterrupted one would.
    let mut order: Vec<usize> = Vec::with_capacity(state.total_steps * cfg.batch);
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    for _ in 0..cfg.epochs {
        let mut epoch: Vec<usize> = (0..train_set.len()).collect();
        rng.shuffle(&mut epoch);
        order.extend(epoch);
    }
    if state.history.is_empty() {
        // The untrained adapter (B = 0) is the base model: its score is the baseline.
        let val = validate(&model, &objective, &val_set, cfg.positive_weight)?;
        eprintln!(
            "step 0: val loss {:.4}, val {} {:.3}",
            val.loss,
            objective.quality_name(),
            val.quality
        );
        state.history.push((0, None, val.loss));
    }
    let bar = progress(state.total_steps as u64, "training");
    bar.set_position(state.step as u64);
    let started = Instant::now();
    let mut tokens = 0usize;
    let mut recent_loss = Vec::new();
    let mut step_times: Vec<f64> = Vec::new();
    let log_lines = !std::io::stderr().is_terminal();
    while state.step < state.total_steps {
        let lr = learning_rate(&cfg, state.step, state.total_steps);
        opt.set_learning_rate(lr);
        let batch = &order[state.step * cfg.batch..((state.step + 1) * cfg.batch).min(order.len())];
        let step_started = Instant::now();
        let (grads, mean_loss) = accumulate(
            &model,
            &objective,
            &cfg,
            state.step,
            batch.iter().map(|&i| &train_set[i]),
            &vars,
        )?;
        tokens += batch
            .iter()
            .map(|&i| train_set[i].seq.tokens.len())
            .sum::<usize>();
        recent_loss.push(mean_loss);
        opt.step(&grads)?;
        step_times.push(step_started.elapsed().as_secs_f64());
        state.step += 1;
        bar.inc(1);
        if recent_loss.len() > 20 {
            recent_loss.remove(0);
        }
        bar.set_message(format!(
            "loss {:.4} lr {:.1e} {:.0} tok/s",
            recent_loss.iter().sum::<f64>() / recent_loss.len() as f64,
            lr,
            tokens as f64 / started.elapsed().as_secs_f64().max(1e-3)
        ));
        if log_lines && state.step.is_multiple_of(10) {
            eprintln!(
                "step {}/{}: loss {:.4}, lr {lr:.1e}, {:.2} s/step, {:.0} tok/s",
                state.step,
                state.total_steps,
                recent_loss.iter().sum::<f64>() / recent_loss.len() as f64,
                step_times.iter().rev().take(10).sum::<f64>() / step_times.len().min(10) as f64,
                tokens as f64 / started.elapsed().as_secs_f64().max(1e-3)
            );
        }
        if state.step.is_multiple_of(cfg.val_every) || state.step == state.total_steps {
            let val = validate(&model, &objective, &val_set, cfg.positive_weight)?;
            let train_loss = recent_loss.iter().sum::<f64>() / recent_loss.len().max(1) as f64;
            state.history.push((state.step, Some(train_loss), val.loss));
            report(
                &bar,
                format!(
                    "step {}: train loss {train_loss:.4}, val loss {:.4}, val {} {:.3}",
                    state.step,
                    val.loss,
                    objective.quality_name(),
                    val.quality
                ),
            );
            state.last_val = Some(val);
            if state.best.is_none_or(|b| val.quality > b.quality) {
                state.best = Some(val);
                state.best_step = state.step;
                state.evals_without_gain = 0;
                save_vars(&vars, &out.join(BEST))?;
            } else {
                state.evals_without_gain += 1;
            }
            let stop = state.evals_without_gain >= cfg.patience;
            state.finished = stop || state.step == state.total_steps;
            save_vars(&vars, &out.join(LAST))?;
            write_json(&state_path, &state)?;
            if stop {
                report(
                    &bar,
                    format!("early stop: no gain in {} validations", cfg.patience),
                );
                break;
            }
        }
    }
    bar.finish();
    Ok(state)
}
