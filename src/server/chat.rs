//! `POST /v1/chat/completions`: read the body, validate, route on `model`, compress per the
//! route and the `x-condenser-compress` header, forward, and relay the answer (streamed or not)
//! with the `x-condenser-*` accounting headers.

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::response::{Capture, ResponseMode, Translation};
use super::sampling::{compressor_for, ClientLeg, Sample, Shadowing};
use super::shadowing::FrontDoor;
use super::upstream::{ExchangeError, Reply, Upstream};
use super::{body, header_str, AppState, RequestLog};
use crate::compress::{kind_from_name, CompressionOutcome, Pipeline, Tokenizer};
use crate::config::{CompressorKind, Leg, Rollout};
use crate::error::ProxyError;
use crate::openai::{headers, ChatRequest};
use std::sync::Arc;

/// What the client asked for in `x-condenser-compress`.
fn requested_compressor(
    header: Option<&str>,
    route_enabled: bool,
    route_compressor: CompressorKind,
) -> Result<Option<CompressorKind>, ProxyError> {
    match header.map(|h| h.trim().to_ascii_lowercase()) {
        None => Ok(route_enabled.then_some(route_compressor)),
        Some(h) if h == headers::COMPRESS_OFF => Ok(None),
        Some(h) if h == headers::COMPRESS_ON => Ok(Some(route_compressor)),
        Some(h) => kind_from_name(&h)
            .map(Some)
            .ok_or(ProxyError::UnknownCompressor(h)),
    }
}

/// A parsed request, its route, and the compression it asked for.
pub(super) struct Prepared {
    pub raw: Bytes,
    pub request: ChatRequest,
    pub route: usize,
    pub compressor: Option<CompressorKind>,
    pub tokenizer: Tokenizer,
    /// The client chose compression itself (`x-condenser-compress`): never shadowed.
    pub client_chose: bool,
}

/// Reads and validates the body, routes it, and decides the compressor (shared with the
/// Anthropic-native front door, whose bodies have the same `model`/`messages` skeleton).
pub(super) async fn prepare(
    state: &AppState,
    session: &mut Session,
    log: &mut RequestLog,
) -> Result<Prepared, ProxyError> {
    let raw = body::read_whole(session, state.config.server.max_body_bytes).await?;
    let request = ChatRequest::parse(&raw)?;
    let route = state
        .router
        .select(header_str(session, headers::ROUTE), Some(&request.model))?;
    let settings = &state.router.route(route).compression;
    let name = &state.router.route(route).name;
    log.route = Some(name.clone());
    // An auto-rollout route compresses while its shadow verdicts allow it.
    let enabled = match settings.rollout {
        Rollout::Manual => settings.enabled,
        Rollout::Auto { .. } => {
            state.shadow.as_ref().and_then(|s| s.serving(name)) == Some(Leg::Compressed)
        }
    };
    let choice = header_str(session, headers::COMPRESS);
    let compressor = requested_compressor(choice, enabled, settings.compressor)?;
    let tokenizer = Tokenizer::for_model(&request.model);
    Ok(Prepared {
        raw,
        request,
        route,
        compressor,
        tokenizer,
        client_chose: choice.is_some(),
    })
}

/// Compresses OpenAI-shaped `messages` per the request's choice and records the outcome.
pub(super) async fn compress(
    state: &AppState,
    messages: &mut [serde_json::Value],
    prepared_route: usize,
    compressor: Option<CompressorKind>,
    tokenizer: Tokenizer,
    log: &mut RequestLog,
) -> CompressionOutcome {
    let settings = &state.router.route(prepared_route).compression;
    let outcome = match compressor {
        Some(kind) => {
            state
                .pipeline
                .apply(messages, kind, settings, tokenizer)
                .await
        }
        None => Pipeline::count_only(messages, tokenizer),
    };
    log.compressor = Some(outcome.compressor);
    log.tokens = Some((outcome.tokens_before, outcome.tokens_after));
    outcome
}

/// The `x-condenser-*` response headers.
pub(super) fn accounting_headers(
    outcome: &CompressionOutcome,
    route: &str,
    tokenizer: Tokenizer,
    model: &str,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (headers::TOKENS_BEFORE, outcome.tokens_before.to_string()),
        (headers::TOKENS_AFTER, outcome.tokens_after.to_string()),
        (headers::COMPRESSOR, outcome.compressor.to_string()),
        (headers::ROUTE, route.to_string()),
        (headers::TOKENIZER, tokenizer.describe_for(model)),
    ];
    if outcome.failed_open {
        headers.push((headers::FAIL_OPEN, "true".to_string()));
    }
    headers
}

pub async fn handle(
    state: &Arc<AppState>,
    session: &mut Session,
    log: &mut RequestLog,
) -> Result<(), ExchangeError> {
    let before = ExchangeError::BeforeResponse;
    let Prepared {
        raw,
        mut request,
        route: route_index,
        compressor,
        tokenizer,
        client_chose,
    } = prepare(state, session, log).await.map_err(before)?;
    let route = state.router.route(route_index);
    let sample = Sample::take(
        state,
        route,
        &request,
        raw.len(),
        client_chose,
        compressor,
        FrontDoor::ChatCompletions,
    );
    let mut outcome = compress(
        state,
        request.messages_mut(),
        route_index,
        compressor_for(sample.as_ref(), compressor, route),
        tokenizer,
        log,
    )
    .await;
    let shadowing =
        sample.and_then(|s| s.start(state, session, route_index, &mut request, &mut outcome));
    let upstream = &state.upstreams[route.upstream];
    let encoded = upstream.provider.encode_chat(&request).map_err(before)?;
    let (path, upstream_body, provider_headers, mode) = match encoded {
        // OpenAI-compatible: unchanged requests are forwarded byte for byte.
        None => {
            let body = if outcome.changed {
                Bytes::from(request.to_bytes())
            } else {
                raw
            };
            let path = upstream.upstream_path(&path_and_query(session));
            (path, body, Vec::new(), ResponseMode::Relay)
        }
        Some(native) => {
            let path = format!("{}{}", upstream.settings.base_path, native.path);
            let translation = Translation {
                provider: upstream.provider.clone(),
                model: request.model.clone(),
                stream: request.stream,
                include_usage: request
                    .body
                    .get("stream_options")
                    .and_then(|o| o.get("include_usage"))
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
            };
            (
                path,
                Bytes::from(native.body),
                native.headers,
                ResponseMode::Translate(translation),
            )
        }
    };
    let header = upstream
        .request_header(
            session.req_header(),
            &path,
            upstream_body.len(),
            false,
            &provider_headers,
        )
        .map_err(before)?;
    tracing::debug!(
        route = %route.name,
        model = %request.model,
        stream = request.stream,
        tokens_before = outcome.tokens_before,
        tokens_after = outcome.tokens_after,
        "forwarding chat completion"
    );
    let leg = ClientLegRequest {
        upstream,
        header,
        body: upstream_body,
        mode,
        extra: accounting_headers(&outcome, &route.name, tokenizer, &request.model),
    };
    log.status = forward(
        state,
        session,
        leg,
        shadowing,
        &request,
        &route.name,
        &outcome,
    )
    .await?;
    Ok(())
}

/// The client's own leg, encoded by a front door.
pub(super) struct ClientLegRequest<'a> {
    pub upstream: &'a Upstream,
    pub header: RequestHeader,
    pub body: Bytes,
    pub mode: ResponseMode,
    /// The `x-condenser-*` accounting headers.
    pub extra: Vec<(&'static str, String)>,
}

/// Sends the client's leg and relays the answer. A shadowed request says which version the client
/// got, keeps a copy of what it received, and hands its sample to the scorer.
pub(super) async fn forward(
    state: &AppState,
    session: &mut Session,
    mut leg: ClientLegRequest<'_>,
    shadowing: Option<Shadowing<'_>>,
    request: &ChatRequest,
    route: &str,
    outcome: &CompressionOutcome,
) -> Result<u16, ExchangeError> {
    if let Some(s) = &shadowing {
        leg.extra
            .push((headers::SHADOW, s.served().as_str().to_string()));
    }
    let mut capture = shadowing.as_ref().map(|_| Capture::default());
    let status = leg
        .upstream
        .exchange(
            &state.connector,
            session,
            leg.header,
            leg.body,
            Reply {
                extra: &leg.extra,
                mode: leg.mode,
                capture: capture.as_mut(),
            },
        )
        .await;
    if let Some(shadowing) = shadowing {
        shadowing.finish(ClientLeg {
            status: &status,
            capture,
            provider: leg.upstream.provider.as_ref(),
            request,
            route,
            compressor: outcome.compressor,
        });
    }
    status
}

pub(super) fn path_and_query(session: &Session) -> String {
    session.req_header().uri.path_and_query().map_or_else(
        || session.req_header().uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_overrides_route_setting() {
        let ext = CompressorKind::Extractive;
        assert_eq!(requested_compressor(None, true, ext).ok(), Some(Some(ext)));
        assert_eq!(requested_compressor(None, false, ext).ok(), Some(None));
        assert_eq!(
            requested_compressor(Some("off"), true, ext).ok(),
            Some(None)
        );
        assert_eq!(
            requested_compressor(Some("ON"), false, ext).ok(),
            Some(Some(ext))
        );
        assert_eq!(
            requested_compressor(Some("truncate"), false, ext).ok(),
            Some(Some(CompressorKind::Truncate))
        );
        assert!(requested_compressor(Some("zip"), true, ext).is_err());
    }
}
