//! The normalised evaluation record every benchmark loader produces and every measurement reads
//! (one JSON object per line): the context to compress, the question, gold answers, evidence
//! where the benchmark has it, and the content domain.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub benchmark: String,
    pub context: String,
    pub question: String,
    /// Acceptable answers; empty when the question is unanswerable from the context.
    pub answers: Vec<String>,
    /// Sentences or passages that support the answer, when the benchmark marks them.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// `nl`, `code` or `mixed`.
    pub domain: String,
    /// Benchmark-specific answer kind (Qasper: extractive / abstractive / boolean / none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_type: Option<String>,
}

pub fn write_jsonl(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(n, line)| {
            serde_json::from_str(&line?)
                .with_context(|| format!("{}: line {}", path.display(), n + 1))
        })
        .collect()
}

/// Opens a file, transparently gunzipping `.gz`.
pub fn open_maybe_gz(path: &Path) -> anyhow::Result<Box<dyn std::io::Read>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::GzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Deterministic subsample: a seeded shuffle (splitmix64) then the first `limit`.
pub fn sample<T>(mut items: Vec<T>, limit: Option<usize>, seed: Option<u64>) -> Vec<T> {
    if let Some(seed) = seed {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for i in (1..items.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    items
}

/// For each record, the index of its document: records with the same context share one,
/// numbered in order of first appearance.
pub fn document_ids(records: &[Record]) -> Vec<usize> {
    let mut id_of: std::collections::HashMap<&str, usize> = Default::default();
    records
        .iter()
        .map(|r| {
            let next = id_of.len();
            *id_of.entry(r.context.as_str()).or_insert(next)
        })
        .collect()
}

/// Whole documents at a time: records grouped by [`document_ids`], the groups shuffled with
/// `seed`, at most `per_document` questions from each, until `limit` questions. Questions about
/// one document are then answered back to back, and a local task model prefills the document
/// once for all of them (its KV cache keeps the shared prompt prefix).
pub fn sample_by_document(
    records: Vec<Record>,
    limit: Option<usize>,
    seed: Option<u64>,
    per_document: usize,
) -> Vec<Record> {
    let ids = document_ids(&records);
    let mut groups: Vec<Vec<Record>> = vec![Vec::new(); ids.iter().max().map_or(0, |m| m + 1)];
    for (record, id) in records.into_iter().zip(ids) {
        groups[id].push(record);
    }
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for group in sample(groups, None, seed) {
        for record in group.into_iter().take(per_document) {
            if out.len() == limit {
                return out;
            }
            out.push(record);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, context: &str) -> Record {
        Record {
            id: id.into(),
            benchmark: "qasper".into(),
            context: context.into(),
            question: format!("question {id}"),
            answers: vec![],
            evidence: vec![],
            domain: "nl".into(),
            answer_type: None,
        }
    }

    #[test]
    fn document_sampling_keeps_a_document_s_questions_together() {
        let records: Vec<Record> = (0..20)
            .map(|i| record(&format!("p{}/q{}", i % 5, i), &format!("paper {}", i % 5)))
            .collect();
        let chosen = sample_by_document(records.clone(), Some(7), Some(7), 3);
        assert_eq!(chosen.len(), 7);
        // 3 + 3 + 1 questions: each paper's run is contiguous and at most 3 long.
        let mut runs: Vec<(String, usize)> = Vec::new();
        for r in &chosen {
            match runs.last_mut() {
                Some((context, n)) if *context == r.context => *n += 1,
                _ => runs.push((r.context.clone(), 1)),
            }
        }
        assert_eq!(
            runs.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        let distinct: std::collections::HashSet<_> = runs.iter().map(|(c, _)| c).collect();
        assert_eq!(distinct.len(), 3, "a paper is visited once");
        assert_eq!(
            chosen,
            sample_by_document(records.clone(), Some(7), Some(7), 3)
        );
        assert_ne!(chosen, sample_by_document(records, Some(7), Some(8), 3));
    }

    #[test]
    fn sampling_is_deterministic_per_seed() {
        let a = sample((0..100).collect::<Vec<_>>(), Some(5), Some(7));
        let b = sample((0..100).collect::<Vec<_>>(), Some(5), Some(7));
        let c = sample((0..100).collect::<Vec<_>>(), Some(5), Some(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(sample(vec![1, 2, 3], Some(2), None), vec![1, 2]);
    }

    #[test]
    fn jsonl_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.jsonl");
        let record = Record {
            id: "1".into(),
            benchmark: "nq".into(),
            context: "c".into(),
            question: "q".into(),
            answers: vec!["a".into()],
            evidence: vec![],
            domain: "nl".into(),
            answer_type: None,
        };
        write_jsonl(&path, std::slice::from_ref(&record)).expect("write");
        assert_eq!(read_jsonl(&path).expect("read"), vec![record]);
    }
}
