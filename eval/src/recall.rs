//! `condenser-eval recall`: for each compressor and target ratio, compresses every context
//! against its question and measures what survived: token ratio, gold-answer recall (any gold
//! answer present after SQuAD normalisation; yes/no and unanswerable questions excluded),
//! evidence recall (evidence sentences kept verbatim), and compression speed (ms per 1k input
//! tokens). No task model is involved, so it runs on all 500 HotPotQA dev examples in seconds.

use std::time::Instant;

use condenser::compress::{CompressInput, Compressor, Tokenizer};

use crate::metrics::contains_answer;
use crate::record::Record;

#[derive(Debug, Clone)]
pub struct RecallRow {
    /// The compressor as named on the command line (`select@0.5`: select blended 0.5).
    pub compressor: String,
    pub target_ratio: f64,
    pub ratio_of_sums: f64,
    pub mean_ratio: f64,
    pub answer_recall: f64,
    pub answer_n: usize,
    /// `None` when the benchmark marks no evidence.
    pub support_recall: Option<f64>,
    pub ms_per_1k_median: f64,
    pub ms_per_1k_p95: f64,
    /// Examples where the compressor failed and the text was kept whole.
    pub failed_open: usize,
}

/// What one (compressor, ratio) has seen so far.
#[derive(Default)]
struct Tally {
    tokens_in: usize,
    tokens_out: usize,
    ratios: Vec<f64>,
    answers_found: usize,
    answer_n: usize,
    support_found: usize,
    support_n: usize,
    speeds: Vec<f64>,
    failed_open: usize,
}

impl Tally {
    fn row(mut self, compressor: String, target_ratio: f64) -> RecallRow {
        self.speeds.sort_by(f64::total_cmp);
        let percentile = |p: f64| {
            self.speeds
                .get(((self.speeds.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        RecallRow {
            compressor,
            target_ratio,
            ratio_of_sums: self.tokens_out as f64 / self.tokens_in.max(1) as f64,
            mean_ratio: self.ratios.iter().sum::<f64>() / self.ratios.len().max(1) as f64,
            answer_recall: self.answers_found as f64 / self.answer_n.max(1) as f64,
            answer_n: self.answer_n,
            support_recall: (self.support_n > 0)
                .then(|| self.support_found as f64 / self.support_n as f64),
            ms_per_1k_median: percentile(0.5),
            ms_per_1k_p95: percentile(0.95),
            failed_open: self.failed_open,
        }
    }
}

/// One row per ratio. Each example is compressed at every ratio before the next example, so a
/// model compressor's memoised scoring pass serves all ratios of a text: the first ratio's
/// speed is the model's, the others' are the selection alone.
pub fn run(
    examples: &[Record],
    label: &str,
    compressor: &dyn Compressor,
    ratios: &[f64],
    tokenizer: Tokenizer,
) -> anyhow::Result<Vec<RecallRow>> {
    let mut tallies: Vec<Tally> = ratios.iter().map(|_| Tally::default()).collect();
    let started_run = Instant::now();
    let mut reported = Instant::now();
    for (i, example) in examples.iter().enumerate() {
        let context = &example.context;
        let before = tokenizer.count(context);
        for (&ratio, t) in ratios.iter().zip(tallies.iter_mut()) {
            let input = CompressInput {
                text: context,
                query: &example.question,
                target_tokens: ((before as f64) * ratio).floor().max(1.0) as usize,
                tokenizer,
            };
            let started = Instant::now();
            // As in the proxy, a compressor error leaves the text as it was (counted).
            let compressed = match compressor.compress(&input) {
                Ok(text) => text,
                Err(error) => {
                    eprintln!("  {}: {error}", example.id);
                    t.failed_open += 1;
                    context.clone()
                }
            };
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            let after = tokenizer.count(&compressed);
            t.tokens_in += before;
            t.tokens_out += after;
            t.ratios.push(after as f64 / before.max(1) as f64);
            t.speeds.push(elapsed_ms / (before.max(1) as f64 / 1000.0));
            let scored = !matches!(example.answer_type.as_deref(), Some("boolean" | "none"));
            if scored && !example.answers.is_empty() {
                t.answer_n += 1;
                let found = example
                    .answers
                    .iter()
                    .any(|a| contains_answer(&compressed, a));
                t.answers_found += usize::from(found);
            }
            for sentence in &example.evidence {
                t.support_n += 1;
                t.support_found += usize::from(compressed.contains(sentence.trim()));
            }
        }
        let done = i + 1;
        if done.is_multiple_of(100) || done == examples.len() || reported.elapsed().as_secs() >= 60
        {
            reported = Instant::now();
            let per = started_run.elapsed().as_secs_f64() / done as f64;
            eprintln!(
                "  {label}: {done}/{} examples, eta {:.0} s",
                examples.len(),
                per * (examples.len() - done) as f64
            );
        }
    }
    Ok(ratios
        .iter()
        .zip(tallies)
        .map(|(&ratio, t)| t.row(label.to_string(), ratio))
        .collect())
}

/// Ratio (x) against answer recall and evidence recall (y), one line each per compressor.
pub fn plot(rows: &[RecallRow], path: &std::path::Path, title: &str) -> anyhow::Result<()> {
    let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for r in rows.iter().filter(|r| r.compressor != "identity") {
        let ratio = r.ratio_of_sums;
        series
            .entry(format!("{} answer", r.compressor))
            .or_default()
            .push((ratio, r.answer_recall));
        if let Some(evidence) = r.support_recall {
            series
                .entry(format!("{} evidence", r.compressor))
                .or_default()
                .push((ratio, evidence));
        }
    }
    crate::report::line_chart(series, path, title, "recall", 0.0..1.02, Some(1.0))
}

pub fn markdown(rows: &[RecallRow], examples: usize) -> String {
    let mut out = format!(
        "| compressor | target | ratio (sum) | ratio (mean) | answer recall (n={}) | evidence recall | ms / 1k tokens p50 | p95 | failed open |\n|---|---|---|---|---|---|---|---|---|\n",
        rows.first().map_or(0, |r| r.answer_n)
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.2} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {} |\n",
            r.compressor,
            r.target_ratio,
            r.ratio_of_sums,
            r.mean_ratio,
            r.answer_recall,
            r.support_recall
                .map_or_else(|| "—".to_string(), |v| format!("{v:.3}")),
            r.ms_per_1k_median,
            r.ms_per_1k_p95,
            r.failed_open
        ));
    }
    out.push_str(&format!(
        "\n{examples} examples; answer recall excludes yes/no and unanswerable questions; \
         evidence recall is — where the benchmark marks no evidence.\n"
    ));
    out
}
