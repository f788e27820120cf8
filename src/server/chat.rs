//! `POST /v1/chat/completions`: read the body, validate, route on `model`, compress per the
//! route and the `x-condenser-compress` header, forward, and relay the answer (streamed or not)
//! with the `x-condenser-*` accounting headers.

use bytes::Bytes;
use pingora::proxy::Session;

use super::response::{ResponseMode, Translation};
use super::upstream::ExchangeError;
use super::{body, header_str, AppState, RequestLog};
use crate::compress::{kind_from_name, Pipeline, Tokenizer};
use crate::config::CompressorKind;
use crate::error::ProxyError;
use crate::openai::ChatRequest;

/// What the client asked for in `x-condenser-compress`.
fn requested_compressor(
    header: Option<&str>,
    route_enabled: bool,
    route_compressor: CompressorKind,
) -> Result<Option<CompressorKind>, ProxyError> {
    match header.map(|h| h.trim().to_ascii_lowercase()) {
        None => Ok(route_enabled.then_some(route_compressor)),
        Some(h) if h == "off" => Ok(None),
        Some(h) if h == "on" => Ok(Some(route_compressor)),
        Some(h) => kind_from_name(&h)
            .map(Some)
            .ok_or(ProxyError::UnknownCompressor(h)),
    }
}

pub async fn handle(
    state: &AppState,
    session: &mut Session,
    log: &mut RequestLog,
) -> Result<(), ExchangeError> {
    let before = ExchangeError::BeforeResponse;
    let raw = body::read_whole(session, state.config.server.max_body_bytes)
        .await
        .map_err(before)?;
    let mut request = ChatRequest::parse(&raw).map_err(before)?;
    let route_index = state
        .router
        .select(
            header_str(session, "x-condenser-route"),
            Some(&request.model),
        )
        .map_err(before)?;
    let route = state.router.route(route_index);
    log.route = Some(route.name.clone());
    let settings = &route.compression;
    let kind = requested_compressor(
        header_str(session, "x-condenser-compress"),
        settings.enabled,
        settings.compressor,
    )
    .map_err(before)?;

    let tokenizer = Tokenizer::for_model(&request.model);
    let outcome = match kind {
        Some(kind) => {
            state
                .pipeline
                .apply(request.messages_mut(), kind, settings, tokenizer)
                .await
        }
        None => Pipeline::count_only(request.messages(), tokenizer),
    };
    log.compressor = Some(outcome.compressor);
    log.tokens = Some((outcome.tokens_before, outcome.tokens_after));

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
    let mut extra = vec![
        (
            "x-condenser-tokens-before",
            outcome.tokens_before.to_string(),
        ),
        ("x-condenser-tokens-after", outcome.tokens_after.to_string()),
        ("x-condenser-compressor", outcome.compressor.to_string()),
        ("x-condenser-route", route.name.clone()),
    ];
    if outcome.failed_open {
        extra.push(("x-condenser-fail-open", "true".to_string()));
    }
    tracing::debug!(
        route = %route.name,
        model = %request.model,
        stream = request.stream,
        tokens_before = outcome.tokens_before,
        tokens_after = outcome.tokens_after,
        "forwarding chat completion"
    );
    let status = upstream
        .exchange(
            &state.connector,
            session,
            header,
            upstream_body,
            &extra,
            mode,
        )
        .await?;
    log.status = status;
    Ok(())
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
