//! `[auth]`: the client keys condenser accepts, validated into SHA-256 digests (the keys
//! themselves are read from the environment once and never kept), and the exposure rule: every
//! non-loopback listener needs its authentication (`[auth]` for the API, the admin key for the
//! admin listener, `--api-key-env` for `serve-model`) or an explicit opt-out.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

use super::passthrough::PathRules;
use super::raw::RawAuth;
use super::ConfigError;

/// One accepted client key.
#[derive(Clone, PartialEq)]
pub struct ClientKey {
    pub name: String,
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    /// Routes it may use; `None`: all.
    pub routes: Option<Vec<String>>,
    /// Requests in flight at once; `None`: no limit.
    pub max_in_flight: Option<usize>,
    /// Requests per minute; `None`: no limit.
    pub requests_per_minute: Option<u32>,
    /// Input tokens sent upstream per minute; `None`: no limit.
    pub input_tokens_per_minute: Option<u32>,
    /// Passthrough endpoints it may use (`access`); `None`: none.
    pub passthrough: Option<PathRules>,
    /// May set `x-condenser-route`.
    pub route_header: bool,
    /// May set `x-condenser-compress`.
    pub compress_header: bool,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .field("max_in_flight", &self.max_in_flight)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("input_tokens_per_minute", &self.input_tokens_per_minute)
            .field("passthrough", &self.passthrough.as_ref().map(|p| &p.source))
            .field("route_header", &self.route_header)
            .field("compress_header", &self.compress_header)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(super) fn validate_auth(
    raw: &RawAuth,
    routes: &[String],
) -> Result<Vec<ClientKey>, ConfigError> {
    if raw.keys.is_empty() {
        return Err(ConfigError::invalid(
            "auth.keys",
            "[auth] needs at least one [[auth.keys]]",
        ));
    }
    let mut keys: Vec<ClientKey> = Vec::with_capacity(raw.keys.len());
    for (i, key) in raw.keys.iter().enumerate() {
        let field = |f: &str| format!("auth.keys[{i}].{f}");
        if key.name.is_empty() || keys.iter().any(|k| k.name == key.name) {
            return Err(ConfigError::invalid(
                field("name"),
                "names must be unique and non-empty",
            ));
        }
        let digest = match (&key.key_env, &key.sha256) {
            (Some(var), None) => {
                let value = std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            field("key_env"),
                            format!("the variable {var} is not set"),
                        )
                    })?;
                digest(&value)
            }
            (None, Some(hex)) => parse_hex(hex).ok_or_else(|| {
                ConfigError::invalid(field("sha256"), "must be 64 hexadecimal digits")
            })?,
            _ => return Err(ConfigError::invalid(
                field("key_env"),
                "give exactly one of key_env (the variable holding the key) or sha256 (its hash)",
            )),
        };
        if let Some(allowed) = &key.routes {
            if let Some(unknown) = allowed.iter().find(|r| !routes.contains(r)) {
                return Err(ConfigError::invalid(
                    field("routes"),
                    format!("no route named `{unknown}`"),
                ));
            }
        }
        if key.max_in_flight == Some(0)
            || key.requests_per_minute == Some(0)
            || key.input_tokens_per_minute == Some(0)
        {
            return Err(ConfigError::invalid(
                field("max_in_flight"),
                "limits must be > 0 (leave a limit out for none)",
            ));
        }
        let passthrough = key
            .passthrough
            .as_ref()
            .map(|rules| PathRules::parse(rules, &field("passthrough")))
            .transpose()?;
        keys.push(ClientKey {
            name: key.name.clone(),
            digest,
            routes: key.routes.clone(),
            max_in_flight: key.max_in_flight,
            requests_per_minute: key.requests_per_minute,
            input_tokens_per_minute: key.input_tokens_per_minute,
            passthrough,
            route_header: key.route_header,
            compress_header: key.compress_header,
        });
    }
    Ok(keys)
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A listener condenser opens, for the exposure rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.listen`: the API, authenticated by `[auth]`.
    Public,
    /// `server.admin_listen`: `/admin/*` and `/metrics`, authenticated by `server.admin_key_env`.
    Admin,
    /// `condenser serve-model --listen`: authenticated by its `--api-key-env`.
    ModelServer,
}

impl Listener {
    fn key(self) -> &'static str {
        match self {
            Self::Public => "server.listen",
            Self::Admin => "server.admin_listen",
            Self::ModelServer => "--listen",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Self::Public => {
                "anyone could spend the configured provider keys. Add [auth] with client keys, or \
                 set server.allow_unauthenticated = true if something in front authenticates"
            }
            Self::Admin => {
                "anyone could read the shadow samples and change routes. Set \
                 server.admin_key_env, or set server.allow_unauthenticated = true if something \
                 in front authenticates"
            }
            Self::ModelServer => {
                "anyone could use the model. Pass --api-key-env, or --allow-unauthenticated if \
                 something in front authenticates"
            }
        }
    }
}

/// Refuses a non-loopback listener without authentication, unless explicitly allowed. Every
/// listener is checked: a wildcard address (`0.0.0.0`, `[::]`) is reachable from other machines.
pub fn check_exposure(
    listener: Listener,
    addr: SocketAddr,
    authenticated: bool,
    allow_unauthenticated: bool,
) -> Result<(), ConfigError> {
    if addr.ip().is_loopback() || authenticated || allow_unauthenticated {
        return Ok(());
    }
    Err(ConfigError::invalid(
        listener.key(),
        format!(
            "{addr} is reachable from other machines and nothing authenticates its clients: {}",
            listener.remedy()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_and_exposure_needs_auth() {
        let d = digest("sk-client");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hex(&hex), Some(d));
        assert_eq!(parse_hex("abc"), None);
        let open: SocketAddr = "0.0.0.0:8787".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:8787".parse().expect("addr");
        for listener in [Listener::Public, Listener::Admin, Listener::ModelServer] {
            let err = check_exposure(listener, open, false, false).expect_err("open");
            assert!(err.to_string().starts_with(listener.key()), "{err}");
            assert!(check_exposure(listener, open, true, false).is_ok());
            assert!(check_exposure(listener, open, false, true).is_ok());
            assert!(check_exposure(listener, local, false, false).is_ok());
        }
    }
}
