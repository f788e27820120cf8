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

/// The leg a stored decision serves (originals when there is none).
pub(super) fn leg_of(state: Option<&RouteState>) -> Leg {
    match state.map(|s| s.serving.as_str()) {
        Some("compressed") => Leg::Compressed,
        _ => Leg::Original,
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
        let Ok(mut decided) = self.decided_ms.lock() else {
            return;
        };
        let known = decided.get(&state.route).copied().unwrap_or(0);
        if state.changed_ms <= known {
            return;
        }
        decided.insert(state.route.clone(), state.changed_ms);
        let leg = leg_of(Some(state));
        let Ok(mut serving) = self.serving.write() else {
            return;
        };
        if serving.insert(state.route.clone(), leg) != Some(leg) {
            tracing::warn!(
                route = %state.route,
                serving = leg.as_str(),
                net_pass_rate = state.pass_rate,
                "auto-rollout: following the decision another replica stored"
            );
        }
    }
}
