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
    pub compressor: &'static str,
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

pub fn run(
    examples: &[Record],
    compressor: &dyn Compressor,
    ratio: f64,
    tokenizer: Tokenizer,
) -> anyhow::Result<RecallRow> {
    let (mut tokens_in, mut tokens_out) = (0usize, 0usize);
    let mut ratios = Vec::with_capacity(examples.len());
    let (mut answers_found, mut answer_n) = (0usize, 0usize);
    let (mut support_found, mut support_n) = (0usize, 0usize);
    let mut speeds = Vec::with_capacity(examples.len());
    let mut failed_open = 0usize;
    for (i, example) in examples.iter().enumerate() {
        let context = &example.context;
        let before = tokenizer.count(context);
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
                failed_open += 1;
                context.clone()
            }
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let after = tokenizer.count(&compressed);
        tokens_in += before;
        tokens_out += after;
        ratios.push(after as f64 / before.max(1) as f64);
        speeds.push(elapsed_ms / (before.max(1) as f64 / 1000.0));
        let scored = !matches!(example.answer_type.as_deref(), Some("boolean" | "none"));
        if scored && !example.answers.is_empty() {
            answer_n += 1;
            let found = example
                .answers
                .iter()
                .any(|a| contains_answer(&compressed, a));
            answers_found += usize::from(found);
        }
        for sentence in &example.evidence {
            support_n += 1;
            support_found += usize::from(compressed.contains(sentence.trim()));
        }
        if (i + 1) % 100 == 0 || i + 1 == examples.len() {
            eprintln!(
                "  {} @ {ratio}: {}/{} examples",
                compressor.name(),
                i + 1,
                examples.len()
            );
        }
    }
    speeds.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        speeds
            .get(((speeds.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(RecallRow {
        compressor: compressor.name(),
        target_ratio: ratio,
        ratio_of_sums: tokens_out as f64 / tokens_in.max(1) as f64,
        mean_ratio: ratios.iter().sum::<f64>() / ratios.len().max(1) as f64,
        answer_recall: answers_found as f64 / answer_n.max(1) as f64,
        answer_n,
        support_recall: (support_n > 0).then(|| support_found as f64 / support_n as f64),
        ms_per_1k_median: percentile(0.5),
        ms_per_1k_p95: percentile(0.95),
        failed_open,
    })
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
