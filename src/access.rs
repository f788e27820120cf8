//! What a request may reach, decided before anything goes upstream with the operator's key:
//! - **path hygiene** for every request (`url_path::check_path`, shared with the passthrough
//!   rules' validation);
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

pub use crate::url_path::{check_path, percent_decode, UnsafePath};

impl From<UnsafePath> for ProxyError {
    fn from(reason: UnsafePath) -> Self {
        ProxyError::UnsafePath(reason.to_string())
    }
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
