//! Benchmark loaders: each official file format → normalised [`Record`]s.
//! - HotPotQA distractor: `Title: sentences` paragraphs; evidence = supporting sentences.
//! - Qasper v0.3: the paper as `## section` blocks; one record per question; answers from every
//!   annotator (unanswerable / yes-no / extractive spans / free form); evidence paragraphs.
//! - NaturalQuestions-open oracle: the gold passages as `Title: text` blocks.
//! - DS-1000 (`ds1000.jsonl`: `prompt`, `reference_code`, `metadata`, `code_context`): the prompt is
//!   the context, the reference solution the answer.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

use crate::hotpotqa;
use crate::record::{open_maybe_gz, Record};

pub const BENCHMARKS: &[&str] = &["hotpotqa", "qasper", "nq", "ds1000"];

pub fn load(benchmark: &str, path: &Path) -> anyhow::Result<Vec<Record>> {
    match benchmark {
        "hotpotqa" => Ok(hotpotqa::load(path)?.iter().map(from_hotpotqa).collect()),
        "qasper" => qasper(open_maybe_gz(path)?),
        "nq" => nq(open_maybe_gz(path)?),
        "ds1000" => ds1000(open_maybe_gz(path)?),
        other => bail!(
            "unknown benchmark `{other}` (one of {})",
            BENCHMARKS.join(", ")
        ),
    }
}

fn from_hotpotqa(e: &hotpotqa::Example) -> Record {
    Record {
        id: e.id.clone(),
        benchmark: "hotpotqa".into(),
        context: e.render_context(),
        question: e.question.clone(),
        answers: vec![e.answer.clone()],
        evidence: e.supporting_sentences(),
        domain: "nl".into(),
        answer_type: Some(if e.is_yes_no() { "boolean" } else { "span" }.into()),
    }
}

#[derive(Deserialize)]
struct QasperPaper {
    title: String,
    #[serde(rename = "abstract")]
    summary: String,
    full_text: Vec<QasperSection>,
    qas: Vec<QasperQuestion>,
}

#[derive(Deserialize)]
struct QasperSection {
    section_name: Option<String>,
    paragraphs: Vec<String>,
}

#[derive(Deserialize)]
struct QasperQuestion {
    question: String,
    question_id: String,
    answers: Vec<QasperAnnotation>,
}

#[derive(Deserialize)]
struct QasperAnnotation {
    answer: QasperAnswer,
}

#[derive(Deserialize)]
struct QasperAnswer {
    unanswerable: bool,
    extractive_spans: Vec<String>,
    yes_no: Option<bool>,
    free_form_answer: String,
    evidence: Vec<String>,
}

impl QasperAnswer {
    /// `(answer text, answer type)` following Qasper's own precedence.
    fn text_and_type(&self) -> (Option<String>, &'static str) {
        if self.unanswerable {
            (None, "none")
        } else if let Some(yes) = self.yes_no {
            (Some(if yes { "yes" } else { "no" }.into()), "boolean")
        } else if !self.extractive_spans.is_empty() {
            (Some(self.extractive_spans.join(", ")), "extractive")
        } else {
            (Some(self.free_form_answer.clone()), "abstractive")
        }
    }
}

fn qasper(reader: Box<dyn Read>) -> anyhow::Result<Vec<Record>> {
    let papers: std::collections::BTreeMap<String, QasperPaper> =
        serde_json::from_reader(BufReader::new(reader)).context("parsing Qasper JSON")?;
    let mut out = Vec::new();
    for (paper_id, paper) in papers {
        let mut context = format!("# {}\n\n{}", paper.title, paper.summary.trim());
        for section in &paper.full_text {
            context.push_str(&format!(
                "\n\n## {}",
                section.section_name.as_deref().unwrap_or("")
            ));
            for p in section.paragraphs.iter().filter(|p| !p.trim().is_empty()) {
                context.push_str("\n\n");
                context.push_str(p.trim());
            }
        }
        for qa in paper.qas {
            let mut answers = Vec::new();
            let mut evidence = Vec::new();
            let mut first_type = None;
            for a in &qa.answers {
                let (text, kind) = a.answer.text_and_type();
                first_type.get_or_insert(kind);
                if let Some(t) = text.filter(|t| !t.trim().is_empty()) {
                    if !answers.contains(&t) {
                        answers.push(t);
                    }
                }
                for e in &a.answer.evidence {
                    if !e.starts_with("FLOAT SELECTED") && !evidence.contains(e) {
                        evidence.push(e.clone());
                    }
                }
            }
            out.push(Record {
                id: format!("{paper_id}/{}", qa.question_id),
                benchmark: "qasper".into(),
                context: context.clone(),
                question: qa.question,
                answers,
                evidence,
                domain: "nl".into(),
                answer_type: first_type.map(str::to_string),
            });
        }
    }
    Ok(out)
}

fn nq(reader: Box<dyn Read>) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).with_context(|| format!("NQ line {}", n + 1))?;
        let ctxs = v["ctxs"].as_array().cloned().unwrap_or_default();
        let gold: Vec<&Value> = ctxs
            .iter()
            .filter(|c| c["isgold"].as_bool() == Some(true))
            .collect();
        let passages = if gold.is_empty() {
            ctxs.iter().collect()
        } else {
            gold
        };
        let context = passages
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["title"].as_str().unwrap_or(""),
                    c["text"].as_str().unwrap_or("").trim()
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        out.push(Record {
            id: format!("nq-{n}"),
            benchmark: "nq".into(),
            context,
            question: v["question"].as_str().unwrap_or("").to_string(),
            answers: v["answers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            evidence: Vec::new(),
            domain: "nl".into(),
            answer_type: Some("span".into()),
        });
    }
    Ok(out)
}

fn ds1000(reader: Box<dyn Read>) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("DS-1000 line {}", n + 1))?;
        let prompt = v["prompt"]
            .as_str()
            .with_context(|| format!("DS-1000 line {}: no prompt", n + 1))?;
        let reference = v["reference_code"]
            .as_str()
            .with_context(|| format!("DS-1000 line {}: no reference_code", n + 1))?;
        let problem = v["metadata"]["problem_id"]
            .as_u64()
            .map_or_else(|| n.to_string(), |p| p.to_string());
        let library = v["metadata"]["library"].as_str().unwrap_or("unknown");
        out.push(Record {
            id: format!("ds1000-{problem}"),
            benchmark: "ds1000".into(),
            context: prompt.to_string(),
            question: format!("Complete the {library} solution so that it passes the tests."),
            answers: vec![reference.to_string()],
            evidence: Vec::new(),
            domain: "mixed".into(),
            answer_type: Some("code".into()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn ds1000_official_format_loads() {
        let records = load("ds1000", &fixture("ds1000-sample.jsonl")).expect("load");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "ds1000-0");
        assert_eq!(records[0].domain, "mixed");
        assert!(records[0].context.contains("BEGIN SOLUTION"));
        assert!(records[1].answers[0].contains("np.argmax"));
        assert!(records[1].question.contains("Numpy"));
    }

    #[test]
    fn qasper_answers_types_and_evidence() {
        let records = load("qasper", &fixture("qasper-sample.json")).expect("load");
        assert_eq!(records.len(), 3);
        let by_id = |id: &str| records.iter().find(|r| r.id.ends_with(id)).expect("record");
        let extractive = by_id("q1");
        assert_eq!(extractive.answers, vec!["BERT, RoBERTa", "BERT"]);
        assert_eq!(extractive.answer_type.as_deref(), Some("extractive"));
        assert_eq!(
            extractive.evidence,
            vec!["We fine-tune BERT and RoBERTa on the corpus."]
        );
        assert!(extractive.context.starts_with("# A Sample Paper"));
        assert!(extractive.context.contains("## Method"));
        assert_eq!(by_id("q2").answers, vec!["yes"]);
        assert!(by_id("q3").answers.is_empty(), "unanswerable");
        assert_eq!(by_id("q3").answer_type.as_deref(), Some("none"));
    }

    #[test]
    fn nq_uses_gold_passages() {
        let records = load("nq", &fixture("nq-sample.jsonl")).expect("load");
        assert_eq!(records[0].context, "Gold Title: the gold text");
        assert_eq!(records[0].answers, vec!["Röntgen"]);
    }
}
