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

#[cfg(test)]
mod tests {
    use super::*;

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
