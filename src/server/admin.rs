//! The admin listener's endpoints (`server.admin_listen`; never answered on the public
//! listener): `GET /admin/shadow[?route=R&since=MS]`, the shadow report as JSON.

use serde_json::json;

use crate::error::ProxyError;
use crate::shadow::Shadow;

/// `GET /admin/shadow[?route=R&since=MS]`: the report as JSON.
pub async fn shadow_report(shadow: &Shadow, query: Option<&str>) -> Result<Vec<u8>, ProxyError> {
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
    let samples = shadow
        .samples(route.as_deref(), since)
        .await
        .map_err(ProxyError::Internal)?;
    let body = json!({
        "routes": crate::shadow::report::summarise(&samples),
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
    use super::percent_decode;

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
