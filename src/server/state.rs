//! The composition root: everything a request needs, built once from a validated [`Config`] —
//! the compression pipeline with every compressor the configuration can run
//! (`compress::registry`), the shadow runtime with its judge, the connection pools — and the part
//! that changes while the process runs ([`Live`]: routes with the admin API's overrides applied,
//! upstreams, the model list), swapped atomically on `SIGHUP`, `POST /admin/reload` and
//! `PATCH /admin/routes/{name}`. A request loads [`Live`] once and uses that snapshot
//! throughout, so a change never splits one request between two configurations, and requests in
//! flight finish on the one they started with. `condenser-eval` builds its compressors from the
//! same registry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora::connectors::http::Connector;
use serde_json::Value;

use super::judge::RouteJudge;
use super::upstream::Upstream;
use crate::compress::{registry, CompressorKind, Pipeline, Tokenizer};
use crate::config::{self, Config, ConfigError, Leg, ServerSettings};
use crate::control::{ControlError, Overrides};
use crate::equivalence::JudgeClient;
use crate::routing::Router;
use crate::shadow::Shadow;

/// What can change while the process runs.
pub struct Live {
    /// The configuration file as last loaded, before overrides.
    pub config: Config,
    pub overrides: Overrides,
    /// The file's routes with the overrides applied.
    pub router: Router,
    pub upstreams: Vec<Upstream>,
    /// The `GET /v1/models` body.
    pub models_body: Vec<u8>,
    /// Concurrency and rate limits (their counts restart when the configuration is reloaded).
    pub limits: super::limits::Limits,
}

impl Live {
    fn build(config: Config, overrides: Overrides) -> Self {
        let routes = overrides.apply(&config.routes);
        let router = Router::new(routes, config.server.default_route);
        let client_auth = config.auth.is_some();
        let upstreams = config
            .upstreams
            .iter()
            .cloned()
            .map(|u| Upstream::new(u).with_client_auth(client_auth))
            .collect();
        Self {
            models_body: super::health::models_body(&config),
            limits: super::limits::Limits::new(&config),
            config,
            overrides,
            router,
            upstreams,
        }
    }
}

/// Everything a request needs.
pub struct AppState {
    live: ArcSwap<Live>,
    /// `[server]` as the process started with it (listeners, threads: a restart changes them).
    pub server: ServerSettings,
    pub pipeline: Pipeline,
    pub connector: Connector,
    /// `[shadow]`: sampling, background legs and scoring; `None` when not configured.
    pub shadow: Option<Arc<Shadow>>,
    /// Connection pool of the shadow runtime (background legs and the judge).
    pub shadow_connector: Arc<Connector>,
    /// The file reloads read; `None`: reloads are refused.
    config_path: Option<PathBuf>,
    /// Serialises changes (patch, reload), so one never overwrites another's.
    changes: Mutex<()>,
    /// `server.overrides_store`: overrides shared by replicas; `None`: kept in the file.
    pub(super) shared_overrides: Option<super::shared_overrides::SharedOverrides>,
}

impl AppState {
    /// Builds the runtime state: loads configured local models (which can fail, naming the
    /// section), the persisted route overrides, starts the shadow runtime, and warms what the
    /// first requests would otherwise pay for (the BPE encoding).
    pub fn new(config: Config, connector: Connector) -> Result<Self, String> {
        let compressors = registry::build_all(&config.compressors)?;
        let mut pipeline = Pipeline::new(config.server.compression_cache_bytes, compressors);
        if let Some(settings) = &config.shared_cache {
            let tier = crate::compress::shared::SharedTier::new(settings.clone())
                .map_err(|e| format!("shared_cache.url: {e}"))?;
            pipeline = pipeline.with_shared(Arc::new(tier), settings.key_secret);
        }
        let (shared_overrides, overrides) = super::shared_overrides::load(&config.server)?;
        let orphans = overrides.orphans(&config.routes);
        if !orphans.is_empty() {
            tracing::warn!(
                ?orphans,
                "route overrides for routes the file no longer defines are ignored"
            );
        }
        let live = Live::build(config, overrides);
        let shadow_connector = Arc::new(Connector::new(None));
        let shadow = match &live.config.shadow {
            None => None,
            Some(settings) => {
                let judge = match &settings.judge_model {
                    None => None,
                    Some(model) => {
                        let route = live
                            .router
                            .select(None, Some(model))
                            .map_err(|e| format!("shadow.judge_model: {e}"))?;
                        let upstream = live.router.route(route).upstream;
                        let judge: Arc<dyn JudgeClient> = Arc::new(RouteJudge::new(
                            Upstream::new(live.config.upstreams[upstream].clone()),
                            shadow_connector.clone(),
                            model.clone(),
                        ));
                        Some(judge)
                    }
                };
                Some(Shadow::start(
                    settings.clone(),
                    live.router.routes(),
                    judge,
                )?)
            }
        };
        Tokenizer::warm_up();
        Ok(Self {
            server: live.config.server.clone(),
            live: ArcSwap::from_pointee(live),
            pipeline,
            connector,
            shadow,
            shadow_connector,
            config_path: None,
            changes: Mutex::new(()),
            shared_overrides,
        })
    }

    /// Where reloads read the configuration from.
    pub fn with_config_path(mut self, path: &Path) -> Self {
        self.config_path = Some(path.to_path_buf());
        self
    }

    /// The current routes and upstreams; hold the snapshot for the whole request.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Every route's effective settings and their sources.
    pub fn describe_routes(&self) -> Value {
        let live = self.live();
        let routes: Vec<Value> = live
            .router
            .routes()
            .iter()
            .map(|route| {
                let serving = self
                    .shadow
                    .as_ref()
                    .and_then(|s| s.serving(&route.name))
                    .map(|leg| leg == Leg::Compressed);
                live.overrides.describe(route, serving)
            })
            .collect();
        serde_json::json!({ "routes": routes })
    }

    /// Applies `patch` to route `name`, persists the overrides, and swaps the routes in.
    /// Returns the route's effective settings.
    pub fn patch_route(&self, name: &str, patch: &Value) -> Result<Value, ControlError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live();
        let mut overrides = live.overrides.clone();
        let available = |kind: CompressorKind| self.pipeline.has(kind);
        overrides.patch(&live.config.routes, name, patch, &available)?;
        match &self.shared_overrides {
            Some(shared) => shared.publish(&overrides),
            None => overrides.save(&self.server.overrides_file)?,
        }
        let next = Live::build(live.config.clone(), overrides);
        self.live.store(Arc::new(next));
        tracing::info!(route = name, %patch, "route changed through the admin API");
        Ok(self
            .describe_routes()
            .get("routes")
            .and_then(Value::as_array)
            .and_then(|routes| routes.iter().find(|r| r["name"] == name).cloned())
            .unwrap_or(Value::Null))
    }

    /// Serves `overrides`, which another replica stored (`shared_overrides`).
    pub(super) fn adopt_overrides(&self, overrides: Overrides) {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live();
        if live.overrides == overrides {
            return;
        }
        let next = Live::build(live.config.clone(), overrides);
        self.live.store(Arc::new(next));
        tracing::warn!("route overrides changed on another replica: now applied here");
    }

    /// Re-reads and validates the configuration file and swaps its routes and upstreams in. A
    /// file that does not validate is refused (the error names the key) and the running
    /// configuration stays. Returns the keys whose change only a restart applies.
    pub fn reload(&self) -> Result<Vec<String>, ControlError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.config_path else {
            return Err(ControlError::Invalid(ConfigError::invalid(
                "<reload>",
                "this process was not started from a configuration file",
            )));
        };
        let next = config::load(path)?;
        // The file was checked against the address it names; the socket bound is the one at
        // start-up (perhaps from `--listen`), and a reload cannot rebind it: a reload that
        // drops `[auth]` while a public address stays bound is refused.
        config::check_exposure(
            config::Listener::Public,
            self.server.listen,
            next.auth.is_some(),
            next.server.allow_unauthenticated,
        )?;
        for (i, route) in next.routes.iter().enumerate() {
            if !self.pipeline.has(route.compression.compressor) {
                let name = route.compression.compressor.name();
                return Err(ControlError::Invalid(ConfigError::invalid(
                    format!("routes[{i}].compression.compressor"),
                    format!("`{name}` is not loaded in this process: its model loads at start-up (restart)"),
                )));
            }
        }
        let live = self.live();
        let restart = restart_required(&live.config, &next);
        let overrides = live.overrides.clone();
        self.live.store(Arc::new(Live::build(next, overrides)));
        tracing::info!(path = %path.display(), ?restart, "configuration reloaded");
        Ok(restart)
    }
}

/// The sections a reload read but cannot apply to a running process.
fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let (a, b) = (&old.server, &new.server);
    let mut keys = Vec::new();
    for (key, changed) in [
        ("server.listen", a.listen != b.listen),
        ("server.admin_listen", a.admin_listen != b.admin_listen),
        ("server.threads", a.threads != b.threads),
        (
            "server.header_timeout_seconds",
            a.header_timeout_seconds != b.header_timeout_seconds,
        ),
        (
            "server.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "server.grace_period_seconds",
            a.grace_period_seconds != b.grace_period_seconds,
        ),
        (
            "server.compression_cache_bytes",
            a.compression_cache_bytes != b.compression_cache_bytes,
        ),
        ("server.admin_key_env", a.admin_key_env != b.admin_key_env),
        (
            "server.overrides_file",
            a.overrides_file != b.overrides_file,
        ),
        (
            "server.overrides_store",
            a.overrides_store != b.overrides_store || a.overrides_sync != b.overrides_sync,
        ),
        ("server.log_format", a.log_format != b.log_format),
        ("server.metrics", a.metrics != b.metrics),
        ("compressors", differs(&old.compressors, &new.compressors)),
        ("shadow", differs(&old.shadow, &new.shadow)),
        ("telemetry", differs(&old.telemetry, &new.telemetry)),
        (
            "shared_cache",
            differs(&old.shared_cache, &new.shared_cache),
        ),
    ] {
        if changed {
            keys.push(key.to_string());
        }
    }
    for route in &new.routes {
        let before = old.routes.iter().find(|r| r.name == route.name);
        if before.is_some_and(|r| r.compression.rollout != route.compression.rollout) {
            keys.push(format!("routes.{}.compression.rollout", route.name));
        }
    }
    keys
}
