//! Whether two answers to the same request are equivalent, by the gates registered in `gates`
//! (embedding similarity, fact coverage, an LLM judge), shared by the live shadow scorer and
//! `condenser-eval equivalence`. Tool-call answers are compared by function name and argument JSON
//! instead. A sample passes when every gate that ran passes.

pub mod embedding;
pub mod facts;
pub mod gates;
pub mod judge;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// An answer as the gates compare it (read from OpenAI's wire shapes).
pub use crate::openai::Answer;
pub use embedding::Embedder;
pub use gates::{gate_names, Case, Gate, GateFinding, GateParts, Thresholds, GATES};
pub use judge::JudgeVerdict;

/// What the gates measured on one pair.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredScores")]
pub struct GateScores {
    /// Each gate that scored, by name (0–1).
    pub scores: BTreeMap<String, f32>,
    /// Gates that could not score, and why (such a gate fails: e.g. a judge reply that is not the
    /// rubric's JSON).
    pub errors: BTreeMap<String, String>,
    pub missing_facts: Vec<String>,
    /// Set when either answer called tools: same function names and argument JSON, in order.
    pub tools_match: Option<bool>,
    /// Prompt and completion tokens the gates' model calls cost, as their upstream reported
    /// them: the shadow scorer prices them against the route's daily cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_tokens: Option<(u64, u64)>,
}

impl GateScores {
    /// The score of gate `name`, if it ran.
    pub fn score(&self, name: &str) -> Option<f32> {
        self.scores.get(name).copied()
    }

    fn record(&mut self, gate: &str, finding: GateFinding) {
        if let Some(score) = finding.score {
            self.scores.insert(gate.to_string(), score);
        }
        if let Some(error) = finding.error {
            self.errors.insert(gate.to_string(), error);
        }
        self.missing_facts.extend(finding.missing_facts);
        if let Some((prompt, completion)) = finding.model_tokens {
            let (p, c) = self.model_tokens.unwrap_or((0, 0));
            self.model_tokens = Some((p + prompt, c + completion));
        }
    }
}

/// Scores as stored, including rows written when the three gates were fixed fields.
#[derive(Deserialize)]
struct StoredScores {
    #[serde(default)]
    scores: BTreeMap<String, f32>,
    #[serde(default)]
    errors: BTreeMap<String, String>,
    #[serde(default)]
    missing_facts: Vec<String>,
    tools_match: Option<bool>,
    model_tokens: Option<(u64, u64)>,
    embedding: Option<f32>,
    facts: Option<f32>,
    judge: Option<f32>,
    judge_error: Option<String>,
    judge_tokens: Option<(u64, u64)>,
}

impl From<StoredScores> for GateScores {
    fn from(stored: StoredScores) -> Self {
        let mut scores = stored.scores;
        for (name, legacy) in [
            ("embedding", stored.embedding),
            ("facts", stored.facts),
            ("judge", stored.judge),
        ] {
            if let Some(score) = legacy {
                scores.entry(name.to_string()).or_insert(score);
            }
        }
        let mut errors = stored.errors;
        if let Some(error) = stored.judge_error {
            errors.entry("judge".to_string()).or_insert(error);
        }
        Self {
            scores,
            errors,
            missing_facts: stored.missing_facts,
            tools_match: stored.tools_match,
            model_tokens: stored.model_tokens.or(stored.judge_tokens),
        }
    }
}

/// Names of the gates that failed, in registry order (`tools` last).
pub fn failed_gates(scores: &GateScores, t: &Thresholds) -> Vec<&'static str> {
    let mut failed: Vec<&'static str> = GATES
        .iter()
        .filter(|g| {
            scores.errors.contains_key(g.name)
                || scores.score(g.name).is_some_and(|s| s < t.of(g.name))
        })
        .map(|g| g.name)
        .collect();
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

/// Runs every configured gate on a pair.
pub struct Scorer {
    gates: Vec<Arc<dyn Gate>>,
    pub thresholds: Thresholds,
}

impl Scorer {
    /// A scorer with every registered gate that `parts` allows.
    pub fn new(parts: &GateParts, thresholds: Thresholds) -> Self {
        Self {
            gates: gates::build_gates(parts),
            thresholds,
        }
    }

    /// The names of the gates this scorer runs.
    pub fn gate_names(&self) -> Vec<&'static str> {
        self.gates.iter().map(|g| g.name()).collect()
    }

    /// Scores `candidate` against `reference`, both answers to `request` (its last user text).
    pub async fn score(&self, request: &str, reference: &Answer, candidate: &Answer) -> GateScores {
        let mut scores = GateScores::default();
        if !reference.tool_calls.is_empty() || !candidate.tool_calls.is_empty() {
            scores.tools_match = Some(reference.tool_calls == candidate.tool_calls);
        }
        if reference.text.trim().is_empty() && candidate.text.trim().is_empty() {
            return scores;
        }
        let case = Case {
            request,
            reference,
            candidate,
        };
        for gate in &self.gates {
            let finding = gate.check(&case).await;
            scores.record(gate.name(), finding);
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
        let parts = GateParts {
            embedder: None,
            judge: Some(Arc::new(Canned(judge))),
        };
        Scorer::new(&parts, Thresholds::default())
    }

    #[tokio::test]
    async fn unparseable_judge_fails_the_sample() {
        let s = scorer("looks fine");
        let scores = s
            .score("q", &text("Paris, 1889."), &text("Paris, 1889."))
            .await;
        assert_eq!(scores.score("facts"), Some(1.0));
        assert!(scores.errors.contains_key("judge"));
        assert_eq!(
            scores.model_tokens,
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
        let s = Scorer::new(&GateParts::default(), Thresholds::default());
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

    #[test]
    fn scores_stored_before_the_registry_still_read() {
        let legacy = r#"{"embedding":0.9,"facts":0.4,"judge":null,"judge_error":"not JSON",
            "missing_facts":["1889"],"tools_match":null,"judge_tokens":[120,20]}"#;
        let scores: GateScores = serde_json::from_str(legacy).expect("legacy row");
        assert_eq!(scores.score("embedding"), Some(0.9));
        assert_eq!(scores.model_tokens, Some((120, 20)));
        assert_eq!(
            failed_gates(&scores, &Thresholds::default()),
            vec!["facts", "judge"]
        );
        let round: GateScores =
            serde_json::from_str(&serde_json::to_string(&scores).expect("json")).expect("new row");
        assert_eq!(round, scores);
    }

    #[test]
    fn thresholds_fall_back_to_each_gates_default() {
        let mut t = Thresholds::default();
        assert_eq!(t.of("facts"), 0.55);
        t.0.insert("facts".into(), 0.9);
        assert_eq!(t.of("facts"), 0.9);
        assert_eq!(t.of("judge"), 0.75);
    }
}
