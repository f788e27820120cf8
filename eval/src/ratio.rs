//! `condenser-eval ratio`: the token ratio each compressor reaches on a prepared benchmark file,
//! counted with both o200k_base and cl100k_base, as the ratio of sums (what a bill sees) and the
//! mean of per-example ratios (what a typical request sees).

use condenser::compress::{CompressInput, Compressor, Tokenizer};

use crate::record::Record;

#[derive(Debug, Clone)]
pub struct RatioRow {
    pub compressor: &'static str,
    pub target: f64,
    /// `(ratio of sums, mean of ratios)` for o200k, then cl100k.
    pub o200k: (f64, f64),
    pub cl100k: (f64, f64),
}

/// Compresses with the o200k budget (as the proxy does for GPT-4o-class models) and counts the
/// result with both encodings.
pub fn run(
    records: &[Record],
    compressor: &dyn Compressor,
    target: f64,
) -> anyhow::Result<RatioRow> {
    let mut sums = [(0usize, 0usize); 2];
    let mut ratios = [Vec::new(), Vec::new()];
    for record in records {
        let tokens = Tokenizer::O200k.count(&record.context);
        let compressed = compressor.compress(&CompressInput {
            text: &record.context,
            query: &record.question,
            target_tokens: ((tokens as f64) * target).floor().max(1.0) as usize,
            tokenizer: Tokenizer::O200k,
        })?;
        for (i, tokenizer) in [Tokenizer::O200k, Tokenizer::Cl100k]
            .into_iter()
            .enumerate()
        {
            let before = tokenizer.count(&record.context).max(1);
            let after = tokenizer.count(&compressed);
            sums[i].0 += before;
            sums[i].1 += after;
            ratios[i].push(after as f64 / before as f64);
        }
    }
    let summary = |i: usize| {
        (
            sums[i].1 as f64 / sums[i].0.max(1) as f64,
            ratios[i].iter().sum::<f64>() / ratios[i].len().max(1) as f64,
        )
    };
    Ok(RatioRow {
        compressor: compressor.name(),
        target,
        o200k: summary(0),
        cl100k: summary(1),
    })
}

pub fn markdown(rows: &[RatioRow]) -> String {
    let mut out = String::from(
        "| compressor | target | o200k ratio of sums | o200k mean ratio | cl100k ratio of sums | cl100k mean ratio |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            r.compressor, r.target, r.o200k.0, r.o200k.1, r.cl100k.0, r.cl100k.1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use condenser::compress::{Identity, Truncate};

    fn record(text: &str) -> Record {
        Record {
            id: "1".into(),
            benchmark: "t".into(),
            context: text.into(),
            question: "q".into(),
            answers: vec![],
            evidence: vec![],
            domain: "nl".into(),
            answer_type: None,
        }
    }

    #[test]
    fn identity_is_one_and_truncate_hits_its_target() {
        let records = vec![
            record(&"alpha beta gamma delta. ".repeat(200)),
            record(&"x y z. ".repeat(50)),
        ];
        let id = run(&records, &Identity, 1.0).expect("run");
        assert_eq!(id.o200k, (1.0, 1.0));
        assert_eq!(id.cl100k, (1.0, 1.0));
        let cut = run(&records, &Truncate, 0.3).expect("run");
        assert!((cut.o200k.0 - 0.3).abs() < 0.03, "{:?}", cut.o200k);
        assert!(cut.cl100k.0 < 0.4);
        assert!(markdown(&[cut]).contains("| truncate | 0.30 |"));
    }
}
