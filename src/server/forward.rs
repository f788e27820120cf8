//! Sending a front door's request upstream, with retries and failover. The route's upstream is
//! tried first, then each of its `fallbacks` (those that can serve the door), each up to
//! `1 + max_retries` times: a refused connection or a 429/500/502/503/504 answer is retried after
//! a jittered exponential backoff (a 429's `Retry-After` wins) — only while nothing has reached
//! the client, and only while the delay ends within the first upstream's `timeout_ms` of the
//! start. The last attempt's answer, whatever it is, is relayed. Timeouts are not retried: the
//! upstream may be generating, and paying twice for one answer is worse than an error. Every
//! attempt is in the access log and in `x-condenser-attempts`. An upstream that fails
//! `eject_after` attempts in a row is skipped for `eject_for_ms` while the route has another
//! (a circuit breaker); then one request probes it again. Within an upstream of several
//! deployments each attempt goes to the least busy one this request has not tried yet, and the
//! breaker is per deployment (`deployment`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::Value;

use super::accounting::Accounting;
use super::codec::FrontDoor;
use super::relay::{Capture, ExchangeError, ResponseMode, Translation};
use super::request::path_and_query;
use super::state::{AppState, Live};
use super::upstream::{Reply, Retry, Upstream};
use crate::config::Route;
use crate::error::ProxyError;
use crate::openai::ChatRequest;
use crate::telemetry::RequestTrace;

/// What is sent, and through which door.
pub(super) struct Outgoing<'a> {
    pub door: FrontDoor,
    pub route: &'a Route,
    pub request: &'a ChatRequest,
    /// The client's body, when the request is exactly what it sent.
    pub unchanged: Option<Bytes>,
    /// Headers every answer carries (rate-limit state).
    pub extra: Vec<(&'static str, String)>,
}

/// How the exchange ended, and with which upstream.
pub(super) struct Forwarded<'l> {
    pub status: Result<u16, ExchangeError>,
    pub upstream: &'l Upstream,
    /// The deployment (`host:port`) that gave the answer.
    pub deployment: String,
    pub attempts: usize,
}

/// The upstreams to try, each as often as its retries allow. Ejected upstreams are left out
/// while another remains.
fn plan(live: &Live, out: &Outgoing<'_>) -> Vec<(usize, u32)> {
    let candidates: Vec<usize> = std::iter::once(out.route.upstream)
        .chain(out.route.fallbacks.iter().copied())
        .filter(|&i| {
            out.door
                .accepts(&out.route.name, &live.upstreams[i])
                .is_ok()
        })
        .collect();
    let healthy: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| !live.upstreams[i].ejected())
        .collect();
    let chosen = if healthy.is_empty() {
        candidates
    } else {
        healthy
    };
    chosen
        .into_iter()
        .flat_map(|i| (0..=live.upstreams[i].settings.max_retries).map(move |k| (i, k)))
        .collect()
}

fn response_mode(
    door: FrontDoor,
    upstream: &Upstream,
    request: &ChatRequest,
    native: Option<&String>,
) -> ResponseMode {
    match (door, native) {
        (FrontDoor::ChatCompletions, Some(model)) => ResponseMode::Translate(Translation {
            provider: upstream.provider.clone(),
            model: model.clone(),
            stream: request.stream,
            include_usage: request
                .body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }),
        _ => ResponseMode::Relay,
    }
}

/// Sends `out` and relays the answer, retrying and failing over as the module says.
pub(super) async fn forward<'l>(
    state: &AppState,
    live: &'l Live,
    session: &mut Session,
    out: Outgoing<'_>,
    trace: Option<&RequestTrace>,
    accounting: &mut Accounting,
    mut capture: Option<&mut Capture>,
) -> Result<Forwarded<'l>, ProxyError> {
    let attempts = plan(live, &out);
    let first = &live.upstreams[out.route.upstream];
    let deadline = Instant::now() + Duration::from_millis(first.settings.timeout_ms);
    let client_path = path_and_query(session);
    let mut tried: Vec<(usize, usize)> = Vec::with_capacity(attempts.len());
    for (n, &(index, retry_no)) in attempts.iter().enumerate() {
        let upstream = &live.upstreams[index];
        let used: Vec<usize> = tried
            .iter()
            .filter(|(u, _)| *u == index)
            .map(|(_, d)| *d)
            .collect();
        let target = upstream.target(&used);
        tried.push((index, target.index));
        let encoded =
            out.door
                .encode(upstream, out.request, &client_path, out.unchanged.clone())?;
        let mode = response_mode(
            out.door,
            upstream,
            out.request,
            encoded.native_model.as_ref(),
        );
        let mut header = target.request_header(
            session.req_header(),
            &encoded.path,
            encoded.body.len(),
            false,
            &encoded.headers,
        )?;
        let provider = crate::telemetry::provider_name(upstream.settings.kind);
        let span = trace.map(|trace| {
            let (span, traceparent) = trace.upstream(upstream.name(), provider);
            if let Some(traceparent) = traceparent {
                let _ = header.insert_header("traceparent", traceparent);
            }
            span
        });
        let backoff = Duration::from_millis(
            upstream
                .settings
                .retry_backoff_ms
                .saturating_mul(1 << retry_no.min(6)),
        )
        .mul_f64(0.5 + fastrand::f64());
        let last = n + 1 == attempts.len();
        let mut extra = out.extra.clone();
        extra.push((crate::openai::headers::ATTEMPTS, (n + 1).to_string()));
        let status = target
            .exchange(
                &state.connector,
                session,
                header,
                encoded.body,
                Reply {
                    extra,
                    accounting: Some(&mut *accounting),
                    mode,
                    capture: capture.as_deref_mut(),
                    retry: (!last).then_some(Retry { deadline, backoff }),
                },
            )
            .await;
        if let Some(span) = span {
            span.finish(status.as_ref().ok().copied());
        }
        target.record_attempt(match &status {
            Ok(code) => *code == 429 || *code >= 500,
            Err(ExchangeError::Retryable { .. }) => true,
            Err(ExchangeError::BeforeResponse(e)) => e.status() >= 500,
            Err(ExchangeError::AfterResponse(_)) => false,
        });
        match status {
            Err(ExchangeError::Retryable { delay, reason }) => {
                tracing::info!(
                    attempt = n + 1,
                    deployment = %target.label(),
                    %reason,
                    delay_ms = delay.as_millis() as u64,
                    "retrying upstream"
                );
                tokio::time::sleep(delay).await;
            }
            status => {
                return Ok(Forwarded {
                    status,
                    upstream,
                    deployment: target.label(),
                    attempts: n + 1,
                })
            }
        }
    }
    Err(ProxyError::Internal("no upstream to try".into()))
}
