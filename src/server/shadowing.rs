//! The proxy's side of shadow A/B: building a request's other version as a background leg (always
//! non-streaming, through the same provider translation as client requests, on the shadow
//! runtime's own connection pool), the judge gate's model client, and the admin report. A sampled
//! request's lifecycle around these is in `sampling`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use serde_json::{json, Map, Value};

use super::upstream::Upstream;
use super::AppState;
use crate::equivalence::{Answer, JudgeClient};
use crate::error::ProxyError;
use crate::openai::ChatRequest;
use crate::providers::anthropic::API_VERSION;
use crate::shadow::{LegAnswer, LegHandle, Shadow};

/// The latest user text: the judge's view of the request, and its domain — the same question
/// compression uses (`compress::question_text`).
pub(super) fn last_user_text(messages: &[Value]) -> String {
    crate::compress::question_text(messages)
}

/// Which front door a sampled request came through: it decides how its legs are encoded and how
/// the client's answer is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrontDoor {
    /// `/v1/chat/completions`: translated per upstream, answers in OpenAI's shape.
    ChatCompletions,
    /// `/v1/messages`: sent to the Anthropic upstream as it came, answers in Anthropic's shape.
    AnthropicMessages,
}

/// The request as a non-streaming leg.
pub(super) fn leg_request(request: &ChatRequest) -> ChatRequest {
    let mut leg = request.clone();
    leg.body.insert("stream".into(), Value::Bool(false));
    leg.body.remove("stream_options");
    leg.stream = false;
    leg
}

type Encoded = (String, Bytes, Vec<(&'static str, String)>, Option<String>);

/// Path, body and provider headers of a request for `upstream`, plus the model name when the
/// answer comes back in a provider's native shape and must be translated to OpenAI's.
fn encode(
    upstream: &Upstream,
    request: &ChatRequest,
    client_path: &str,
    door: FrontDoor,
) -> Result<Encoded, ProxyError> {
    if door == FrontDoor::AnthropicMessages {
        return Ok((
            upstream.upstream_path(client_path),
            Bytes::from(request.to_bytes()),
            vec![("anthropic-version", API_VERSION.to_string())],
            Some(request.model.clone()),
        ));
    }
    Ok(match upstream.provider.encode_chat(request)? {
        None => (
            upstream.upstream_path(client_path),
            Bytes::from(request.to_bytes()),
            Vec::new(),
            None,
        ),
        Some(native) => (
            format!("{}{}", upstream.settings.base_path, native.path),
            Bytes::from(native.body),
            native.headers,
            Some(request.model.clone()),
        ),
    })
}

/// Encodes `leg` for the route's upstream (headers, key and translation as for the client's own
/// request) and starts it on the shadow runtime.
pub(super) fn spawn_leg(
    state: &Arc<AppState>,
    shadow: &Shadow,
    upstream_index: usize,
    client: &RequestHeader,
    client_path: &str,
    leg: &ChatRequest,
    door: FrontDoor,
) -> Result<LegHandle, ProxyError> {
    let upstream = &state.upstreams[upstream_index];
    let (path, body, provider_headers, native_model) = encode(upstream, leg, client_path, door)?;
    let mut header =
        upstream.request_header(client, &path, body.len(), false, &provider_headers)?;
    // The client may have asked for a stream; this leg is read whole.
    let _ = header.insert_header("accept", "application/json");
    let state = state.clone();
    Ok(shadow.spawn_leg(async move {
        let started = Instant::now();
        let upstream = &state.upstreams[upstream_index];
        let (status, answer) = upstream
            .fetch(
                &state.shadow_connector,
                header,
                body,
                native_model.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if !(200..300).contains(&status) {
            return Err(format!("shadow leg answered {status}"));
        }
        let answer = Answer::from_completion(&answer)
            .ok_or_else(|| "shadow leg's answer is not a chat completion".to_string())?;
        Ok(LegAnswer {
            answer,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }))
}

/// The judge gate's model: the route that serves `model`, called with the upstream's configured
/// key (a judge has no client whose key it could borrow).
pub struct RouteJudge {
    upstream: Upstream,
    connector: Arc<Connector>,
    model: String,
}

impl RouteJudge {
    pub fn new(upstream: Upstream, connector: Arc<Connector>, model: String) -> Self {
        Self {
            upstream,
            connector,
            model,
        }
    }
}

#[async_trait]
impl JudgeClient for RouteJudge {
    async fn ask(&self, system: &str, user: &str) -> Result<Answer, String> {
        // Built as a value, not serialised and parsed back.
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("temperature".into(), json!(0));
        body.insert(
            "messages".into(),
            json!([
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ]),
        );
        let request = ChatRequest {
            model: self.model.clone(),
            stream: false,
            body,
        };
        let (path, body, provider_headers, native_model) = encode(
            &self.upstream,
            &request,
            "/v1/chat/completions",
            FrontDoor::ChatCompletions,
        )
        .map_err(|e| e.to_string())?;
        let mut client =
            RequestHeader::build("POST", path.as_bytes(), None).map_err(|e| e.to_string())?;
        client
            .insert_header("content-type", "application/json")
            .map_err(|e| e.to_string())?;
        let header = self
            .upstream
            .request_header(&client, &path, body.len(), false, &provider_headers)
            .map_err(|e| e.to_string())?;
        let (status, answer) = self
            .upstream
            .fetch(&self.connector, header, body, native_model.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        if !(200..300).contains(&status) {
            return Err(format!("judge answered {status}"));
        }
        Answer::from_completion(&answer)
            .ok_or_else(|| "judge's answer is not a chat completion".to_string())
    }
}

/// `GET /admin/shadow[?route=R&since=MS]`: the report as JSON.
pub(super) async fn admin_report(
    shadow: &Shadow,
    query: Option<&str>,
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
    use super::{last_user_text, percent_decode};

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(percent_decode("my%20route").expect("ok"), "my route");
        assert_eq!(percent_decode("a+b").expect("ok"), "a b");
        assert_eq!(percent_decode("caf%C3%A9").expect("ok"), "café");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%FF").is_err(), "not UTF-8");
    }
    use serde_json::json;

    #[test]
    fn the_request_text_skips_user_turns_that_only_return_tool_results() {
        let messages = json!([
            {"role": "user", "content": [{"type": "text", "text": "Fix the failing test in `lib.rs`."}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "fn main() {}"}]}
        ]);
        let messages = messages.as_array().expect("array");
        assert_eq!(
            last_user_text(messages),
            "Fix the failing test in `lib.rs`."
        );
        let openai =
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
        assert_eq!(last_user_text(openai.as_array().expect("array")), "Hi");
        assert_eq!(last_user_text(&[]), "");
    }
}
