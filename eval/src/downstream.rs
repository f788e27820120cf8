//! `condenser-eval downstream`: each example answered by the same task model and prompt, once
//! with the full context and once per compressor and target ratio with the compressed one.
//! Every answer is one JSON line in the output file, written as soon as it exists, so a killed
//! run loses at most the answers in flight and `--resume` skips every (id, compressor, ratio)
//! already there. The full-context answer is computed once and shared by every compressor.
//! `--max-cost` stops before the next request's estimated cost would pass the cap.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use condenser::compress::{CompressInput, Compressor, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::metrics::{best_em_f1, contains_answer};
use crate::record::Record;
use crate::task_model::{Price, TaskModel};

/// One answer to one example under one condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerRow {
    pub id: String,
    pub benchmark: String,
    pub domain: String,
    #[serde(default)]
    pub answer_type: Option<String>,
    /// `identity` is the full context.
    pub compressor: String,
    pub target_ratio: f64,
    /// o200k tokens of the context before and after compression.
    pub context_tokens: usize,
    pub compressed_tokens: usize,
    pub answer: String,
    pub em: f64,
    pub f1: f64,
    /// Whether a gold answer survives in the context given to the model (span answers only).
    pub answer_in_context: Option<bool>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cost_usd: f64,
    pub compress_ms: f64,
    pub answer_ms: f64,
    pub task_model: String,
}

impl AnswerRow {
    fn key(&self) -> (String, String, String) {
        condition_key(&self.id, &self.compressor, self.target_ratio)
    }
}

fn condition_key(id: &str, compressor: &str, ratio: f64) -> (String, String, String) {
    (
        id.to_string(),
        compressor.to_string(),
        format!("{ratio:.3}"),
    )
}

pub fn read_rows(path: &Path) -> anyhow::Result<Vec<AnswerRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        // A run killed mid-write leaves at most a partial last line; skip it, it is redone.
        match serde_json::from_str(&line) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!(
                "{}:{}: skipping unreadable row ({e})",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(rows)
}

pub struct Settings<'a> {
    pub compressors: Vec<(String, Arc<dyn Compressor>)>,
    pub ratios: Vec<f64>,
    pub output: &'a Path,
    pub resume: bool,
    pub max_cost: Option<f64>,
    pub price: Price,
    pub concurrency: usize,
}

struct Condition {
    record: usize,
    compressor: Option<usize>,
    ratio: f64,
}

fn system_prompt(record: &Record) -> String {
    let mut prompt = String::from(
        "Answer the question using the context. Give only the answer, in as few words as \
         possible.",
    );
    if record.benchmark == "qasper" {
        prompt.push_str(" If the context does not answer the question, reply: unanswerable.");
    }
    prompt
}

fn max_answer_tokens(record: &Record) -> usize {
    if record.benchmark == "qasper" {
        48
    } else {
        24
    }
}

pub struct Summary {
    pub answered: usize,
    pub skipped: usize,
    pub failed: usize,
    pub spent_usd: f64,
    pub stopped_by_cap: bool,
}

pub fn run(records: &[Record], model: &TaskModel, settings: &Settings) -> anyhow::Result<Summary> {
    if records.iter().any(|r| r.benchmark == "ds1000") {
        anyhow::bail!(
            "DS-1000 is scored by executing its tests, and its harness is not available here; \
             use `recall` for DS-1000"
        );
    }
    let existing = if settings.output.exists() {
        if !settings.resume {
            anyhow::bail!(
                "{} exists: pass --resume to continue it, or choose another --output",
                settings.output.display()
            );
        }
        read_rows(settings.output)?
    } else {
        Vec::new()
    };
    let done: HashSet<_> = existing.iter().map(AnswerRow::key).collect();
    let mut spent: f64 = existing.iter().map(|r| r.cost_usd).sum();
    let mut conditions = Vec::new();
    for i in 0..records.len() {
        conditions.push(Condition {
            record: i,
            compressor: None,
            ratio: 1.0,
        });
        for (c, _) in settings.compressors.iter().enumerate() {
            for &ratio in &settings.ratios {
                conditions.push(Condition {
                    record: i,
                    compressor: Some(c),
                    ratio,
                });
            }
        }
    }
    let name_of = |c: &Condition| match c.compressor {
        Some(k) => settings.compressors[k].0.as_str(),
        None => "identity",
    };
    let before = conditions.len();
    conditions
        .retain(|c| !done.contains(&condition_key(&records[c.record].id, name_of(c), c.ratio)));
    let skipped = before - conditions.len();
    eprintln!(
        "{} answers to compute, {skipped} already in {} (${spent:.4} spent)",
        conditions.len(),
        settings.output.display()
    );
    let out = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(settings.output)
            .with_context(|| format!("opening {}", settings.output.display()))?,
    );
    let bar = indicatif::ProgressBar::new(conditions.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} answers, eta {eta} {msg}",
        )?,
    );
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let ledger = Mutex::new((0usize, 0usize, spent));
    let tokenizer = Tokenizer::O200k;
    std::thread::scope(|scope| {
        for _ in 0..settings.concurrency.max(1) {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Some(condition) = conditions.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let record = &records[condition.record];
                let compressor_name = name_of(condition).to_string();
                let result = answer_one(
                    record, condition, settings, model, tokenizer, &ledger, &stop,
                );
                match result {
                    Ok(Some(row)) => {
                        let line = serde_json::to_string(&row).unwrap_or_default();
                        if let Ok(mut f) = out.lock() {
                            let _ = writeln!(f, "{line}").and_then(|()| f.flush());
                        }
                        if let Ok(mut l) = ledger.lock() {
                            l.0 += 1;
                            l.2 += row.cost_usd;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        bar.suspend(|| eprintln!("{} / {compressor_name}: {e:#}", record.id));
                        if let Ok(mut l) = ledger.lock() {
                            l.1 += 1;
                        }
                    }
                }
                bar.inc(1);
            });
        }
    });
    bar.finish();
    let (answered, failed, total) = ledger.into_inner().unwrap_or_default();
    spent = total;
    Ok(Summary {
        answered,
        skipped,
        failed,
        spent_usd: spent,
        stopped_by_cap: stop.load(Ordering::Relaxed),
    })
}

/// `Ok(None)`: not sent, the cost cap would be passed.
fn answer_one(
    record: &Record,
    condition: &Condition,
    settings: &Settings,
    model: &TaskModel,
    tokenizer: Tokenizer,
    ledger: &Mutex<(usize, usize, f64)>,
    stop: &AtomicBool,
) -> anyhow::Result<Option<AnswerRow>> {
    let context_tokens = tokenizer.count(&record.context);
    let started = Instant::now();
    let (name, context) = match condition.compressor {
        None => ("identity".to_string(), record.context.clone()),
        Some(k) => {
            let (name, compressor) = &settings.compressors[k];
            let input = CompressInput {
                text: &record.context,
                query: &record.question,
                target_tokens: ((context_tokens as f64) * condition.ratio).floor().max(1.0)
                    as usize,
                tokenizer,
            };
            (name.clone(), compressor.compress(&input)?)
        }
    };
    let compress_ms = started.elapsed().as_secs_f64() * 1000.0;
    let compressed_tokens = tokenizer.count(&context);
    let system = system_prompt(record);
    let user = format!("Context:\n{context}\n\nQuestion: {}", record.question);
    let max_tokens = max_answer_tokens(record);
    if let Some(cap) = settings.max_cost {
        let estimate = settings.price.cost(
            tokenizer.count(&system) + tokenizer.count(&user),
            max_tokens,
        );
        let spent = ledger.lock().map(|l| l.2).unwrap_or(f64::MAX);
        if spent + estimate > cap {
            stop.store(true, Ordering::Relaxed);
            return Ok(None);
        }
    }
    let started = Instant::now();
    let answer = model.answer(&system, &user, max_tokens)?;
    let answer_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (em, f1) = best_em_f1(&answer.text, &record.answers);
    let span = !matches!(record.answer_type.as_deref(), Some("boolean" | "none"))
        && !record.answers.is_empty();
    let cost_usd = if model.is_local() {
        0.0
    } else {
        settings
            .price
            .cost(answer.prompt_tokens, answer.completion_tokens)
    };
    Ok(Some(AnswerRow {
        id: record.id.clone(),
        benchmark: record.benchmark.clone(),
        domain: record.domain.clone(),
        answer_type: record.answer_type.clone(),
        compressor: name,
        target_ratio: condition.ratio,
        context_tokens,
        compressed_tokens,
        answer: answer.text,
        em,
        f1,
        answer_in_context: span
            .then(|| record.answers.iter().any(|a| contains_answer(&context, a))),
        prompt_tokens: answer.prompt_tokens,
        completion_tokens: answer.completion_tokens,
        cost_usd,
        compress_ms,
        answer_ms,
        task_model: model.name().to_string(),
    }))
}
