//! The admin listener's endpoints (`server.admin_listen`; never answered on the public
//! listener):
//! - `GET /admin/routes`: every route's effective settings and where each came from;
//! - `PATCH /admin/routes/{name}`: change a route's compression or sample rate, live;
//! - `POST /admin/reload`: re-read `proxy.toml` (also on `SIGHUP`);
//! - `GET /admin/shadow[?route=R&since=MS]`: the shadow report as JSON.
//!
//! With `server.admin_key_env` set (its variable must be set too, or condenser does not start),
//! every `/admin/*` request needs `Authorization: Bearer` with that key, compared as SHA-256
//! digests in constant time. Without it the admin API is read-only, the listener must be
//! loopback, and the shadow report leaves out the sampled prompts and answers.

use pingora::proxy::Session;
use serde_json::{json, Value};

use super::auth::constant_time_eq;
use super::request::{header_str, read_whole};
use super::state::AppState;
use crate::control::ControlError;
use crate::error::ProxyError;
use crate::shadow::report::RouteReport;
use crate::shadow::Shadow;

/// Largest admin request body.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The admin key's digest, from `server.admin_key_env`, read once at start-up.
pub struct AdminKey(Option<[u8; 32]>);

impl AdminKey {
    pub fn from_env(variable: Option<&str>) -> Self {
        Self(
            variable
                .and_then(|v| std::env::var(v).ok())
                .filter(|k| !k.is_empty())
                .map(|k| crate::config::digest(&k)),
        )
    }

    /// Whether `session` may make this request: with a key, every request must carry it;
    /// without one, only reads are allowed.
    fn authorize(&self, session: &Session, method: &str) -> Result<(), ProxyError> {
        let Some(key) = &self.0 else {
            return if method == "GET" {
                Ok(())
            } else {
                Err(ProxyError::AdminReadOnly)
            };
        };
        let sent = header_str(session, "authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Digests have one length: the comparison's time says nothing about the key's.
        if constant_time_eq(&crate::config::digest(sent), key) {
            Ok(())
        } else {
            Err(ProxyError::AdminUnauthorized)
        }
    }

    /// Whether requests prove who they are (a key is configured).
    fn keyed(&self) -> bool {
        self.0.is_some()
    }
}

fn control_error(error: ControlError) -> ProxyError {
    match error {
        ControlError::Invalid(e) => ProxyError::InvalidRequest(e.to_string()),
        ControlError::NoRoute(name) => ProxyError::RouteNotFound(name),
        ControlError::Io { .. } => ProxyError::Internal(error.to_string()),
    }
}

/// Serves one admin request; `Ok(body)` is answered 200 as JSON.
pub async fn handle(
    state: &AppState,
    key: &AdminKey,
    session: &mut Session,
) -> Result<Vec<u8>, ProxyError> {
    let header = session.req_header();
    let method = header.method.as_str().to_string();
    let path = header.uri.path().to_string();
    let query = header.uri.query().map(str::to_string);
    key.authorize(session, &method)?;
    let not_found = || ProxyError::NotFound {
        method: method.clone(),
        path: path.clone(),
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/admin/routes") => Ok(state.describe_routes().to_string().into_bytes()),
        ("POST", "/admin/reload") => {
            let restart = state.reload().map_err(control_error)?;
            Ok(json!({"reloaded": true, "restart_required": restart})
                .to_string()
                .into_bytes())
        }
        ("PATCH", p) if p.starts_with("/admin/routes/") => {
            let name = percent_decode(&p["/admin/routes/".len()..])?;
            let body = read_whole(
                session,
                ADMIN_BODY_LIMIT,
                state.live().config.server.body_deadline(),
            )
            .await?;
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ProxyError::MalformedJson(e.to_string()))?;
            let route = state.patch_route(&name, &patch).map_err(control_error)?;
            Ok(route.to_string().into_bytes())
        }
        ("GET", "/admin/shadow") => {
            let shadow = state.shadow.as_ref().ok_or_else(not_found)?;
            shadow_report(shadow, query.as_deref(), key.keyed()).await
        }
        _ => Err(not_found()),
    }
}

/// `GET /admin/shadow[?route=R&since=MS]`: the report as JSON; the worst examples' prompts and
/// answers only when `with_content` (the request carried the admin key).
async fn shadow_report(
    shadow: &Shadow,
    query: Option<&str>,
    with_content: bool,
) -> Result<Vec<u8>, ProxyError> {
    let mut route = None;
    let mut since = 0i64;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (percent_decode(key)?.as_str(), percent_decode(value)?) {
            ("route", r) => route = Some(r),
            ("since", s) => {
                since = s.parse().map_err(|_| {
                    ProxyError::InvalidRequest("`since` must be unix milliseconds".into())
                })?;
            }
            _ => {}
        }
    }
    // With the store down the counters still say what the shadow runtime is doing.
    let (routes, store_error) = match shadow.samples(route.as_deref(), since).await {
        Ok(samples) => {
            let mut reports = crate::shadow::report::summarise(&samples);
            if !with_content {
                reports.iter_mut().for_each(RouteReport::drop_content);
            }
            (json!(reports), None)
        }
        Err(error) => (serde_json::Value::Null, Some(error)),
    };
    let body = json!({
        "routes": routes,
        "store_error": store_error,
        "in_flight": shadow.in_flight(),
        "stats": &shadow.stats,
    });
    Ok(body.to_string().into_bytes())
}

/// A query-string component decoded: `%XX` escapes and `+` for a space (route names may hold
/// spaces or non-ASCII letters). A malformed escape or non-UTF-8 result is a 400.
fn percent_decode(component: &str) -> Result<String, ProxyError> {
    let bad = || ProxyError::InvalidRequest(format!("malformed query component `{component}`"));
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, percent_decode};

    #[test]
    fn keys_compare_by_content() {
        assert!(constant_time_eq(b"sk-admin", b"sk-admin"));
        assert!(!constant_time_eq(b"sk-admin", b"sk-admio"));
        assert!(!constant_time_eq(b"sk-admin", b"sk-admin-longer"));
    }

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(percent_decode("my%20route").expect("ok"), "my route");
        assert_eq!(percent_decode("a+b").expect("ok"), "a b");
        assert_eq!(percent_decode("caf%C3%A9").expect("ok"), "café");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%FF").is_err(), "not UTF-8");
    }
}
