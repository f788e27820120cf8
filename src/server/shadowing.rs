//! The proxy's side of shadow A/B: building a request's other version as a background leg (always
//! non-streaming, through the same provider translation as client requests, on the shadow
//! runtime's own connection pool), the judge gate's model client, and the admin report.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use serde_json::{json, Map, Value};

use super::chat::path_and_query;
use super::upstream::Upstream;
use super::AppState;
use crate::compress::CompressionOutcome;
use crate::config::{Leg, Rollout, Route};
use crate::equivalence::{Answer, JudgeClient};
use crate::error::ProxyError;
use crate::openai::ChatRequest;
use crate::shadow::{LegAnswer, LegHandle, Shadow};
use pingora::proxy::Session;

/// The last user message's text: the judge's view of the request, and its domain.
pub(super) fn last_user_text(messages: &[Value]) -> String {
    let Some(message) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The request with `messages` replaced, as a non-streaming request.
pub(super) fn leg_request(request: &ChatRequest, messages: Vec<Value>) -> ChatRequest {
    let mut leg = request.clone();
    leg.body.insert("messages".into(), Value::Array(messages));
    leg.body.insert("stream".into(), Value::Bool(false));
    leg.body.remove("stream_options");
    leg.stream = false;
    leg
}

type Encoded = (String, Bytes, Vec<(&'static str, String)>, Option<String>);

/// Path, body and provider headers of a chat request for `upstream`, plus the model name when the
/// answer comes back in a provider's native shape and must be translated.
fn encode(
    upstream: &Upstream,
    request: &ChatRequest,
    client_path: &str,
) -> Result<Encoded, ProxyError> {
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
) -> Result<LegHandle, ProxyError> {
    let upstream = &state.upstreams[upstream_index];
    let (path, body, provider_headers, native_model) = encode(upstream, leg, client_path)?;
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
    async fn ask(&self, system: &str, user: &str) -> Result<String, String> {
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
        let (path, body, provider_headers, native_model) =
            encode(&self.upstream, &request, "/v1/chat/completions").map_err(|e| e.to_string())?;
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
            .map(|a| a.text)
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
        match pair.split_once('=') {
            Some(("route", r)) => route = Some(r.to_string()),
            Some(("since", s)) => {
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

/// A sampled request whose background legs are running.
pub(super) struct Started {
    pub served: Leg,
    pub request_text: String,
    pub tokens_original: u64,
    pub tokens_compressed: u64,
    pub other: LegHandle,
    pub noise: Option<LegHandle>,
}

/// Output tokens assumed when reserving budget for a leg; the answer's usage replaces it.
const ESTIMATED_ANSWER_TOKENS: u64 = 512;

/// What shadowing this request may cost: its other leg (and the noise leg), priced from the body
/// size (about 4 bytes per token) before the exact counts exist.
pub(super) fn estimate_leg_cost(
    shadow: &Shadow,
    route: &Route,
    model: &str,
    body_len: usize,
) -> f64 {
    let Some(price) = shadow.settings().price(model) else {
        return 0.0;
    };
    let legs = 1.0
        + f64::from(u8::from(
            route.shadow.as_ref().is_some_and(|s| s.noise_floor),
        ));
    let input = (body_len / 4) as f64;
    legs * (input * price.input + ESTIMATED_ANSWER_TOKENS as f64 * price.output) / 1e6
}

/// Starts the legs the client does not get and sets `request` to the leg it does. `Ok(None)`:
/// compression changed nothing, so there is nothing to compare.
pub(super) fn start_shadow(
    state: &Arc<AppState>,
    shadow: &Shadow,
    session: &Session,
    route_index: usize,
    request: &mut ChatRequest,
    original: Vec<Value>,
    outcome: &mut CompressionOutcome,
) -> Result<Option<Started>, ProxyError> {
    let route = state.router.route(route_index);
    let Some(cfg) = &route.shadow else {
        return Ok(None);
    };
    if !outcome.changed {
        return Ok(None);
    }
    let served = match route.compression.rollout {
        Rollout::Auto { .. } => shadow.serving(&route.name).unwrap_or(Leg::Original),
        Rollout::Manual => cfg.serve,
    };
    let compressed = request.messages().to_vec();
    let other = match served {
        Leg::Original => leg_request(request, compressed),
        Leg::Compressed => leg_request(request, original.clone()),
    };
    let noise = cfg
        .noise_floor
        .then(|| leg_request(request, original.clone()));
    let client_path = path_and_query(session);
    let client = session.req_header();
    let other = spawn_leg(state, shadow, route.upstream, client, &client_path, &other)?;
    let noise = match noise {
        Some(leg) => match spawn_leg(state, shadow, route.upstream, client, &client_path, &leg) {
            Ok(handle) => Some(handle),
            Err(e) => {
                other.abort();
                return Err(e);
            }
        },
        None => None,
    };
    let started = Started {
        served,
        request_text: last_user_text(&original),
        tokens_original: outcome.tokens_before as u64,
        tokens_compressed: outcome.tokens_after as u64,
        other,
        noise,
    };
    if served == Leg::Original {
        request
            .body
            .insert("messages".into(), Value::Array(original));
        outcome.changed = false;
        outcome.tokens_after = outcome.tokens_before;
        outcome.compressor = "off";
    }
    Ok(Some(started))
}
