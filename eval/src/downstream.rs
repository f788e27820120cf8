//! `condenser-eval downstream`: each example answered by the same task model and prompt, once
//! with the full context and once per compressor and target ratio with the compressed one.
//! Every answer is one JSON line in the output file, written as soon as it exists, so a killed
//! run loses at most the answers in flight and `--resume` skips every (id, compressor, ratio)
//! already there. The full-context answer is computed once and shared by every compressor.
//! Answers run in an order that lets a local model reuse its KV cache across them (`plan`).
//! `--max-cost` stops before the next request's estimated cost would pass the cap; the estimate
//! (tokens counted here, priced) is scaled by how far past estimates fell short of the usage the
//! model reported, so a tokenizer that counts fewer tokens than the provider bills cannot walk
//! the run past its cap.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use condenser::compress::{CompressInput, Compressor, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::metrics::{best_em_f1, contains_answer};
use crate::record::{document_ids, Record};
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

/// Every (example, condition) to answer, ordered so consecutive prompts share long prefixes,
/// which a local task model's KV cache then skips: examples about one document (a Qasper paper
/// with several questions) back to back, the full-context answers first, then each compressor
/// with its ratios from the largest (`truncate` keeps the head of the text, which the full
/// context and every larger truncation share). Within a document the examples keep their input
/// order.
fn plan(records: &[Record], compressors: usize, ratios: &[f64]) -> Vec<Condition> {
    let documents = document_ids(records);
    let mut ratios = ratios.to_vec();
    ratios.sort_by(|a, b| b.total_cmp(a));
    let mut stages = vec![(None, 1.0)];
    for c in 0..compressors {
        stages.extend(ratios.iter().map(|&ratio| (Some(c), ratio)));
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| documents[i]);
    let mut conditions = Vec::new();
    for document in order.chunk_by(|&a, &b| documents[a] == documents[b]) {
        for &(compressor, ratio) in &stages {
            conditions.extend(document.iter().map(|&record| Condition {
                record,
                compressor,
                ratio,
            }));
        }
    }
    conditions
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
    let spent: f64 = existing.iter().map(|r| r.cost_usd).sum();
    let mut conditions = plan(records, settings.compressors.len(), &settings.ratios);
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
    // Long runs go to a log under nohup, where indicatif draws nothing: a line per 10 answers.
    let log_progress = !std::io::stderr().is_terminal();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let ledger = Mutex::new(Ledger {
        spent,
        ..Ledger::default()
    });
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
                            l.answered += 1;
                            l.spent += row.cost_usd;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        bar.suspend(|| eprintln!("{} / {compressor_name}: {e:#}", record.id));
                        if let Ok(mut l) = ledger.lock() {
                            l.failed += 1;
                        }
                    }
                }
                bar.inc(1);
                if log_progress && bar.position().is_multiple_of(10) {
                    eprintln!(
                        "{}/{} answers after {} min, eta {} min",
                        bar.position(),
                        conditions.len(),
                        bar.elapsed().as_secs() / 60,
                        bar.eta().as_secs() / 60
                    );
                }
            });
        }
    });
    bar.finish();
    let ledger = ledger.into_inner().unwrap_or_default();
    Ok(Summary {
        answered: ledger.answered,
        skipped,
        failed: ledger.failed,
        spent_usd: ledger.spent,
        stopped_by_cap: stop.load(Ordering::Relaxed),
    })
}

#[derive(Debug, Default)]
struct Ledger {
    answered: usize,
    failed: usize,
    spent: f64,
    /// Sums over this run's answers, to calibrate the next estimate.
    estimated: f64,
    billed: f64,
}

/// `Ok(None)`: not sent, the cost cap would be passed.
fn answer_one(
    record: &Record,
    condition: &Condition,
    settings: &Settings,
    model: &TaskModel,
    tokenizer: Tokenizer,
    ledger: &Mutex<Ledger>,
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
    let estimate = settings.price.cost(
        tokenizer.count(&system) + tokenizer.count(&user),
        max_tokens,
    );
    if let Some(cap) = settings.max_cost {
        let (spent, calibration) = ledger.lock().map_or((f64::MAX, 1.0), |l| {
            let calibration = if l.estimated > 0.0 {
                (l.billed / l.estimated).max(1.0)
            } else {
                1.0
            };
            (l.spent, calibration)
        });
        if spent + estimate * calibration > cap {
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
    if let Ok(mut l) = ledger.lock() {
        l.estimated += estimate;
        l.billed += cost_usd;
    }
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

/// An answer row for tests of the modules that read runs.
#[cfg(test)]
pub fn test_row(id: &str, compressor: &str, ratio: f64, answer: &str, f1: f64) -> AnswerRow {
    AnswerRow {
        id: id.into(),
        benchmark: "hotpotqa".into(),
        domain: "nl".into(),
        answer_type: Some("span".into()),
        compressor: compressor.into(),
        target_ratio: ratio,
        context_tokens: 100,
        compressed_tokens: (100.0 * ratio) as usize,
        answer: answer.into(),
        em: f1.floor(),
        f1,
        answer_in_context: Some(f1 > 0.0),
        prompt_tokens: 0,
        completion_tokens: 0,
        cost_usd: 0.0,
        compress_ms: 0.0,
        answer_ms: 0.0,
        task_model: "m".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use condenser::compress::Truncate;
    use std::io::Read;
    use std::net::TcpListener;

    /// A minimal OpenAI-compatible server: every chat completion answers "Paris" and reports
    /// 1,000 prompt and 10 completion tokens. Returns its base URL and a request counter.
    fn fake_openai() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then the body by Content-Length.
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"choices":[{"message":{"role":"assistant","content":"Paris"}}],"usage":{"prompt_tokens":1000,"completion_tokens":10}}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, served)
    }

    fn records() -> Vec<Record> {
        (0..3)
            .map(|i| Record {
                id: format!("q{i}"),
                benchmark: "hotpotqa".into(),
                context: "Paris is the capital of France. ".repeat(40),
                question: "What is the capital of France?".into(),
                answers: vec!["Paris".into()],
                evidence: Vec::new(),
                domain: "nl".into(),
                answer_type: Some("span".into()),
            })
            .collect()
    }

    #[test]
    fn answers_are_planned_so_consecutive_prompts_share_prefixes() {
        let mut records = records();
        records[1].context = "Another document. ".repeat(40);
        let planned: Vec<(usize, Option<usize>, f64)> = plan(&records, 2, &[0.35, 0.5])
            .iter()
            .map(|c| (c.record, c.compressor, c.ratio))
            .collect();
        let mut expected = Vec::new();
        for document in [vec![0, 2], vec![1]] {
            for stage in [
                (None, 1.0),
                (Some(0), 0.5),
                (Some(0), 0.35),
                (Some(1), 0.5),
                (Some(1), 0.35),
            ] {
                expected.extend(document.iter().map(|&r| (r, stage.0, stage.1)));
            }
        }
        assert_eq!(planned, expected);
    }

    #[test]
    fn cost_cap_stops_early_and_resume_finishes_without_repeats() {
        let (url, served) = fake_openai();
        let model = TaskModel::open(&format!("{url}#gpt-test"), 1, 1024, 1).expect("model");
        let dir = tempfile::tempdir().expect("tmp");
        let output = dir.path().join("answers.jsonl");
        let compressors: Vec<(String, Arc<dyn Compressor>)> =
            vec![("truncate".into(), Arc::new(Truncate))];
        // $1 per million input tokens: each answer costs $0.001 by the reported usage, three
        // times what the prompt's own token count suggests; calibration must catch that.
        let settings = |cap: f64, resume: bool| Settings {
            compressors: compressors.clone(),
            ratios: vec![0.5],
            output: &output,
            resume,
            max_cost: Some(cap),
            price: Price {
                input: 1.0,
                output: 0.0,
            },
            concurrency: 1,
        };
        let first = run(&records(), &model, &settings(0.0025, false)).expect("runs");
        assert!(first.stopped_by_cap);
        assert_eq!(first.answered, 2, "a third answer would pass $0.0025");
        assert!(first.spent_usd <= 0.0025);
        assert!(
            run(&records(), &model, &settings(1.0, false)).is_err(),
            "an existing output needs --resume"
        );
        let second = run(&records(), &model, &settings(1.0, true)).expect("resumes");
        assert_eq!((second.skipped, second.answered), (2, 4));
        assert_eq!(served.load(Ordering::SeqCst), 6, "no answer computed twice");
        let rows = read_rows(&output).expect("rows");
        assert_eq!(rows.len(), 6);
        assert!(rows
            .iter()
            .all(|r| r.f1 == 1.0 && (r.cost_usd - 0.001).abs() < 1e-9));
    }
}
