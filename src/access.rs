//! What a request may reach, decided before anything goes upstream with the operator's key:
//! - **path hygiene** for every request: after percent-decoding once, no `.` or `..` segment, no
//!   empty segment (`//`), no encoded `/` or `\` — an upstream that normalises paths would
//!   otherwise be asked for something outside its API's base path;
//! - **the route**: chosen by `x-condenser-route` only when the client key may name routes
//!   (`route_header`) and the named route serves the request's model (`routing`), then allowed
//!   for the key (`routes`);
//! - **passthrough** (`/v1/*` endpoints other than the two chat front doors and `GET /v1/models`):
//!   only what the route's `passthrough` allowlist names — every endpoint when it has none and
//!   `[auth]` is off (a loopback proxy for one trusted caller), none when it has none and `[auth]`
//!   is on — and, with `[auth]`, only what the client key's own `passthrough` list also names;
//! - **`x-condenser-compress`**: a client key's permission (`compress_header`), since it overrides
//!   the operator's per-route choice.
//!
//! Without `[auth]` (no client key) the headers are allowed: the listener is loopback or
//! explicitly trusted (`server.allow_unauthenticated`). The functions here are pure, so the policy
//! is unit-tested and fuzzed (`fuzz/fuzz_targets/access_policy.rs`) apart from the server.

use crate::config::{ClientKey, Route};
use crate::error::ProxyError;
use crate::routing::Router;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafePath {
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error("the path has an empty segment (`//`)")]
    EmptySegment,
    #[error("the path has an encoded `/` or a `\\`")]
    EncodedSeparator,
    #[error("the path is not valid percent-encoded UTF-8")]
    BadEncoding,
}

impl From<UnsafePath> for ProxyError {
    fn from(reason: UnsafePath) -> Self {
        ProxyError::UnsafePath(reason.to_string())
    }
}

/// Refuses a path that could step outside the API it names (see the module header).
pub fn check_path(path: &str) -> Result<(), UnsafePath> {
    let decoded = percent_decode(path).ok_or(UnsafePath::BadEncoding)?;
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || decoded.contains('\\') {
        return Err(UnsafePath::EncodedSeparator);
    }
    let mut segments = decoded.split('/');
    // The path starts with `/`: its first segment is the empty one before it.
    segments.next();
    let segments: Vec<&str> = segments.collect();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => return Err(UnsafePath::DotSegment),
            // A trailing slash (`/v1/files/`) is one empty last segment; anywhere else, `//`.
            "" if i + 1 < segments.len() => return Err(UnsafePath::EmptySegment),
            _ => {}
        }
    }
    Ok(())
}

/// `%XX` sequences decoded once; `None` when one is malformed or the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The route of a request with `model` (if its body names one), honouring `x-condenser-route`
/// (`header`) only where the key may set it, and checked against the key's routes.
pub fn route_for(
    router: &Router,
    client: Option<&ClientKey>,
    header: Option<&str>,
    model: Option<&str>,
) -> Result<usize, ProxyError> {
    if header.is_some() && client.is_some_and(|c| !c.route_header) {
        return Err(ProxyError::HeaderNotAllowed(crate::openai::headers::ROUTE));
    }
    let index = router.select(header, model)?;
    may_use(client, &router.route(index).name)?;
    Ok(index)
}

/// Whether `client` (when authentication is on) may use `route`.
pub fn may_use(client: Option<&ClientKey>, route: &str) -> Result<(), ProxyError> {
    match client.and_then(|c| c.routes.as_ref()) {
        Some(allowed) if !allowed.iter().any(|r| r == route) => {
            Err(ProxyError::RouteNotAllowed(route.to_string()))
        }
        _ => Ok(()),
    }
}

/// Whether `client` may choose compression itself with `x-condenser-compress`.
pub fn may_choose_compression(client: Option<&ClientKey>) -> Result<(), ProxyError> {
    if client.is_some_and(|c| !c.compress_header) {
        return Err(ProxyError::HeaderNotAllowed(
            crate::openai::headers::COMPRESS,
        ));
    }
    Ok(())
}

/// Whether `method path` may be passed through `route` by `client` (see the module header);
/// `authenticated`: `[auth]` is on.
pub fn may_pass_through(
    route: &Route,
    authenticated: bool,
    client: Option<&ClientKey>,
    method: &str,
    path: &str,
) -> Result<(), ProxyError> {
    let by_route = match &route.passthrough {
        Some(rules) => rules.allows(method, path),
        None => !authenticated,
    };
    let by_key = match client {
        Some(key) => key
            .passthrough
            .as_ref()
            .is_some_and(|rules| rules.allows(method, path)),
        None => !authenticated,
    };
    if by_route && by_key {
        Ok(())
    } else {
        Err(ProxyError::EndpointNotAllowed {
            method: method.to_string(),
            path: crate::error::clip(path).to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_encoded_separators_are_refused() {
        for ok in [
            "/v1/files",
            "/v1/files/",
            "/v1/files/file-1.jsonl",
            "/v1/a%20b",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("/v1/../../x", UnsafePath::DotSegment),
            ("/v1/./files", UnsafePath::DotSegment),
            ("/v1/%2e%2e/x", UnsafePath::DotSegment),
            ("/v1/%2E./x", UnsafePath::DotSegment),
            ("/v1//files", UnsafePath::EmptySegment),
            ("/v1/files%2f..%2fx", UnsafePath::EncodedSeparator),
            ("/v1/files%5cx", UnsafePath::EncodedSeparator),
            ("/v1/files\\x", UnsafePath::EncodedSeparator),
            ("/v1/%zz", UnsafePath::BadEncoding),
            ("/v1/%ff", UnsafePath::BadEncoding),
        ] {
            assert_eq!(check_path(bad), Err(why), "{bad}");
        }
        // Decoded once: a doubly encoded dot is a literal `%2e` upstream, not a dot segment.
        assert_eq!(check_path("/v1/%252e%252e/x"), Ok(()));
    }
}
