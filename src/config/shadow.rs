//! `[shadow]` (the store, the scorer, prices) and each route's `[routes.shadow]` and
//! `compression.rollout`: raw shapes as written, their validation, and the runtime types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

pub use crate::equivalence::Thresholds;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    /// Where samples are stored: a SQLite file (WAL mode), or a `postgres://user@host/db` URL
    /// shared by several replicas (its password from `PGPASSWORD`, never in the file).
    #[serde(default = "default_store")]
    pub store: String,
    /// Keep both answers' text; `false` keeps only their hashes.
    #[serde(default = "default_true")]
    pub store_content: bool,
    /// Samples waiting for their background legs or the scorer; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Samples scored at once: their legs are awaited and their judge calls made concurrently.
    #[serde(default = "default_scorers")]
    pub scorers: usize,
    /// How often auto-rollout decisions another replica stored are read back from the store
    /// and followed, in ms.
    #[serde(default = "default_rollout_sync_ms")]
    pub rollout_sync_ms: u64,
    /// Directory of all-MiniLM-L6-v2 (`scripts/fetch-embedder`); absent: no embedding gate.
    pub embedding_model: Option<String>,
    /// Model the judge gate asks, routed like a client request; absent: no judge gate.
    pub judge_model: Option<String>,
    #[serde(default)]
    pub thresholds: RawThresholds,
    /// USD per million tokens by model name (`*` at the end matches a prefix).
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
}

/// `[shadow.thresholds]`: pass thresholds by gate name (`equivalence::gates`); gates left out
/// keep their defaults.
pub type RawThresholds = BTreeMap<String, f32>;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub output: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteShadow {
    pub sample_rate: f64,
    #[serde(default)]
    pub serve: Leg,
    #[serde(default)]
    pub noise_floor: bool,
    pub max_daily_usd: Option<f64>,
}

/// Which version of a request a client gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    #[default]
    Original,
    Compressed,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Compressed => "compressed",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawRollout {
    /// `compression.enabled` decides.
    #[default]
    Manual,
    /// The route's shadow pass rate decides.
    Auto,
}

fn default_store() -> String {
    "condenser-shadow.db".into()
}
fn default_true() -> bool {
    true
}
fn default_queue() -> usize {
    256
}
fn default_scorers() -> usize {
    8
}
fn default_rollout_sync_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone)]
pub struct ShadowSettings {
    /// A SQLite path or a PostgreSQL URL (`shadow::store::open_store`).
    pub store: String,
    pub store_content: bool,
    pub queue: usize,
    pub scorers: usize,
    pub rollout_sync: std::time::Duration,
    pub embedding_model: Option<PathBuf>,
    pub judge_model: Option<String>,
    pub thresholds: Thresholds,
    pub prices: Vec<(String, RawPrice)>,
}

impl ShadowSettings {
    /// The price of `model`: an exact entry, else the longest matching `prefix*` entry.
    pub fn price(&self, model: &str) -> Option<RawPrice> {
        self.prices
            .iter()
            .find(|(k, _)| k == model)
            .or_else(|| {
                self.prices
                    .iter()
                    .filter(|(k, _)| k.strip_suffix('*').is_some_and(|p| model.starts_with(p)))
                    .max_by_key(|(k, _)| k.len())
            })
            .map(|(_, p)| *p)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteShadow {
    pub sample_rate: f64,
    pub serve: Leg,
    pub noise_floor: bool,
    pub max_daily_usd: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rollout {
    Manual,
    Auto {
        min_samples: usize,
        min_pass_rate: f64,
    },
}

/// Whether a `[shadow] store` location names a server database (PostgreSQL) rather than a
/// SQLite file.
pub fn is_server_store(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Refuses a database URL at `key` that carries a password (it belongs in `PGPASSWORD`).
pub(super) fn refuse_password(key: &str, url: &str) -> Result<(), ConfigError> {
    if super::url_userinfo(url).is_some_and(|u| u.contains(':')) {
        return Err(ConfigError::invalid(
            key,
            "carries a password: give it in PGPASSWORD instead",
        ));
    }
    Ok(())
}

pub fn validate_shadow(raw: &RawShadow) -> Result<ShadowSettings, ConfigError> {
    if is_server_store(&raw.store) {
        refuse_password("shadow.store", &raw.store)?;
    }
    if raw.queue == 0 {
        return Err(ConfigError::invalid("shadow.queue", "must be > 0"));
    }
    if raw.scorers == 0 {
        return Err(ConfigError::invalid("shadow.scorers", "must be > 0"));
    }
    if raw.rollout_sync_ms < 100 {
        return Err(ConfigError::invalid(
            "shadow.rollout_sync_ms",
            "must be >= 100",
        ));
    }
    for (name, &value) in &raw.thresholds {
        if !crate::equivalence::gate_names().contains(&name.as_str()) {
            return Err(ConfigError::invalid(
                format!("shadow.thresholds.{name}"),
                format!(
                    "no equivalence gate is called `{name}`; registered: {}",
                    crate::equivalence::gate_names().join(", ")
                ),
            ));
        }
        if !(0.0..=1.0).contains(&value) {
            return Err(ConfigError::invalid(
                format!("shadow.thresholds.{name}"),
                format!("must be in [0, 1], got {value}"),
            ));
        }
    }
    for (model, price) in &raw.prices {
        if price.input < 0.0 || price.output < 0.0 {
            return Err(ConfigError::invalid(
                format!("shadow.prices.{model}"),
                "prices must be >= 0",
            ));
        }
    }
    Ok(ShadowSettings {
        store: raw.store.clone(),
        store_content: raw.store_content,
        queue: raw.queue,
        scorers: raw.scorers,
        rollout_sync: std::time::Duration::from_millis(raw.rollout_sync_ms),
        embedding_model: raw.embedding_model.clone().map(PathBuf::from),
        judge_model: raw.judge_model.clone(),
        thresholds: Thresholds(raw.thresholds.clone()),
        prices: raw.prices.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    })
}

pub fn validate_route_shadow(raw: &RawRouteShadow, key: &str) -> Result<RouteShadow, ConfigError> {
    if !(0.0..=1.0).contains(&raw.sample_rate) {
        return Err(ConfigError::invalid(
            format!("{key}.sample_rate"),
            format!("must be in [0, 1], got {}", raw.sample_rate),
        ));
    }
    if raw.max_daily_usd.is_some_and(|usd| usd < 0.0) {
        return Err(ConfigError::invalid(
            format!("{key}.max_daily_usd"),
            "must be >= 0",
        ));
    }
    Ok(RouteShadow {
        sample_rate: raw.sample_rate,
        serve: raw.serve,
        noise_floor: raw.noise_floor,
        max_daily_usd: raw.max_daily_usd,
    })
}

pub fn validate_rollout(
    rollout: RawRollout,
    min_samples: usize,
    min_pass_rate: f64,
    key: &str,
) -> Result<Rollout, ConfigError> {
    match rollout {
        RawRollout::Manual => Ok(Rollout::Manual),
        RawRollout::Auto => {
            if min_samples == 0 {
                return Err(ConfigError::invalid(
                    format!("{key}.min_samples"),
                    "must be > 0",
                ));
            }
            if !(0.0..=1.0).contains(&min_pass_rate) {
                return Err(ConfigError::invalid(
                    format!("{key}.min_pass_rate"),
                    format!("must be in [0, 1], got {min_pass_rate}"),
                ));
            }
            Ok(Rollout::Auto {
                min_samples,
                min_pass_rate,
            })
        }
    }
}
