//! The request lifecycle both front doors share, `POST /v1/chat/completions` and the
//! Anthropic-native `POST /v1/messages`: read and validate the body, route on `model`, decide the
//! compressor (route setting, auto-rollout, `x-condenser-compress`), take a shadow sample,
//! compress, encode with the door's codec, forward and relay the answer with the `x-condenser-*`
//! accounting headers, and record what happened for the access log.
//!
//! The doors differ only in their codec (`codec`): an Anthropic request keeps its own format end
//! to end (`anthropic-beta`, `cache_control` and unknown fields pass untouched) and is compressed
//! through an OpenAI-shaped view of its text, built only when a compressor runs.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use pingora::proxy::Session;
use tokio::task::JoinHandle;

use super::access_log::RequestLog;
use super::accounting::Accounting;
use super::codec::FrontDoor;
use super::forward::{forward, Forwarded, Outgoing};
use super::relay::{Capture, ExchangeError};
use super::request::{header_str, read_whole};
use super::sampling::{compressor_for, ClientLeg, Sample};
use super::state::{AppState, Live};
use crate::compress::{offload, text_slots, CompressionOutcome, Tokenizer};
use crate::config::{CacheScope, CompressorKind, Leg, Rollout, Route};
use crate::error::ProxyError;
use crate::openai::{headers, ChatRequest};
use crate::providers::anthropic::inbound::{self, CompressionView};
use crate::telemetry::{ChatFacts, RequestTrace};
use opentelemetry::KeyValue;

/// Uncompressed requests whose uncached text is at most this many bytes are counted inline (a
/// few tens of microseconds); larger ones on the blocking pool.
const INLINE_COUNT_BYTES: usize = 2048;

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
        Some(h) => CompressorKind::named(&h)
            .map(Some)
            .ok_or(ProxyError::UnknownCompressor(h)),
    }
}

/// A parsed request, its route, and the compression it asked for.
struct Prepared {
    raw: Bytes,
    request: ChatRequest,
    route: usize,
    compressor: Option<CompressorKind>,
    tokenizer: Tokenizer,
    /// The client chose compression itself (`x-condenser-compress`): never shadowed.
    client_chose: bool,
}

/// Reads and validates the body, routes it, and decides the compressor. Both doors' bodies have
/// the same `model`/`messages` skeleton.
async fn prepare(
    state: &AppState,
    live: &Live,
    session: &mut Session,
    log: &mut RequestLog,
) -> Result<Prepared, ProxyError> {
    let server = &live.config.server;
    let raw = read_whole(session, server.max_body_bytes, server.body_deadline()).await?;
    let request = ChatRequest::parse(&raw)?;
    let max_messages = live.config.server.max_messages;
    if request.messages().len() > max_messages {
        return Err(ProxyError::InvalidRequest(format!(
            "{} messages; at most {max_messages} per request (server.max_messages)",
            request.messages().len()
        )));
    }
    let route = crate::access::route_for(
        &live.router,
        log.client.as_ref(),
        header_str(session, headers::ROUTE),
        Some(&request.model),
    )?;
    let settings = &live.router.route(route).compression;
    let name = &live.router.route(route).name;
    log.route = Some(name.clone());
    // An auto-rollout route compresses while its shadow verdicts allow it.
    let enabled = match settings.rollout {
        Rollout::Manual => settings.enabled,
        Rollout::Auto { .. } => {
            state.shadow.as_ref().and_then(|s| s.serving(name)) == Some(Leg::Compressed)
        }
    };
    let choice = header_str(session, headers::COMPRESS);
    if choice.is_some() {
        crate::access::may_choose_compression(log.client.as_ref())?;
    }
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

/// Serves one request through `door`.
pub async fn handle(
    state: &Arc<AppState>,
    live: Arc<Live>,
    session: &mut Session,
    log: &mut RequestLog,
    door: FrontDoor,
) -> Result<(), ExchangeError> {
    let before = ExchangeError::BeforeResponse;
    let Prepared {
        raw,
        mut request,
        route: route_index,
        compressor,
        tokenizer,
        client_chose,
    } = prepare(state, &live, session, log).await.map_err(before)?;
    let route = live.router.route(route_index);
    let upstream = &live.upstreams[route.upstream];
    log.upstream = Some(upstream.name().to_string());
    door.accepts(&route.name, upstream).map_err(before)?;
    tokenizer.load_off_thread().await;
    let sample = Sample::take(
        state,
        route,
        &request,
        raw.len(),
        client_chose,
        compressor,
        door,
    );
    let chosen = compressor_for(sample.as_ref(), compressor, route);
    // Compression-cache entries are the client key's own unless the deployment shares them.
    let scope = match (&log.client, live.config.server.compression_cache_scope) {
        (Some(key), CacheScope::Key) => key.name.clone(),
        _ => String::new(),
    };
    let trace = RequestTrace::start(&session.req_header().headers, "chat", &request.model);
    let compress_wall = trace.as_ref().map(|_| SystemTime::now());
    let compress_started = std::time::Instant::now();
    let (mut outcome, pending_count) =
        compress(state, route, door, &mut request, chosen, tokenizer, &scope).await;
    if let (Some(kind), Some(m)) = (chosen, crate::metrics::recording()) {
        m.compression_seconds
            .with_label_values(&[kind.name()])
            .observe(compress_started.elapsed().as_secs_f64());
    }
    if let (Some(trace), Some(started)) = (&trace, compress_wall) {
        let compressor = KeyValue::new("condenser.compressor", outcome.compressor);
        trace.child("compress", started, vec![compressor]);
    }
    let shadowing = sample.and_then(|s| {
        s.start(
            state,
            &live,
            session,
            route_index,
            &mut request,
            &mut outcome,
        )
    });
    tracing::debug!(
        route = %route.name,
        model = %request.model,
        stream = request.stream,
        compressor = outcome.compressor,
        "forwarding"
    );
    let mut accounting = Accounting::new(
        &outcome,
        pending_count,
        &route.name,
        tokenizer,
        &request.model,
    );
    accounting.shadow = shadowing.as_ref().map(|s| s.served());
    let mut capture = shadowing.as_ref().map(|_| Capture::default());
    let outgoing = Outgoing {
        door,
        route,
        request: &request,
        unchanged: (!outcome.changed).then(|| raw.clone()),
        extra: log.rate_headers(),
    };
    let forwarded = forward(
        state,
        &live,
        session,
        outgoing,
        trace.as_ref(),
        &mut accounting,
        capture.as_mut(),
    )
    .await
    .map_err(before)?;
    let Forwarded {
        status,
        upstream,
        deployment,
        attempts,
    } = forwarded;
    log.attempts = attempts;
    log.deployment = Some(deployment);
    log.upstream = Some(upstream.name().to_string());
    let provider = crate::telemetry::provider_name(upstream.settings.kind);
    if let Some(shadowing) = shadowing {
        shadowing.finish(ClientLeg {
            status: &status,
            capture,
            provider: upstream.provider.as_ref(),
            request: &request,
            route: &route.name,
        });
    }
    // Whatever the outcome, the upstream may have read (and billed) what was sent.
    let counted = accounting.resolve().await;
    log.sent_tokens = Some(counted.1);
    let tokens = status.is_ok().then_some(counted);
    if let Some(trace) = trace {
        let code = match &status {
            Ok(code) => *code,
            Err(ExchangeError::BeforeResponse(e)) => e.status(),
            Err(ExchangeError::AfterResponse(_) | ExchangeError::Retryable { .. }) => 502,
        };
        let facts = ChatFacts {
            route: &route.name,
            provider,
            compressor: accounting.compressor,
            tokens,
            fail_open: accounting.failed_open,
        };
        trace.finish(code, facts.attributes());
    }
    log.compressor = Some(accounting.compressor);
    log.tokens = tokens;
    log.status = status?;
    Ok(())
}

/// Compresses the request's messages with `compressor`, or counts them when there is none (on
/// the blocking pool when that would cost the I/O thread more than a few tens of microseconds).
async fn compress(
    state: &AppState,
    route: &Route,
    door: FrontDoor,
    request: &mut ChatRequest,
    compressor: Option<CompressorKind>,
    tokenizer: Tokenizer,
    scope: &str,
) -> (CompressionOutcome, Option<JoinHandle<usize>>) {
    let settings = route.compression.pipeline(scope);
    // Compressing costs CPU in proportion to the text: a request over the route's `max_bytes`
    // is forwarded as sent and only counted (off the I/O threads), so one huge request cannot
    // hold a compressor or its deadline's worth of blocking threads.
    let within_cap = || {
        let bytes: usize = texts_of(door, request).iter().map(|t| t.len()).sum();
        bytes <= route.compression.max_bytes
    };
    let Some(kind) = compressor.filter(|_| within_cap()) else {
        return count_uncompressed(door, request, tokenizer);
    };
    let pipeline = &state.pipeline;
    let outcome = match door {
        FrontDoor::ChatCompletions => {
            pipeline
                .apply(request.messages_mut(), kind, settings, tokenizer)
                .await
        }
        FrontDoor::AnthropicMessages => {
            let mut view = CompressionView::of(&request.body);
            let outcome = pipeline
                .apply(&mut view.messages, kind, settings, tokenizer)
                .await;
            if outcome.changed {
                view.write_back(&mut request.body);
            }
            outcome
        }
    };
    (outcome, None)
}

/// Every message text of the request, as its door reads them.
fn texts_of(door: FrontDoor, request: &ChatRequest) -> Vec<&str> {
    match door {
        FrontDoor::ChatCompletions => request
            .messages()
            .iter()
            .flat_map(|m| text_slots(m).into_iter().map(|(_, t)| t))
            .collect(),
        FrontDoor::AnthropicMessages => inbound::texts(&request.body),
    }
}

/// The token count of an uncompressed request: inline when its texts are cached or short,
/// otherwise started on the blocking pool behind `offload`'s limit (the count is pending in the
/// second value).
fn count_uncompressed(
    door: FrontDoor,
    request: &ChatRequest,
    tokenizer: Tokenizer,
) -> (CompressionOutcome, Option<JoinHandle<usize>>) {
    let texts = texts_of(door, request);
    // One cache lookup per text: cached counts are summed now, only the rest is counted.
    let mut known = 0;
    let mut uncached = Vec::new();
    for text in texts {
        match tokenizer.cached_count(text) {
            Some(tokens) => known += tokens,
            None => uncached.push(text),
        }
    }
    let uncached_bytes: usize = uncached.iter().map(|t| t.len()).sum();
    let outcome = |tokens| CompressionOutcome {
        changed: false,
        tokens_before: tokens,
        tokens_after: tokens,
        compressor: "off",
        failed_open: false,
    };
    if uncached_bytes <= INLINE_COUNT_BYTES {
        let tokens = known + uncached.iter().map(|t| tokenizer.count(t)).sum::<usize>();
        return (outcome(tokens), None);
    }
    let owned: Vec<String> = uncached.iter().map(|t| t.to_string()).collect();
    // Counted off the I/O threads, one count per core at once (`offload`); a count that
    // panicked reports 0.
    let pending = tokio::spawn(async move {
        let counted =
            offload::run(move || owned.iter().map(|t| tokenizer.count(t)).sum::<usize>()).await;
        known + counted.unwrap_or(0)
    });
    (outcome(0), Some(pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_overrides_route_setting() {
        let ext = CompressorKind::EXTRACTIVE;
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
            Some(CompressorKind::named("truncate"))
        );
        assert!(requested_compressor(Some("zip"), true, ext).is_err());
    }
}
