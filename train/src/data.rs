//! `condenser-train data`: training examples from the evidence in the data. A HotPotQA context
//! is rendered as condenser-eval renders it (`Title: sentences` paragraphs), split with the
//! compressor's own sentence splitter, and each sentence labelled keep when it overlaps a
//! supporting fact (and the title of a paragraph with one). SQuAD v2 adds single-passage
//! questions: the sentence holding the answer is kept. Examples whose kept sentences lose the
//! gold answer, that keep nothing, or that keep everything are dropped. The split is seeded;
//! every example keeps its source id.

use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use condenser::compress::select_prompt::sentence_spans;

/// One training example; both objectives read it (`rewrite`'s target is the kept sentences).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub id: String,
    pub source: String,
    pub question: String,
    pub answer: String,
    pub sentences: Vec<String>,
    pub labels: Vec<u8>,
}

impl Example {
    pub fn text(&self) -> String {
        self.sentences.concat()
    }

    /// The `rewrite` target: the kept sentences, in order.
    pub fn target(&self) -> String {
        self.sentences
            .iter()
            .zip(&self.labels)
            .filter(|(_, &l)| l == 1)
            .map(|(s, _)| s.trim())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Deserialize)]
struct HotpotRecord {
    #[serde(rename = "_id")]
    id: String,
    question: String,
    answer: String,
    supporting_facts: Vec<(String, usize)>,
    context: Vec<(String, Vec<String>)>,
}

/// Renders like condenser-eval and returns the text with the byte spans of the evidence.
fn render_hotpot(r: &HotpotRecord) -> (String, Vec<Range<usize>>) {
    let mut text = String::new();
    let mut gold = Vec::new();
    for (p, (title, sentences)) in r.context.iter().enumerate() {
        if p > 0 {
            text.push_str("\n\n");
        }
        let body = sentences.concat();
        let trimmed_start = body.len() - body.trim_start().len();
        let para_start = text.len();
        text.push_str(title);
        text.push_str(": ");
        let body_start = text.len();
        text.push_str(body.trim());
        let mut at = 0usize;
        for (i, sentence) in sentences.iter().enumerate() {
            let (s, e) = (at, at + sentence.len());
            at = e;
            if r.supporting_facts
                .iter()
                .any(|(t, k)| t == title && *k == i)
            {
                let s = (s.max(trimmed_start) - trimmed_start).min(body.trim().len());
                let e = (e.max(trimmed_start) - trimmed_start).min(body.trim().len());
                if e > s {
                    gold.push(body_start + s..body_start + e);
                }
                // The title names the paragraph's entity: keep it with its evidence.
                gold.push(para_start..body_start);
            }
        }
    }
    (text, gold)
}

fn normalise(s: &str) -> String {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn labelled(
    id: String,
    source: &str,
    question: String,
    answer: String,
    text: &str,
    gold: &[Range<usize>],
) -> Option<Example> {
    let spans = sentence_spans(text);
    let mut sentences = Vec::with_capacity(spans.len());
    let mut labels = Vec::with_capacity(spans.len());
    for span in spans {
        let keep = gold
            .iter()
            .any(|g| g.start < span.end && span.start < g.end);
        sentences.push(text[span].to_string());
        labels.push(u8::from(keep));
    }
    let kept = labels.iter().filter(|&&l| l == 1).count();
    if kept == 0 || kept == labels.len() {
        return None;
    }
    let example = Example {
        id,
        source: source.to_string(),
        question,
        answer,
        sentences,
        labels,
    };
    let yes_no = matches!(normalise(&example.answer).as_str(), "yes" | "no");
    if !yes_no && !normalise(&example.target()).contains(&normalise(&example.answer)) {
        return None;
    }
    Some(example)
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// HotPotQA (official fields, JSONL, optionally gzipped).
pub fn hotpotqa(path: &Path) -> anyhow::Result<(Vec<Example>, usize)> {
    let mut out = Vec::new();
    let mut dropped = 0;
    for (n, line) in BufReader::new(open(path)?).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: HotpotRecord = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        let (text, gold) = render_hotpot(&r);
        match labelled(r.id.clone(), "hotpotqa", r.question, r.answer, &text, &gold) {
            Some(e) => out.push(e),
            None => dropped += 1,
        }
    }
    Ok((out, dropped))
}

#[derive(Deserialize)]
struct SquadFile {
    data: Vec<SquadArticle>,
}
#[derive(Deserialize)]
struct SquadArticle {
    paragraphs: Vec<SquadParagraph>,
}
#[derive(Deserialize)]
struct SquadParagraph {
    context: String,
    qas: Vec<SquadQa>,
}
#[derive(Deserialize)]
struct SquadQa {
    id: String,
    question: String,
    answers: Vec<SquadAnswer>,
}
#[derive(Deserialize)]
struct SquadAnswer {
    text: String,
    answer_start: usize,
}

/// SQuAD v2 (official JSON): answerable questions only; the answer's sentence is kept.
pub fn squad(path: &Path) -> anyhow::Result<(Vec<Example>, usize)> {
    let file: SquadFile = serde_json::from_reader(BufReader::new(open(path)?))
        .with_context(|| format!("{}: not SQuAD v2 JSON", path.display()))?;
    let mut out = Vec::new();
    let mut dropped = 0;
    for p in file.data.iter().flat_map(|a| &a.paragraphs) {
        for qa in &p.qas {
            let Some(a) = qa.answers.first() else {
                continue;
            };
            let answer = a.answer_start..a.answer_start + a.text.len();
            let e = labelled(
                qa.id.clone(),
                "squad",
                qa.question.clone(),
                a.text.clone(),
                &p.context,
                std::slice::from_ref(&answer),
            );
            match e {
                Some(e) => out.push(e),
                None => dropped += 1,
            }
        }
    }
    Ok((out, dropped))
}

/// Seeded shuffle, then `val_fraction` of the examples to validation.
pub fn split(mut all: Vec<Example>, val_fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    fastrand::Rng::with_seed(seed).shuffle(&mut all);
    let n_val = ((all.len() as f64) * val_fraction).round() as usize;
    let train = all.split_off(n_val.min(all.len()));
    (train, all)
}

pub fn write(path: &Path, examples: &[Example]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for e in examples {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads examples back; a line with missing or mistyped fields is reported by its number.
pub fn read(path: &Path) -> anyhow::Result<Vec<Example>> {
    let mut out = Vec::new();
    for (n, line) in BufReader::new(open(path)?).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Example = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        if e.sentences.len() != e.labels.len() {
            anyhow::bail!(
                "{}: line {}: {} sentences but {} labels",
                path.display(),
                n + 1,
                e.sentences.len(),
                e.labels.len()
            );
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_sentences_and_their_titles_are_labelled_keep() {
        let line = r#"{"_id":"x","question":"Who?","answer":"Bob","supporting_facts":[["A",1]],"context":[["A",["First one."," Bob is second."]],["B",["Other."]]]}"#;
        let r: HotpotRecord = serde_json::from_str(line).expect("parse");
        let (text, gold) = render_hotpot(&r);
        assert_eq!(text, "A: First one. Bob is second.\n\nB: Other.");
        let e = labelled(
            r.id.clone(),
            "hotpotqa",
            r.question.clone(),
            r.answer.clone(),
            &text,
            &gold,
        )
        .expect("kept");
        assert_eq!(e.text(), text, "sentences tile the text");
        assert_eq!(e.labels, vec![1, 1, 0], "{:?}", e.sentences);
        assert!(e.target().contains("Bob"));
    }

    #[test]
    fn an_example_whose_evidence_loses_the_answer_is_dropped() {
        let line = r#"{"_id":"x","question":"Who?","answer":"Carol","supporting_facts":[["A",1]],"context":[["A",["First one."," Bob is second."]],["B",["Carol."]]]}"#;
        let r: HotpotRecord = serde_json::from_str(line).expect("parse");
        let (text, gold) = render_hotpot(&r);
        assert!(labelled(r.id.clone(), "hotpotqa", r.question, r.answer, &text, &gold).is_none());
    }

    #[test]
    fn missing_fields_are_reported_with_their_line_number() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, "{\"id\":\"a\",\"source\":\"s\",\"question\":\"q\",\"answer\":\"a\",\"sentences\":[\"x\"],\"labels\":[1]}\n{\"id\":\"b\"}\n").expect("write");
        let error = format!("{:#}", read(&path).expect_err("line 2 is incomplete"));
        assert!(error.contains("line 2"), "{error}");
    }
}
