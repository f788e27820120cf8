//! Client authentication (`[auth]`): the client's key from `Authorization: Bearer` or
//! `x-api-key` (the OpenAI and Anthropic SDKs' habits), hashed and compared in constant time
//! with every configured key's SHA-256; the key's name goes to the access log, and what it may
//! reach is decided once the request is routed (`access`). With `[auth]` on, the client's key is never
//! forwarded upstream (`Upstream` drops it): the configured provider key is used.

use pingora::proxy::Session;

use super::request::header_str;
use crate::config::{digest, ClientKey};
use crate::error::ProxyError;

/// The key the request presents, matched against `keys`.
pub fn authenticate(session: &Session, keys: &[ClientKey]) -> Result<ClientKey, ProxyError> {
    let presented = header_str(session, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| header_str(session, "x-api-key"))
        .ok_or(ProxyError::Unauthorized)?;
    let presented = digest(presented.trim());
    // Every key is compared, in time independent of where the digests differ.
    let mut found = None;
    for key in keys {
        let same = constant_time_eq(&key.digest, &presented);
        if same && found.is_none() {
            found = Some(key.clone());
        }
    }
    found.ok_or(ProxyError::Unauthorized)
}

/// Equality whose time depends on the lengths only, not on where the bytes differ (client
/// key digests here, the admin key in `admin`).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
