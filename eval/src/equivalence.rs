//! `condenser-eval equivalence`: the shadow scorer's gates (the library's `equivalence` module,
//! the same code the proxy runs) over answer pairs from offline runs — each compressed-context
//! answer against the full-context answer to the same question by the same task model — and from
//! a live shadow store. Reports pass rate and per-gate failure rates per source, compressor,
//! ratio and domain (nl / code / mixed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use condenser::equivalence::{failed_gates, Answer, GateScores, JudgeClient, Scorer};
use condenser::shadow::store::{open_store, SampleKind};

use crate::downstream::AnswerRow;
use crate::task_model::TaskModel;

/// One pair to score: where it came from, and the two answers.
pub struct Pair {
    pub source: String,
    pub compressor: String,
    pub target_ratio: f64,
    pub domain: String,
    pub request: String,
    pub reference: String,
    pub candidate: String,
}

/// Compressed vs full-context answers of downstream runs, for the task models asked for (all
/// when `models` is empty).
pub fn pairs_from_runs(rows: &[AnswerRow], models: &[String]) -> Vec<Pair> {
    let full: HashMap<(&str, &str), &AnswerRow> = rows
        .iter()
        .filter(|r| r.compressor == "identity")
        .map(|r| ((r.task_model.as_str(), r.id.as_str()), r))
        .collect();
    rows.iter()
        .filter(|r| r.compressor != "identity")
        .filter(|r| models.is_empty() || models.iter().any(|m| r.task_model.contains(m.as_str())))
        .filter_map(|r| {
            let reference = full.get(&(r.task_model.as_str(), r.id.as_str()))?;
            Some(Pair {
                source: r.task_model.clone(),
                compressor: r.compressor.clone(),
                target_ratio: r.target_ratio,
                domain: r.domain.clone(),
                request: String::new(),
                reference: reference.answer.clone(),
                candidate: r.answer.clone(),
            })
        })
        .collect()
}

/// Compression pairs of a live shadow store (stored with `store_content = true`).
pub fn pairs_from_shadow(location: &str) -> anyhow::Result<Vec<Pair>> {
    let samples = open_store(location)?.samples(None, 0)?;
    Ok(samples
        .into_iter()
        .filter(|s| s.kind == SampleKind::Compression && !s.reference.starts_with("xxh3:"))
        .map(|s| Pair {
            source: format!("live:{}", s.route),
            compressor: s.compressor,
            target_ratio: if s.tokens_original > 0 {
                s.tokens_compressed as f64 / s.tokens_original as f64
            } else {
                1.0
            },
            domain: s.domain,
            request: s.request,
            reference: s.reference,
            candidate: s.candidate,
        })
        .collect())
}

/// The judge gate backed by a task model (local GGUF or an OpenAI-compatible endpoint).
pub struct TaskModelJudge(pub Arc<TaskModel>);

#[async_trait]
impl JudgeClient for TaskModelJudge {
    async fn ask(&self, system: &str, user: &str) -> Result<Answer, String> {
        let model = self.0.clone();
        let (system, user) = (system.to_string(), user.to_string());
        tokio::task::spawn_blocking(move || model.answer(&system, &user, 160))
            .await
            .map_err(|e| e.to_string())?
            .map(|a| Answer {
                text: a.text,
                prompt_tokens: a.prompt_tokens as u64,
                completion_tokens: a.completion_tokens as u64,
                ..Answer::default()
            })
            .map_err(|e| format!("{e:#}"))
    }
}

#[derive(Debug, Default, Clone)]
pub struct EquivalenceRow {
    pub source: String,
    pub compressor: String,
    pub target_ratio: f64,
    pub domain: String,
    pub pairs: usize,
    pub passed: usize,
    pub failures: BTreeMap<&'static str, usize>,
    pub embedding_sum: f64,
    pub embedding_n: usize,
    pub facts_sum: f64,
    pub facts_n: usize,
    /// Judge replies that were not the rubric's JSON (counted in the judge failures too).
    pub judge_unreadable: usize,
}

pub async fn run(pairs: &[Pair], scorer: &Scorer) -> Vec<EquivalenceRow> {
    let mut groups: BTreeMap<(String, String, String, String), EquivalenceRow> = BTreeMap::new();
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    let mut unreadable_shown = 0;
    for pair in pairs {
        let text = |t: &str| Answer {
            text: t.to_string(),
            ..Answer::default()
        };
        let scores: GateScores = scorer
            .score(
                &pair.request,
                &text(&pair.reference),
                &text(&pair.candidate),
            )
            .await;
        let failed = failed_gates(&scores, &scorer.thresholds);
        let ratio = format!("{:.2}", pair.target_ratio);
        let row = groups
            .entry((
                pair.source.clone(),
                pair.compressor.clone(),
                ratio,
                pair.domain.clone(),
            ))
            .or_insert_with(|| EquivalenceRow {
                source: pair.source.clone(),
                compressor: pair.compressor.clone(),
                target_ratio: pair.target_ratio,
                domain: pair.domain.clone(),
                ..EquivalenceRow::default()
            });
        row.pairs += 1;
        row.passed += usize::from(failed.is_empty());
        for gate in failed {
            *row.failures.entry(gate).or_default() += 1;
        }
        if let Some(e) = scores.score("embedding") {
            row.embedding_sum += f64::from(e);
            row.embedding_n += 1;
        }
        if let Some(f) = scores.score("facts") {
            row.facts_sum += f64::from(f);
            row.facts_n += 1;
        }
        if let Some(error) = scores.errors.get("judge") {
            // The first few, so a judge model that cannot follow the rubric shows why.
            if unreadable_shown < 3 {
                bar.suspend(|| eprintln!("judge reply unreadable: {error}"));
                unreadable_shown += 1;
            }
            row.judge_unreadable += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    groups.into_values().collect()
}

pub fn markdown(rows: &[EquivalenceRow], judged: bool) -> String {
    let mut out = String::from(
        "| source | compressor | ratio | domain | pairs | pass rate | embedding fail | facts fail | judge fail | mean embedding | mean facts |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let percent = |n: usize| format!("{:.1}%", 100.0 * n as f64 / r.pairs.max(1) as f64);
        let share = |gate: &str| percent(*r.failures.get(gate).unwrap_or(&0));
        let mean = |sum: f64, n: usize| {
            if n == 0 {
                "–".to_string()
            } else {
                format!("{:.3}", sum / n as f64)
            }
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {:.1}% | {} | {} | {} | {} | {} |\n",
            r.source,
            r.compressor,
            r.target_ratio,
            r.domain,
            r.pairs,
            100.0 * r.passed as f64 / r.pairs.max(1) as f64,
            if r.embedding_n > 0 {
                share("embedding")
            } else {
                "–".into()
            },
            share("facts"),
            if judged {
                format!(
                    "{} ({} unreadable)",
                    share("judge"),
                    percent(r.judge_unreadable)
                )
            } else {
                "–".into()
            },
            mean(r.embedding_sum, r.embedding_n),
            mean(r.facts_sum, r.facts_n),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use condenser::equivalence::{GateParts, Thresholds};

    fn row(id: &str, compressor: &str, answer: &str) -> AnswerRow {
        let ratio = if compressor == "identity" { 1.0 } else { 0.35 };
        crate::downstream::test_row(id, compressor, ratio, answer, 0.0)
    }

    #[tokio::test]
    async fn pairs_compressed_answers_with_the_full_context_answer() {
        let rows = vec![
            row("a", "identity", "Opened in 1889 in Paris"),
            row("a", "truncate", "Opened in 1889 in Paris"),
            row("a", "extractive", "Opened in 1901 in Lyon"),
            row("b", "truncate", "orphan without a full-context answer"),
        ];
        let pairs = pairs_from_runs(&rows, &[]);
        assert_eq!(pairs.len(), 2);
        let scorer = Scorer::new(&GateParts::default(), Thresholds::default());
        let table = run(&pairs, &scorer).await;
        let by = |c: &str| table.iter().find(|r| r.compressor == c).expect("row");
        assert_eq!(by("truncate").passed, 1);
        assert_eq!(by("extractive").passed, 0);
        assert_eq!(by("extractive").failures.get("facts"), Some(&1));
        assert!(markdown(&table, false).contains("| m | extractive | 0.35 | nl | 1 | 0.0% |"));
    }

    /// A judge that answers in prose instead of the rubric's JSON.
    struct Chatty;

    #[async_trait]
    impl JudgeClient for Chatty {
        async fn ask(&self, _: &str, _: &str) -> Result<Answer, String> {
            Ok(Answer {
                text: "Both answers look the same to me.".into(),
                ..Answer::default()
            })
        }
    }

    #[tokio::test]
    async fn a_judge_that_ignores_the_rubric_is_reported_as_unreadable() {
        let rows = vec![
            row("a", "identity", "Opened in 1889 in Paris"),
            row("a", "truncate", "Opened in 1889 in Paris"),
        ];
        let parts = GateParts {
            embedder: None,
            judge: Some(Arc::new(Chatty)),
        };
        let scorer = Scorer::new(&parts, Thresholds::default());
        let table = run(&pairs_from_runs(&rows, &[]), &scorer).await;
        assert_eq!((table[0].passed, table[0].judge_unreadable), (0, 1));
        assert!(
            markdown(&table, true).contains("| 100.0% (100.0% unreadable) |"),
            "{}",
            markdown(&table, true)
        );
    }
}
