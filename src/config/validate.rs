//! Cross-field validation: turns a parsed [`RawConfig`] into runtime types, rejecting
//! configurations that parse but cannot work (a route naming a missing upstream, a ratio of 1.5).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::auth::{check_exposure, validate_auth, ClientKey, Listener};
use super::cache::validate_shared_cache;
use super::compressors::validate_local_model;
use super::passthrough::PathRules;
use super::paths::{confine, resolve_dirs};
use super::raw::{CacheScope, LogFormat, RawCompression, RawConfig, RawServer, RawTelemetry};
use super::shadow::{
    validate_rollout, validate_route_shadow, validate_shadow, Rollout, RouteShadow, ShadowSettings,
};
use super::tls::validate_tls;
use super::upstream::{validate_upstreams, UpstreamSettings};
use super::ConfigError;
use crate::compress::registry::{self, CompressorSpec};
use crate::compress::shared::SharedCacheSettings;
use crate::compress::{CompressionMode, CompressorKind, ModelSettings, PipelineSettings, Role};

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<Route>,
    /// `[compressors.NAME]`: the local model (and adapter) behind each model-backed compressor.
    pub compressors: BTreeMap<String, ModelSettings>,
    /// `[shadow]`: where samples are stored and how they are scored.
    pub shadow: Option<ShadowSettings>,
    /// `[telemetry]`: where traces go (`otlp_endpoint`) and how many (`sample_rate`).
    pub telemetry: RawTelemetry,
    /// `[auth]`: the client keys accepted; `None`: no client authentication.
    pub auth: Option<Vec<ClientKey>>,
    /// `[shared_cache]`: the Redis tier behind the compression cache.
    pub shared_cache: Option<SharedCacheSettings>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Index into [`Config::routes`].
    pub default_route: Option<usize>,
    pub threads: usize,
    pub grace_period_seconds: u64,
    pub compression_cache_bytes: u64,
    pub admin_listen: Option<SocketAddr>,
    pub admin_key_env: Option<String>,
    pub overrides_file: std::path::PathBuf,
    /// `server.overrides_store`: the shared PostgreSQL database of the overrides, if any.
    pub overrides_store: Option<String>,
    pub overrides_sync: std::time::Duration,
    pub log_format: LogFormat,
    pub metrics: bool,
    /// `server.tls`: certificate chain and key files of the HTTPS listener.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub allow_unauthenticated: bool,
    pub max_in_flight: usize,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub max_messages: usize,
    pub keepalive_timeout_seconds: u64,
    pub body_timeout_seconds: u64,
    pub header_timeout_seconds: u64,
    pub max_connections: usize,
    pub compression_cache_scope: CacheScope,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub model_patterns: Vec<String>,
    pub models: GlobSet,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Upstreams tried in order after `upstream` fails before answering.
    pub fallbacks: Vec<usize>,
    pub compression: CompressionSettings,
    /// `[routes.shadow]`: sampled requests also sent in their other version and compared.
    pub shadow: Option<RouteShadow>,
    /// Other `/v1/*` endpoints forwarded through this route (`access::may_pass_through`).
    pub passthrough: Option<PathRules>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompressionSettings {
    pub enabled: bool,
    pub compressor: CompressorKind,
    pub min_tokens: usize,
    pub target_ratio: f64,
    pub roles: Vec<Role>,
    pub timeout_ms: u64,
    pub mode: CompressionMode,
    pub rollout: Rollout,
    /// Largest request (bytes of message text) compressed.
    pub max_bytes: usize,
}

impl ServerSettings {
    /// Refuses to serve with `admin_key_env` naming an unset variable: that used to leave the
    /// admin API open for reads. Checked by `serve` and `check`, not by every reader of the
    /// file (`condenser routes` and `report` need no admin key).
    pub fn require_admin_key(&self) -> Result<(), ConfigError> {
        match &self.admin_key_env {
            Some(var) if std::env::var(var).map_or(true, |v| v.is_empty()) => {
                Err(ConfigError::invalid(
                    "server.admin_key_env",
                    format!("the variable {var} is not set"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// How long a request body may take to arrive.
    pub fn body_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.body_timeout_seconds)
    }
}

impl CompressionSettings {
    /// What the compression pipeline reads of these settings, for a request whose cache
    /// entries `scope` may share (`PipelineSettings::scope`).
    pub fn pipeline<'a>(&'a self, scope: &'a str) -> PipelineSettings<'a> {
        PipelineSettings {
            roles: &self.roles,
            min_tokens: self.min_tokens,
            target_ratio: self.target_ratio,
            timeout_ms: self.timeout_ms,
            mode: self.mode,
            scope,
        }
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
        ConfigError::invalid(
            "server.listen",
            format!("`{}` is not an IP:port address", raw.server.listen),
        )
    })?;
    let admin_listen = match &raw.server.admin_listen {
        None => None,
        Some(addr) => Some(addr.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "server.admin_listen",
                format!("`{addr}` is not an IP:port address"),
            )
        })?),
    };
    if admin_listen == Some(listen) {
        return Err(ConfigError::invalid(
            "server.admin_listen",
            "must differ from server.listen",
        ));
    }
    if raw.server.max_body_bytes == 0 {
        return Err(ConfigError::invalid("server.max_body_bytes", "must be > 0"));
    }

    let upstreams = validate_upstreams(&raw.upstreams)?;

    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut route_names = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        if !route_names.insert(r.name.as_str()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("duplicate route `{}`", r.name),
            ));
        }
        let upstream = upstreams
            .iter()
            .position(|u| u.name == r.upstream)
            .ok_or_else(|| {
                ConfigError::invalid(
                    key("upstream"),
                    format!("no upstream named `{}`", r.upstream),
                )
            })?;
        let mut fallbacks = Vec::with_capacity(r.fallbacks.len());
        for name in &r.fallbacks {
            let index = upstreams
                .iter()
                .position(|u| &u.name == name)
                .filter(|i| *i != upstream && !fallbacks.contains(i))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        key("fallbacks"),
                        format!("`{name}` is not another configured upstream"),
                    )
                })?;
            fallbacks.push(index);
        }
        let mut globs = GlobSetBuilder::new();
        for (j, pattern) in r.models.iter().enumerate() {
            let glob = Glob::new(pattern).map_err(|e| {
                ConfigError::invalid(format!("routes[{i}].models[{j}]"), e.to_string())
            })?;
            globs.add(glob);
        }
        let models = globs
            .build()
            .map_err(|e| ConfigError::invalid(key("models"), e.to_string()))?;
        let compression =
            validate_compression(&r.compression, &format!("routes[{i}].compression"))?;
        let shadow = r
            .shadow
            .as_ref()
            .map(|s| validate_route_shadow(s, &key("shadow")))
            .transpose()?;
        if matches!(compression.rollout, Rollout::Auto { .. }) && shadow.is_none() {
            return Err(ConfigError::invalid(
                key("compression.rollout"),
                "`auto` decides from shadow samples: add a [routes.shadow] section",
            ));
        }
        if shadow.is_some() && raw.shadow.is_none() {
            return Err(ConfigError::invalid(
                key("shadow"),
                "needs a top-level [shadow] section (store, gates)",
            ));
        }
        let passthrough = r
            .passthrough
            .as_ref()
            .map(|rules| PathRules::parse(rules, &key("passthrough")))
            .transpose()?;
        routes.push(Route {
            name: r.name.clone(),
            model_patterns: r.models.clone(),
            models,
            upstream,
            fallbacks,
            compression,
            shadow,
            passthrough,
        });
    }

    let mut compressors = BTreeMap::new();
    for (name, section) in &raw.compressors {
        let spec = registry::spec(name)
            .filter(|s| s.needs_model())
            .ok_or_else(|| {
                let model_backed: Vec<_> = registry::COMPRESSORS
                    .iter()
                    .filter(|s| s.needs_model())
                    .map(|s| s.name)
                    .collect();
                ConfigError::invalid(
                    format!("compressors.{name}"),
                    format!(
                        "no model-backed compressor is called `{name}`; registered: {}",
                        model_backed.join(", ")
                    ),
                )
            })?;
        compressors.insert(spec.name.to_string(), validate_local_model(section, spec)?);
    }
    for (i, route) in routes.iter().enumerate() {
        let name = route.compression.compressor.name();
        if route
            .compression
            .compressor
            .spec()
            .is_some_and(CompressorSpec::needs_model)
            && !compressors.contains_key(name)
        {
            return Err(ConfigError::invalid(
                format!("routes[{i}].compression.compressor"),
                format!("`{name}` needs a [compressors.{name}] section naming its model"),
            ));
        }
    }

    let model_dirs = resolve_dirs(&raw.server.model_dirs)?;
    for (name, settings) in compressors.iter().filter(|(_, s)| s.remote.is_none()) {
        confine(
            &format!("compressors.{name}.model"),
            &settings.model,
            &model_dirs,
        )?;
        if let Some((lora, _)) = &settings.lora {
            confine(&format!("compressors.{name}.lora"), lora, &model_dirs)?;
        }
    }
    let shadow = raw.shadow.as_ref().map(validate_shadow).transpose()?;
    if let Some(embedder) = shadow.as_ref().and_then(|s| s.embedding_model.as_ref()) {
        confine("shadow.embedding_model", embedder, &model_dirs)?;
    }

    let route_names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
    let auth = raw
        .auth
        .as_ref()
        .map(|a| validate_auth(a, &route_names))
        .transpose()?;
    let allow_open = raw.server.allow_unauthenticated;
    check_exposure(Listener::Public, listen, auth.is_some(), allow_open)?;
    if let Some(admin) = admin_listen {
        let keyed = raw.server.admin_key_env.is_some();
        check_exposure(Listener::Admin, admin, keyed, allow_open)?;
    }
    for (key, value) in [
        (
            "server.keepalive_timeout_seconds",
            raw.server.keepalive_timeout_seconds,
        ),
        (
            "server.body_timeout_seconds",
            raw.server.body_timeout_seconds,
        ),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "must be > 0"));
        }
    }

    let default_route = match &raw.server.default_route {
        None => None,
        Some(name) => Some(routes.iter().position(|r| &r.name == name).ok_or_else(|| {
            ConfigError::invalid("server.default_route", format!("no route named `{name}`"))
        })?),
    };

    Ok(Config {
        server: ServerSettings {
            listen,
            max_body_bytes: raw.server.max_body_bytes,
            default_route,
            threads: raw.server.threads,
            grace_period_seconds: raw.server.grace_period_seconds,
            compression_cache_bytes: raw.server.compression_cache_bytes,
            admin_listen,
            admin_key_env: raw.server.admin_key_env.clone(),
            overrides_file: raw.server.overrides_file.clone().into(),
            overrides_store: validate_overrides_store(&raw.server)?,
            overrides_sync: std::time::Duration::from_millis(raw.server.overrides_sync_ms),
            log_format: raw.server.log_format,
            metrics: raw.server.metrics,
            allow_unauthenticated: raw.server.allow_unauthenticated,
            max_in_flight: raw.server.max_in_flight,
            max_header_count: raw.server.max_header_count,
            max_header_bytes: raw.server.max_header_bytes,
            max_messages: raw.server.max_messages,
            keepalive_timeout_seconds: raw.server.keepalive_timeout_seconds,
            body_timeout_seconds: raw.server.body_timeout_seconds,
            header_timeout_seconds: raw.server.header_timeout_seconds,
            max_connections: raw.server.max_connections,
            compression_cache_scope: raw.server.compression_cache_scope,
            tls: match &raw.server.tls {
                None => None,
                Some(tls) => Some(validate_tls(tls)?),
            },
        },
        upstreams,
        routes,
        compressors,
        shadow,
        telemetry: validate_telemetry(&raw.telemetry)?,
        auth,
        shared_cache: raw
            .shared_cache
            .as_ref()
            .map(validate_shared_cache)
            .transpose()?,
    })
}

fn validate_overrides_store(raw: &RawServer) -> Result<Option<String>, ConfigError> {
    if raw.overrides_sync_ms < 100 {
        return Err(ConfigError::invalid(
            "server.overrides_sync_ms",
            "must be >= 100",
        ));
    }
    let Some(url) = &raw.overrides_store else {
        return Ok(None);
    };
    if !super::is_server_store(url) {
        return Err(ConfigError::invalid(
            "server.overrides_store",
            "a postgres:// URL (a single replica keeps its overrides in overrides_file)",
        ));
    }
    super::shadow::refuse_password("server.overrides_store", url)?;
    Ok(Some(url.clone()))
}

fn validate_compression(
    raw: &RawCompression,
    key: &str,
) -> Result<CompressionSettings, ConfigError> {
    if !(raw.target_ratio > 0.0 && raw.target_ratio <= 1.0) {
        return Err(ConfigError::invalid(
            format!("{key}.target_ratio"),
            format!("must be in (0, 1], got {}", raw.target_ratio),
        ));
    }
    if raw.timeout_ms == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.timeout_ms"),
            "must be > 0",
        ));
    }
    if raw.roles.is_empty() && raw.enabled {
        return Err(ConfigError::invalid(
            format!("{key}.roles"),
            "compression is enabled but no role may be compressed",
        ));
    }
    Ok(CompressionSettings {
        enabled: raw.enabled,
        compressor: raw.compressor,
        min_tokens: raw.min_tokens,
        target_ratio: raw.target_ratio,
        roles: raw.roles.clone(),
        timeout_ms: raw.timeout_ms,
        mode: raw.mode,
        rollout: validate_rollout(raw.rollout, raw.min_samples, raw.min_pass_rate, key)?,
        max_bytes: raw.max_bytes,
    })
}

fn validate_telemetry(raw: &RawTelemetry) -> Result<RawTelemetry, ConfigError> {
    if !(0.0..=1.0).contains(&raw.sample_rate) {
        return Err(ConfigError::invalid(
            "telemetry.sample_rate",
            format!("must be in [0, 1], got {}", raw.sample_rate),
        ));
    }
    if let Some(endpoint) = &raw.otlp_endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "telemetry.otlp_endpoint",
                format!("`{endpoint}` is not an http(s):// URL"),
            ));
        }
    }
    Ok(raw.clone())
}
