//! The equivalence gates, by name. A gate is one file implementing [`Gate`] and one line in
//! [`GATES`]: its name, its default pass threshold, and how it is built from what the scorer has
//! (the embedding model, the judge's client). Config validation (`[shadow.thresholds]`),
//! `condenser check`, the live scorer and `condenser-eval equivalence` read this list.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Answer, Embedder, JudgeClient};

/// Two answers to one request, the reference first.
#[derive(Debug, Clone, Copy)]
pub struct Case<'a> {
    /// The request's question (its latest user text).
    pub request: &'a str,
    pub reference: &'a Answer,
    pub candidate: &'a Answer,
}

/// One gate's finding on a pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateFinding {
    /// 0–1; below the gate's threshold fails. `None`: the gate could not score (see `error`).
    pub score: Option<f32>,
    /// Why the gate could not score; a gate that errs fails the sample.
    pub error: Option<String>,
    /// Facts of the reference the candidate lacks, as the gate saw them.
    pub missing_facts: Vec<String>,
    /// Prompt and completion tokens a model call cost (priced against the route's cap).
    pub model_tokens: Option<(u64, u64)>,
}

/// An equivalence gate.
#[async_trait]
pub trait Gate: Send + Sync {
    fn name(&self) -> &'static str;
    /// Compares the candidate with the reference (both non-empty, trimmed text answers).
    async fn check(&self, case: &Case<'_>) -> GateFinding;
}

/// What the scorer can build gates from.
#[derive(Clone, Default)]
pub struct GateParts {
    /// The embedding model (`shadow.embedding_model`); absent: no embedding gate.
    pub embedder: Option<Arc<Embedder>>,
    /// The judge's model client (`shadow.judge_model`); absent: no judge gate.
    pub judge: Option<Arc<dyn JudgeClient>>,
}

/// One registered gate.
pub struct GateSpec {
    pub name: &'static str,
    /// A score below this fails, unless `[shadow.thresholds]` says otherwise.
    pub default_threshold: f32,
    /// The gate, or `None` when what it needs is not configured.
    pub build: fn(&GateParts) -> Option<Arc<dyn Gate>>,
}

/// Every gate, in the order they run (cheapest first).
#[rustfmt::skip]
pub static GATES: &[GateSpec] = &[
    GateSpec { name: "facts", default_threshold: 0.55, build: |_| Some(Arc::new(super::facts::FactsGate)) },
    GateSpec { name: "embedding", default_threshold: 0.60, build: |p| Some(Arc::new(super::embedding::EmbeddingGate(p.embedder.clone()?))) },
    GateSpec { name: "judge", default_threshold: 0.75, build: |p| Some(Arc::new(super::judge::JudgeGate(p.judge.clone()?))) },
];

/// Every registered gate's name.
pub fn gate_names() -> Vec<&'static str> {
    GATES.iter().map(|g| g.name).collect()
}

/// The gates `parts` allows, in registry order.
pub fn build_gates(parts: &GateParts) -> Vec<Arc<dyn Gate>> {
    GATES.iter().filter_map(|g| (g.build)(parts)).collect()
}

/// Pass thresholds by gate name; a gate not listed uses its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Thresholds(pub BTreeMap<String, f32>);

impl Thresholds {
    /// The threshold of `gate`: configured, else the registry's default, else 1.
    pub fn of(&self, gate: &str) -> f32 {
        self.0.get(gate).copied().unwrap_or_else(|| {
            GATES
                .iter()
                .find(|g| g.name == gate)
                .map_or(1.0, |g| g.default_threshold)
        })
    }
}
