//! Whether two answers to the same request are equivalent, by three gates shared by the live
//! shadow scorer and `condenser-eval equivalence`: embedding similarity (`embedding.rs`), fact
//! coverage (`facts.rs`) and an LLM judge (`judge.rs`). Tool-call answers are compared by function
//! name and argument JSON instead. A sample passes when every active gate passes.

pub mod answer;
pub mod embedding;
pub mod facts;
pub mod judge;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use answer::Answer;
pub use embedding::Embedder;
pub use judge::JudgeVerdict;

/// The pass thresholds are configuration, plain data held by `config`.
pub use crate::config::Thresholds;

/// What each gate measured; `None` where a gate did not run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateScores {
    pub embedding: Option<f32>,
    pub facts: Option<f32>,
    pub judge: Option<f32>,
    /// Set when the judge's reply was not the rubric's JSON (the gate then fails).
    pub judge_error: Option<String>,
    pub missing_facts: Vec<String>,
    /// Set when either answer called tools: same function names and argument JSON, in order.
    pub tools_match: Option<bool>,
    /// The judge call's prompt and completion tokens, as its upstream reported them: the shadow
    /// scorer prices them against the route's daily cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_tokens: Option<(u64, u64)>,
}

/// Names of the gates that failed.
pub fn failed_gates(scores: &GateScores, t: &Thresholds) -> Vec<&'static str> {
    let mut failed = Vec::new();
    if scores.embedding.is_some_and(|s| s < t.embedding) {
        failed.push("embedding");
    }
    if scores.facts.is_some_and(|s| s < t.facts) {
        failed.push("facts");
    }
    if scores.judge_error.is_some() || scores.judge.is_some_and(|s| s < t.judge) {
        failed.push("judge");
    }
    if scores.tools_match == Some(false) {
        failed.push("tools");
    }
    failed
}

pub fn passed(scores: &GateScores, t: &Thresholds) -> bool {
    failed_gates(scores, t).is_empty()
}

/// The model behind the judge gate: a configured route in the proxy, a task model offline. The
/// reply is an [`Answer`] so its usage can be priced.
#[async_trait]
pub trait JudgeClient: Send + Sync {
    async fn ask(&self, system: &str, user: &str) -> Result<Answer, String>;
}

pub struct Scorer {
    pub embedder: Option<Arc<Embedder>>,
    pub judge: Option<Arc<dyn JudgeClient>>,
    pub thresholds: Thresholds,
}

impl Scorer {
    /// Scores `candidate` against `reference`, both answers to `request` (its last user text).
    pub async fn score(&self, request: &str, reference: &Answer, candidate: &Answer) -> GateScores {
        let mut scores = GateScores::default();
        if !reference.tool_calls.is_empty() || !candidate.tool_calls.is_empty() {
            scores.tools_match = Some(reference.tool_calls == candidate.tool_calls);
        }
        let (a, b) = (reference.text.trim(), candidate.text.trim());
        if a.is_empty() && b.is_empty() {
            return scores;
        }
        let (coverage, missing) = facts::coverage(a, b);
        scores.facts = Some(coverage);
        scores.missing_facts = missing.into_iter().map(|f| f.text).collect();
        if let Some(embedder) = &self.embedder {
            let embedder = embedder.clone();
            let (a, b) = (a.to_string(), b.to_string());
            // A forward pass is milliseconds of CPU: keep it off the async workers.
            let similarity = tokio::task::spawn_blocking(move || embedder.similarity(&a, &b)).await;
            match similarity {
                Ok(Ok(s)) => scores.embedding = Some(s),
                Ok(Err(e)) => tracing::warn!(error = %e, "embedding gate failed"),
                Err(e) => tracing::warn!(error = %e, "embedding gate panicked"),
            }
        }
        if let Some(judge) = &self.judge {
            let user = judge::judge_user_prompt(request, a, b);
            let reply = judge.ask(judge::JUDGE_SYSTEM_PROMPT, &user).await;
            // Paid for whether or not the reply follows the rubric.
            scores.judge_tokens = reply
                .as_ref()
                .ok()
                .map(|r| (r.prompt_tokens, r.completion_tokens));
            match reply.and_then(|r| judge::parse_verdict(&r.text)) {
                Ok(v) => {
                    // A "different" verdict fails whatever score came with it.
                    scores.judge = Some(if v.equivalent {
                        v.score
                    } else {
                        v.score.min(0.0)
                    });
                    scores.missing_facts.extend(v.missing_facts);
                }
                Err(e) => scores.judge_error = Some(e),
            }
        }
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Canned(&'static str);

    #[async_trait]
    impl JudgeClient for Canned {
        async fn ask(&self, _: &str, _: &str) -> Result<Answer, String> {
            Ok(Answer {
                text: self.0.to_string(),
                prompt_tokens: 120,
                completion_tokens: 20,
                ..Answer::default()
            })
        }
    }

    fn text(t: &str) -> Answer {
        Answer {
            text: t.into(),
            ..Answer::default()
        }
    }

    fn scorer(judge: &'static str) -> Scorer {
        Scorer {
            embedder: None,
            judge: Some(Arc::new(Canned(judge))),
            thresholds: Thresholds::default(),
        }
    }

    #[tokio::test]
    async fn unparseable_judge_fails_the_sample() {
        let s = scorer("looks fine");
        let scores = s
            .score("q", &text("Paris, 1889."), &text("Paris, 1889."))
            .await;
        assert_eq!(scores.facts, Some(1.0));
        assert!(scores.judge_error.is_some());
        assert_eq!(
            scores.judge_tokens,
            Some((120, 20)),
            "an unreadable reply is still paid for"
        );
        assert_eq!(failed_gates(&scores, &s.thresholds), vec!["judge"]);
    }

    #[tokio::test]
    async fn changed_fact_and_different_verdict_fail() {
        let s = scorer(r#"{"verdict":"different","score":0.8,"missing_facts":["1889"]}"#);
        let scores = s
            .score(
                "q",
                &text("It opened in 1889 in Paris."),
                &text("It opened in 1901 in Lyon."),
            )
            .await;
        let failed = failed_gates(&scores, &s.thresholds);
        assert!(
            failed.contains(&"facts") && failed.contains(&"judge"),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn tool_calls_compare_by_name_and_arguments() {
        let s = Scorer {
            embedder: None,
            judge: None,
            thresholds: Thresholds::default(),
        };
        let call = |city: &str| Answer {
            tool_calls: vec![("get_weather".into(), serde_json::json!({ "city": city }))],
            ..Answer::default()
        };
        assert!(passed(
            &s.score("q", &call("Paris"), &call("Paris")).await,
            &s.thresholds
        ));
        assert!(!passed(
            &s.score("q", &call("Paris"), &call("Rome")).await,
            &s.thresholds
        ));
    }
}
