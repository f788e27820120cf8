//! The per-route shadow summary behind `condenser report` and `GET /admin/shadow`: samples, pass
//! rate and noise floor, per-gate failure rates, mean ratio, tokens and dollars saved against
//! dollars spent on shadowing, and the worst examples.

use std::collections::BTreeMap;

use serde::Serialize;

use super::store::{Sample, SampleKind};

#[derive(Debug, Clone, Serialize)]
pub struct WorstExample {
    pub id: Option<i64>,
    pub compressor: String,
    pub failed_gates: Vec<String>,
    pub request: String,
    pub reference: String,
    pub candidate: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteReport {
    pub route: String,
    pub samples: usize,
    pub scored: usize,
    pub pass_rate: Option<f64>,
    pub noise_samples: usize,
    pub noise_pass_rate: Option<f64>,
    /// Share of scored compression samples each gate failed.
    pub gate_failure_rates: BTreeMap<String, f64>,
    pub mean_ratio: Option<f64>,
    pub input_tokens_saved: u64,
    pub usd_saved: f64,
    pub usd_spent_shadowing: f64,
    pub worst: Vec<WorstExample>,
}

const WORST: usize = 5;

impl RouteReport {
    /// Blanks the worst examples' prompts and answers (kept: ids, compressors, failed gates),
    /// for a reader who did not prove they may see traffic.
    pub fn drop_content(&mut self) {
        for example in &mut self.worst {
            example.request.clear();
            example.reference.clear();
            example.candidate.clear();
        }
    }
}

fn clip(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub fn summarise(samples: &[Sample]) -> Vec<RouteReport> {
    let mut by_route: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_route.entry(s.route.as_str()).or_default().push(s);
    }
    by_route
        .into_iter()
        .map(|(route, samples)| {
            let mut r = RouteReport {
                route: route.to_string(),
                ..RouteReport::default()
            };
            let compression: Vec<&&Sample> = samples
                .iter()
                .filter(|s| s.kind == SampleKind::Compression)
                .collect();
            let noise: Vec<&&Sample> = samples
                .iter()
                .filter(|s| s.kind == SampleKind::Noise)
                .collect();
            r.samples = compression.len();
            let scored: Vec<&&&Sample> =
                compression.iter().filter(|s| s.passed.is_some()).collect();
            r.scored = scored.len();
            let passed = scored.iter().filter(|s| s.passed == Some(true)).count();
            r.pass_rate = (!scored.is_empty()).then(|| passed as f64 / scored.len() as f64);
            let noise_scored: Vec<_> = noise.iter().filter(|s| s.passed.is_some()).collect();
            r.noise_samples = noise_scored.len();
            r.noise_pass_rate = (!noise_scored.is_empty()).then(|| {
                noise_scored
                    .iter()
                    .filter(|s| s.passed == Some(true))
                    .count() as f64
                    / noise_scored.len() as f64
            });
            for s in &scored {
                for gate in &s.failed_gates {
                    *r.gate_failure_rates.entry(gate.clone()).or_default() += 1.0;
                }
            }
            for v in r.gate_failure_rates.values_mut() {
                *v /= scored.len().max(1) as f64;
            }
            let ratios: Vec<f64> = compression
                .iter()
                .filter(|s| s.tokens_original > 0)
                .map(|s| s.tokens_compressed as f64 / s.tokens_original as f64)
                .collect();
            r.mean_ratio =
                (!ratios.is_empty()).then(|| ratios.iter().sum::<f64>() / ratios.len() as f64);
            r.input_tokens_saved = compression
                .iter()
                .filter(|s| s.served == "compressed")
                .map(|s| s.tokens_original.saturating_sub(s.tokens_compressed))
                .sum();
            r.usd_saved = compression.iter().map(|s| s.saved_usd).sum();
            r.usd_spent_shadowing = samples.iter().map(|s| s.shadow_cost_usd).sum();
            let mut failures: Vec<&&&Sample> = scored
                .iter()
                .copied()
                .filter(|s| s.passed == Some(false))
                .collect();
            failures.sort_by_key(|s| std::cmp::Reverse(s.failed_gates.len()));
            r.worst = failures
                .into_iter()
                .take(WORST)
                .map(|s| WorstExample {
                    id: s.id,
                    compressor: s.compressor.clone(),
                    failed_gates: s.failed_gates.clone(),
                    request: clip(&s.request),
                    reference: clip(&s.reference),
                    candidate: clip(&s.candidate),
                })
                .collect();
            r
        })
        .collect()
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// The report as markdown, for the terminal.
pub fn markdown(reports: &[RouteReport]) -> String {
    let mut out = String::from(
        "| route | samples | pass rate | noise floor | gate failures | mean ratio | tokens saved | $ saved | $ shadowing |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let gates = r
            .gate_failure_rates
            .iter()
            .map(|(g, v)| format!("{g} {:.0}%", v * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {} | {} ({} scored) | {} | {} ({} pairs) | {} | {} | {} | {:.4} | {:.4} |\n",
            r.route,
            r.samples,
            r.scored,
            percent(r.pass_rate),
            percent(r.noise_pass_rate),
            r.noise_samples,
            if gates.is_empty() {
                "–".into()
            } else {
                gates
            },
            r.mean_ratio
                .map_or_else(|| "–".into(), |m| format!("{m:.3}")),
            r.input_tokens_saved,
            r.usd_saved,
            r.usd_spent_shadowing,
        ));
    }
    for r in reports {
        for w in &r.worst {
            out.push_str(&format!(
                "\n{} sample {} ({}; failed {}):\n  request: {}\n  original: {}\n  compressed: {}\n",
                r.route,
                w.id.unwrap_or_default(),
                w.compressor,
                w.failed_gates.join(", "),
                w.request,
                w.reference,
                w.candidate
            ));
        }
    }
    out
}
