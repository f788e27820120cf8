//! Shadow A/B on live traffic. For a sampled request the proxy sends the client's leg as usual
//! and hands the other leg (and, with a noise floor, a second original) to this module, which runs
//! them on its own runtime so no client waits on them. When every answer is in, the pair is
//! stored, scored by the equivalence gates, and — on `rollout = "auto"` routes — the route's
//! serving decision is revisited. The spend cap is enforced when a request is sampled, with the
//! estimate reserved up front and corrected by the answers' usage.
//!
//! Phase order for one sample: `try_sample` (rate, budget) → proxy spawns legs with `spawn_leg`
//! → proxy relays its own leg and `submit`s the client's answer → the scorer task awaits the legs,
//! stores, scores, updates rollout. `drain` waits for all of that at shutdown.

mod follow;
mod postgres;
pub mod report;
pub mod rollout;
mod scoring;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Leg, Rollout, Route, ShadowSettings};
use crate::equivalence::{Answer, Embedder, GateParts, JudgeClient, Scorer};
use follow::Decided;
pub use postgres::PostgresStore;
use store::{open_store, Sample, ShadowStore};

/// One answer of a leg and how long it took.
#[derive(Debug, Clone)]
pub struct LegAnswer {
    pub answer: Answer,
    pub latency_ms: f64,
}

pub type LegHandle = JoinHandle<Result<LegAnswer, String>>;

/// A sampled request whose client leg is answered; the other legs may still be in flight.
pub struct Pending {
    pub route: String,
    pub model: String,
    pub compressor: String,
    pub served: Leg,
    pub request_text: String,
    pub tokens_original: u64,
    pub tokens_compressed: u64,
    pub client: LegAnswer,
    pub other: LegHandle,
    /// A second original, for the noise floor.
    pub noise: Option<LegHandle>,
    pub reserved_usd: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct ShadowStats {
    pub sampled: AtomicU64,
    pub over_budget: AtomicU64,
    /// Not sampled: the route has a daily budget and the model (or the judge's) has no price,
    /// so the sample's cost could not be bounded.
    pub unpriced: AtomicU64,
    pub dropped: AtomicU64,
    pub leg_failures: AtomicU64,
    pub stored: AtomicU64,
    pub scored: AtomicU64,
    /// Samples the store refused (it was down); each pauses sampling for `STORE_PAUSE`.
    pub store_errors: AtomicU64,
    /// Requests not sampled because sampling was paused after a store error.
    pub paused: AtomicU64,
}

/// How long sampling stops after the store failed to take a sample: legs that cannot be stored
/// would be paid for in vain.
const STORE_PAUSE: Duration = Duration::from_secs(10);

pub struct Shadow {
    settings: ShadowSettings,
    runtime: tokio::runtime::Runtime,
    queue: mpsc::Sender<Pending>,
    store: Arc<Mutex<Box<dyn ShadowStore>>>,
    /// Serving decision of each `rollout = "auto"` route, and when it was taken (by this
    /// replica or another: `follow`).
    serving: RwLock<HashMap<String, Decided>>,
    /// Per route: UTC day and the shadowing spend (reserved + actual) on it.
    spend: Mutex<HashMap<String, (i64, f64)>>,
    in_flight: AtomicUsize,
    /// Sampling is paused until then (the store failed).
    paused_until: Mutex<Option<Instant>>,
    pub stats: ShadowStats,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const DAY_MS: i64 = 86_400_000;

/// A route's shadowing spend for the current UTC day (a new day starts at zero).
fn todays_spend<'a>(spend: &'a mut HashMap<String, (i64, f64)>, route: &str) -> &'a mut f64 {
    let today = now_ms() / DAY_MS;
    let entry = spend.entry(route.to_string()).or_insert((today, 0.0));
    if entry.0 != today {
        *entry = (today, 0.0);
    }
    &mut entry.1
}

/// `nl`, `code` or `mixed`, from the request text.
pub fn domain_of(text: &str) -> &'static str {
    if !text.contains("```") {
        return "nl";
    }
    let prose: usize = text.split("```").step_by(2).map(|p| p.trim().len()).sum();
    if prose > 200 {
        "mixed"
    } else {
        "code"
    }
}

impl Shadow {
    /// Opens the store, loads the embedding model and each auto route's persisted state, and
    /// starts the scorer on a dedicated runtime.
    pub fn start(
        settings: ShadowSettings,
        routes: &[Route],
        judge: Option<Arc<dyn JudgeClient>>,
    ) -> Result<Arc<Self>, String> {
        let mut store = open_store(&settings.store).map_err(|e| e.to_string())?;
        let embedder = match &settings.embedding_model {
            Some(dir) => Some(Arc::new(Embedder::load(dir).map_err(|e| e.to_string())?)),
            None => None,
        };
        let mut serving = HashMap::new();
        let mut spend = HashMap::new();
        let today = now_ms() / DAY_MS;
        for route in routes.iter().filter(|r| r.shadow.is_some()) {
            if matches!(route.compression.rollout, Rollout::Auto { .. }) {
                let state = store.route_state(&route.name).map_err(|e| e.to_string())?;
                serving.insert(route.name.clone(), Decided::stored(state.as_ref()));
            }
            let spent = store
                .spent_since(&route.name, today * DAY_MS)
                .map_err(|e| e.to_string())?;
            spend.insert(route.name.clone(), (today, spent));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shadow")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (queue, jobs) = mpsc::channel(settings.queue);
        let scorer = Scorer::new(&GateParts { embedder, judge }, settings.thresholds.clone());
        let rollouts: HashMap<String, Rollout> = routes
            .iter()
            .map(|r| (r.name.clone(), r.compression.rollout))
            .collect();
        let shadow = Arc::new(Self {
            settings,
            runtime,
            queue,
            store: Arc::new(Mutex::new(store)),
            serving: RwLock::new(serving),
            spend: Mutex::new(spend),
            in_flight: AtomicUsize::new(0),
            paused_until: Mutex::new(None),
            stats: ShadowStats::default(),
        });
        let auto_routes: Vec<String> = rollouts
            .iter()
            .filter(|(_, r)| matches!(r, Rollout::Auto { .. }))
            .map(|(name, _)| name.clone())
            .collect();
        let worker = shadow.clone();
        shadow
            .runtime
            .spawn(async move { worker.run_scorer(jobs, scorer, rollouts).await });
        if !auto_routes.is_empty() {
            let follower = shadow.clone();
            shadow
                .runtime
                .spawn(async move { follower.follow_rollouts(auto_routes).await });
        }
        Ok(shadow)
    }

    pub fn settings(&self) -> &ShadowSettings {
        &self.settings
    }

    /// The leg an auto-rollout route serves now; `None` for manual routes.
    pub fn serving(&self, route: &str) -> Option<Leg> {
        Some(self.serving.read().ok()?.get(route)?.leg)
    }

    /// Whether to shadow this request: the route samples it and its daily budget has room for
    /// its estimated cost, which is returned and stays reserved until the answers' usage
    /// replaces it. `estimate_usd` runs only for a request the sample rate picked; `None` (an
    /// unpriced model) is never sampled on a route with a budget, since its cost would count as
    /// $0 and the budget would never stop it.
    pub fn try_sample(
        &self,
        route: &Route,
        estimate_usd: impl FnOnce() -> Option<f64>,
    ) -> Option<f64> {
        let cfg = route.shadow.as_ref()?;
        if cfg.sample_rate <= 0.0 || fastrand::f64() >= cfg.sample_rate {
            return None;
        }
        let paused = self
            .paused_until
            .lock()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| Instant::now() < until);
        if paused {
            self.stats.paused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let estimate = estimate_usd();
        let estimate = match (cfg.max_daily_usd, estimate) {
            (Some(_), None) => {
                self.stats.unpriced.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            (_, estimate) => estimate.unwrap_or(0.0),
        };
        if let Some(cap) = cfg.max_daily_usd {
            let mut spend = self.spend.lock().ok()?;
            let today = todays_spend(&mut spend, &route.name);
            if *today + estimate > cap {
                self.stats.over_budget.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            *today += estimate;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.stats.sampled.fetch_add(1, Ordering::Relaxed);
        Some(estimate)
    }

    /// The store failed to take a sample: stop sampling for a while.
    fn pause_sampling(&self) {
        self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut until) = self.paused_until.lock() {
            *until = Some(Instant::now() + STORE_PAUSE);
        }
    }

    /// Runs a background leg on the shadow runtime.
    pub fn spawn_leg<F>(&self, leg: F) -> LegHandle
    where
        F: Future<Output = Result<LegAnswer, String>> + Send + 'static,
    {
        self.runtime.spawn(leg)
    }

    /// Hands a sampled request to the scorer; a full queue drops it (counted).
    pub fn submit(&self, pending: Pending) {
        if let Err(e) = self.queue.try_send(pending) {
            let pending = match e {
                mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
            };
            pending.other.abort();
            if let Some(noise) = pending.noise {
                noise.abort();
            }
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.release(&pending.route, pending.reserved_usd, 0.0);
        }
    }

    /// A sampled request that will not be submitted (the client leg failed).
    pub fn abandon(&self, route: &str, reserved_usd: f64, legs: Vec<LegHandle>) {
        for leg in legs {
            leg.abort();
        }
        if let Some(m) = crate::metrics::recording() {
            m.shadow_samples
                .with_label_values(&[route, "abandoned"])
                .inc();
        }
        self.release(route, reserved_usd, 0.0);
    }

    /// Adds spend that was never reserved (scoring samples a previous process stored).
    fn charge(&self, route: &str, usd: f64) {
        if let Ok(mut spend) = self.spend.lock() {
            *todays_spend(&mut spend, route) += usd;
        }
    }

    fn release(&self, route: &str, reserved: f64, actual: f64) {
        if let Some(m) = crate::metrics::recording().filter(|_| actual > 0.0) {
            m.shadow_spend_usd
                .with_label_values(&[route])
                .inc_by(actual);
        }
        if let Ok(mut spend) = self.spend.lock() {
            let today = todays_spend(&mut spend, route);
            *today = (*today - reserved + actual).max(0.0);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until every sampled request has been stored (and scored), up to `timeout`.
    /// Returns how many were still in flight.
    pub fn drain(&self, timeout: Duration) -> usize {
        let started = Instant::now();
        while self.in_flight.load(Ordering::SeqCst) > 0 && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stored samples of a route (all routes with `None`) since a time, read on the blocking
    /// pool so the caller's I/O thread never waits on SQLite.
    pub async fn samples(&self, route: Option<&str>, since_ms: i64) -> Result<Vec<Sample>, String> {
        let route = route.map(str::to_string);
        self.with_store(move |s| s.samples(route.as_deref(), since_ms))
            .await
    }
}
