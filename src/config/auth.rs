//! `[auth]`: the client keys condenser accepts, validated into SHA-256 digests (the keys
//! themselves are read from the environment once and never kept), and the exposure rule: a
//! non-loopback listener needs `[auth]` or an explicit `server.allow_unauthenticated = true`.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

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
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .field("max_in_flight", &self.max_in_flight)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("input_tokens_per_minute", &self.input_tokens_per_minute)
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
        keys.push(ClientKey {
            name: key.name.clone(),
            digest,
            routes: key.routes.clone(),
            max_in_flight: key.max_in_flight,
            requests_per_minute: key.requests_per_minute,
            input_tokens_per_minute: key.input_tokens_per_minute,
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

/// Refuses a non-loopback listener without client authentication, unless explicitly allowed.
pub fn check_exposure(
    listen: SocketAddr,
    authenticated: bool,
    allow_unauthenticated: bool,
) -> Result<(), ConfigError> {
    if listen.ip().is_loopback() || authenticated || allow_unauthenticated {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "server.listen",
        format!(
            "{listen} is reachable from other machines and there is no [auth]: anyone could spend \
             the configured provider keys. Add [auth] with client keys, or set \
             server.allow_unauthenticated = true if something in front authenticates"
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
        assert!(check_exposure(open, false, false).is_err());
        assert!(check_exposure(open, true, false).is_ok());
        assert!(check_exposure(open, false, true).is_ok());
        assert!(check_exposure(local, false, false).is_ok());
    }
}
