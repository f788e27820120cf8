//! The shadow scorer: a task on the shadow runtime that takes samples off the queue and, up to
//! `[shadow] scorers` at once, awaits each sample's background legs, stores the pair, scores it
//! with the equivalence gates and, on `rollout = "auto"` routes, revisits what the route serves
//! (one decision at a time). Store access goes through the blocking pool.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::store::{self, RouteState, Sample, SampleKind, ShadowStore};
use super::{domain_of, now_ms, rollout, Decided, LegAnswer, Pending, Shadow};
use crate::config::{Leg, RawPrice, Rollout};
use crate::equivalence::{failed_gates, Answer, Scorer};

impl Shadow {
    pub(super) async fn with_store<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn ShadowStore) -> Result<T, store::StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = store
                .lock()
                .map_err(|_| "store lock poisoned".to_string())?;
            op(guard.as_mut()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    pub(super) async fn run_scorer(
        self: Arc<Self>,
        mut jobs: mpsc::Receiver<Pending>,
        scorer: Scorer,
        rollouts: HashMap<String, Rollout>,
    ) {
        // Samples a previous process stored but did not get to score (only with their text:
        // hashes cannot be scored).
        if self.settings.store_content {
            if let Ok(unscored) = self.with_store(|s| s.unscored()).await {
                for sample in unscored {
                    let route = sample.route.clone();
                    let judge_cost = self.score_and_record(&scorer, sample).await;
                    self.charge(&route, judge_cost);
                }
            }
        }
        // Up to `scorers` samples at once: a slow leg or judge call does not hold up the samples
        // queued behind it. When every slot is busy the queue fills and the proxy drops (and
        // counts) new samples — never a client's request.
        let scorer = Arc::new(scorer);
        let rollouts = Arc::new(rollouts);
        // Rollout decisions are read-decide-write on the store: one at a time.
        let deciding = Arc::new(tokio::sync::Mutex::new(()));
        let slots = Arc::new(Semaphore::new(self.settings.scorers));
        let mut running = JoinSet::new();
        while let Some(pending) = jobs.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (this, scorer) = (self.clone(), scorer.clone());
            let (rollouts, deciding) = (rollouts.clone(), deciding.clone());
            running.spawn(async move {
                let route = pending.route.clone();
                let reserved = pending.reserved_usd;
                let actual = this.complete(&scorer, pending).await;
                if let Some(Rollout::Auto {
                    min_samples,
                    min_pass_rate,
                }) = rollouts.get(&route)
                {
                    let _one_at_a_time = deciding.lock().await;
                    this.revisit_rollout(&route, *min_samples, *min_pass_rate)
                        .await;
                }
                this.release(&route, reserved, actual);
                drop(slot);
            });
            // Reap finished samples so the set does not grow with the traffic.
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    }

    /// Awaits the background legs, stores the pairs and scores them; returns the shadowing cost.
    async fn complete(&self, scorer: &Scorer, p: Pending) -> f64 {
        let price = self.settings.price(&p.model);
        let other = match p.other.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(route = %p.route, error = %e, "shadow leg failed");
                self.stats.leg_failures.fetch_add(1, Ordering::Relaxed);
                return 0.0;
            }
            Err(_) => return 0.0,
        };
        let mut spent = cost(
            price,
            other.answer.prompt_tokens,
            other.answer.completion_tokens,
        );
        let (original, compressed) = match p.served {
            Leg::Original => (&p.client, &other),
            Leg::Compressed => (&other, &p.client),
        };
        let saved = match p.served {
            Leg::Compressed => cost(
                price,
                p.tokens_original.saturating_sub(p.tokens_compressed),
                0,
            ),
            Leg::Original => 0.0,
        };
        let keep = self.settings.store_content;
        let base = |kind: SampleKind, candidate: &LegAnswer, shadow_cost: f64| Sample {
            id: None,
            created_ms: now_ms(),
            source: "live".into(),
            route: p.route.clone(),
            model: p.model.clone(),
            compressor: p.compressor.clone(),
            served: p.served.as_str().into(),
            kind,
            domain: domain_of(&p.request_text).into(),
            tokens_original: p.tokens_original,
            tokens_compressed: p.tokens_compressed,
            request: fingerprint(&p.request_text, keep),
            reference: fingerprint(&original.answer.text, keep),
            candidate: fingerprint(&candidate.answer.text, keep),
            reference_tokens: (
                original.answer.prompt_tokens,
                original.answer.completion_tokens,
            ),
            candidate_tokens: (
                candidate.answer.prompt_tokens,
                candidate.answer.completion_tokens,
            ),
            reference_ms: original.latency_ms,
            candidate_ms: candidate.latency_ms,
            shadow_cost_usd: shadow_cost,
            saved_usd: if kind == SampleKind::Compression {
                saved
            } else {
                0.0
            },
            scores: None,
            passed: None,
            failed_gates: Vec::new(),
        };
        let mut pairs = vec![(
            base(SampleKind::Compression, compressed, spent),
            original.answer.clone(),
            compressed.answer.clone(),
        )];
        if let Some(noise) = p.noise {
            if let Ok(Ok(second)) = noise.await {
                let noise_cost = cost(
                    price,
                    second.answer.prompt_tokens,
                    second.answer.completion_tokens,
                );
                spent += noise_cost;
                pairs.push((
                    base(SampleKind::Noise, &second, noise_cost),
                    original.answer.clone(),
                    second.answer.clone(),
                ));
            }
        }
        for (mut sample, reference, candidate) in pairs {
            let row = sample.clone();
            match self.with_store(move |s| s.insert(&row)).await {
                Ok(id) => {
                    sample.id = Some(id);
                    self.stats.stored.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store a shadow sample; sampling paused");
                    self.pause_sampling();
                    continue;
                }
            }
            let scores = scorer.score(&p.request_text, &reference, &candidate).await;
            spent += self
                .record_scores(sample.id, &sample.route, &scores, scorer)
                .await;
        }
        spent
    }

    /// Scores a sample stored earlier; returns what its judge call cost.
    async fn score_and_record(&self, scorer: &Scorer, sample: Sample) -> f64 {
        let text = |t: &str| Answer {
            text: t.to_string(),
            ..Answer::default()
        };
        let scores = scorer
            .score(
                &sample.request,
                &text(&sample.reference),
                &text(&sample.candidate),
            )
            .await;
        self.record_scores(sample.id, &sample.route, &scores, scorer)
            .await
    }

    /// Stores a sample's scores and returns what its judge call cost (priced as `judge_model`;
    /// nothing without a price), which the sample's shadowing cost includes.
    async fn record_scores(
        &self,
        id: Option<i64>,
        route: &str,
        scores: &crate::equivalence::GateScores,
        scorer: &Scorer,
    ) -> f64 {
        let judge_cost = match (scores.model_tokens, &self.settings.judge_model) {
            (Some((prompt, completion)), Some(model)) => {
                cost(self.settings.price(model), prompt, completion)
            }
            _ => 0.0,
        };
        let Some(id) = id else { return judge_cost };
        let failed: Vec<String> = failed_gates(scores, &scorer.thresholds)
            .into_iter()
            .map(str::to_string)
            .collect();
        let passed = failed.is_empty();
        if let Some(m) = crate::metrics::recording() {
            m.shadow_samples
                .with_label_values(&[route, if passed { "passed" } else { "failed" }])
                .inc();
        }
        let scores = scores.clone();
        match self
            .with_store(move |s| s.set_scores(id, &scores, passed, &failed, judge_cost))
            .await
        {
            Ok(()) => {
                self.stats.scored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "cannot store shadow scores"),
        }
        judge_cost
    }

    async fn revisit_rollout(&self, route: &str, min_samples: usize, min_pass_rate: f64) {
        let name = route.to_string();
        let verdicts = self
            .with_store(move |s| {
                Ok((
                    s.recent_verdicts(&name, SampleKind::Compression, min_samples)?,
                    s.recent_verdicts(&name, SampleKind::Noise, min_samples)?,
                ))
            })
            .await;
        let Ok((compression, noise)) = verdicts else {
            return;
        };
        let current = self.serving(route).unwrap_or(Leg::Original);
        let decision = rollout::decide(current, &compression, &noise, min_samples, min_pass_rate);
        if decision.serve == current {
            return;
        }
        tracing::warn!(
            route,
            from = current.as_str(),
            to = decision.serve.as_str(),
            net_pass_rate = decision.net_pass_rate,
            "auto-rollout changed what the route serves"
        );
        let changed_ms = now_ms();
        if let Ok(mut serving) = self.serving.write() {
            serving.insert(
                route.to_string(),
                Decided {
                    leg: decision.serve,
                    at_ms: changed_ms,
                },
            );
        }
        let state = RouteState {
            route: route.to_string(),
            serving: decision.serve.as_str().into(),
            changed_ms,
            pass_rate: decision.net_pass_rate.unwrap_or(0.0),
            samples: decision.samples as u64,
        };
        if let Err(e) = self.with_store(move |s| s.save_route_state(&state)).await {
            tracing::error!(error = %e, "cannot persist the rollout state");
        }
    }
}

fn cost(price: Option<RawPrice>, prompt: u64, completion: u64) -> f64 {
    price.map_or(0.0, |p| {
        (prompt as f64 * p.input + completion as f64 * p.output) / 1e6
    })
}

fn fingerprint(text: &str, keep: bool) -> String {
    if keep {
        text.to_string()
    } else {
        format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }
}
