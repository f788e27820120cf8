//! Auto-rollout decisions shared by replicas. Each replica decides from the verdicts in the
//! store, which replicas share (PostgreSQL, or one SQLite file on one host), and stores what it
//! decided; every `rollout_sync_ms` each replica reads the stored decisions back and follows
//! one that is newer than the decision it knows. A replica that takes no shadow samples (or
//! has not scored enough since it started) so serves what the others decided within one sync
//! period, and a restarted replica starts from the stored decision.

use std::sync::Arc;

use super::store::RouteState;
use super::Shadow;
use crate::config::Leg;

/// An auto route's serving decision and when it was taken (`RouteState::changed_ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Decided {
    pub leg: Leg,
    pub at_ms: i64,
}

impl Decided {
    /// The stored decision (originals, never decided, when there is none).
    pub fn stored(state: Option<&RouteState>) -> Self {
        match state {
            Some(s) => Self {
                leg: if s.serving == "compressed" {
                    Leg::Compressed
                } else {
                    Leg::Original
                },
                at_ms: s.changed_ms,
            },
            None => Self {
                leg: Leg::Original,
                at_ms: 0,
            },
        }
    }
}

impl Shadow {
    /// Reads the auto routes' stored decisions every `rollout_sync` and follows newer ones,
    /// until the shadow runtime stops. A store that cannot be read is tried again next period.
    pub(super) async fn follow_rollouts(self: Arc<Self>, routes: Vec<String>) {
        let mut ticks = tokio::time::interval(self.settings.rollout_sync);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let names = routes.clone();
            let stored = self
                .with_store(move |s| {
                    names
                        .iter()
                        .map(|name| s.route_state(name))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await;
            let Ok(stored) = stored else {
                continue;
            };
            for state in stored.into_iter().flatten() {
                self.follow(&state);
            }
        }
    }

    /// Adopts `state` when it is newer than the route's known decision.
    fn follow(&self, state: &RouteState) {
        let Ok(mut serving) = self.serving.write() else {
            return;
        };
        let stored = Decided::stored(Some(state));
        let known = serving.get(&state.route).copied();
        if known.is_some_and(|k| stored.at_ms <= k.at_ms) {
            return;
        }
        serving.insert(state.route.clone(), stored);
        if known.map(|k| k.leg) != Some(stored.leg) {
            tracing::warn!(
                route = %state.route,
                serving = stored.leg.as_str(),
                net_pass_rate = state.pass_rate,
                "auto-rollout: following the decision another replica stored"
            );
        }
    }
}
