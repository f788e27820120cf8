//! Configuration: `proxy.toml` plus `CONDENSER__SECTION__KEY` environment overrides (routes by
//! name: `CONDENSER__ROUTES__<NAME>__KEY`, see `env`), parsed
//! strictly (unknown keys rejected, errors name the key path), then validated across fields into
//! the runtime types the proxy uses.

mod auth;
mod cache;
mod compressors;
mod env;
mod passthrough;
mod paths;
mod raw;
mod shadow;
mod tls;
mod upstream;
mod validate;

use std::path::Path;

pub use crate::compress::{CompressionMode, CompressorKind, ModelSettings, Role};
pub use auth::{check_exposure, digest, ClientKey, Listener};
pub use passthrough::PathRules;
pub use raw::{CacheScope, LogFormat, UpstreamKind};
pub use raw::{
    RawCompression, RawCompressors, RawConfig, RawLocalModel, RawRoute, RawServer, RawTelemetry,
    RawUpstream,
};
pub use shadow::{
    is_server_store, Leg, RawPrice, Rollout, RouteShadow, ShadowSettings, Thresholds,
};
pub use upstream::{DeploymentSettings, UpstreamSettings};
pub use validate::{CompressionSettings, Config, Route, ServerSettings};

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Reads the file, applies environment overrides, and validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let raw = load_raw(path)?;
    validate::validate(raw)
}

/// Reads the file and applies environment overrides, without cross-field validation.
pub fn load_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let read_error = |reason: String| ConfigError::Read {
        path: path.display().to_string(),
        reason,
    };
    if !path.is_file() {
        return Err(read_error("no such file".into()));
    }
    let (merged_vars, route_vars) = env::split(std::env::vars());
    let merged = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("CONDENSER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(merged_vars)),
        )
        .build()
        .map_err(|e| read_error(e.to_string()))?;
    let mut tree: serde_json::Value = merged
        .try_deserialize()
        .map_err(|e| read_error(e.to_string()))?;
    env::apply_route_overrides(&mut tree, &route_vars)?;
    from_tree(tree)
}

/// Parses an already merged tree; the error names the key path (`routes[0].compression.x`).
pub fn from_tree(tree: serde_json::Value) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::invalid(key, e.into_inner().to_string())
    })
}

/// Parses TOML text (used by tests and `condenser check` on snippets).
pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
    let tree: serde_json::Value =
        toml::from_str(text).map_err(|e| ConfigError::invalid("<toml>", e.to_string()))?;
    validate::validate(from_tree(tree)?)
}

/// The `user[:password]` part of a URL's authority, if it has one: every URL-valued key checks
/// it to keep credentials out of the file.
fn url_userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').map(|(userinfo, _)| userinfo)
}

#[cfg(test)]
mod tests {
    use super::url_userinfo;

    #[test]
    fn userinfo_is_read_from_the_authority_only() {
        assert_eq!(
            url_userinfo("redis://:secret@cache:6379/0"),
            Some(":secret")
        );
        assert_eq!(url_userinfo("postgres://app@db/condenser"), Some("app"));
        assert_eq!(url_userinfo("http://gpu-host:8090/v1"), None);
        assert_eq!(url_userinfo("postgres://db/condenser?user=a@b"), None);
    }
}
