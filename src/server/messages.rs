//! `POST /v1/messages`: the Anthropic-native front door, for Claude Code and Anthropic SDK users
//! who set `ANTHROPIC_BASE_URL`. The request stays in Anthropic's format end to end (headers such
//! as `anthropic-beta` / `anthropic-version` and `cache_control` blocks pass through untouched);
//! only long user text and `tool_result` content are compressed, by the same policy and pipeline
//! as chat completions. The answer, streamed or not, is relayed as Anthropic sent it. Sampled
//! requests are shadowed like chat completions: the other leg goes to the same Anthropic upstream
//! in Anthropic's format, and both answers are read through the Anthropic translation for scoring.

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;

use super::chat::{
    accounting_headers, compress, forward, path_and_query, prepare, ClientLegRequest, Prepared,
};
use super::response::ResponseMode;
use super::sampling::{compressor_for, Sample};
use super::shadowing::FrontDoor;
use super::upstream::ExchangeError;
use super::{AppState, RequestLog};
use crate::config::UpstreamKind;
use crate::error::ProxyError;
use crate::providers::anthropic::inbound::CompressionView;
use crate::providers::anthropic::API_VERSION;

pub async fn handle(
    state: &Arc<AppState>,
    session: &mut Session,
    log: &mut RequestLog,
) -> Result<(), ExchangeError> {
    let before = ExchangeError::BeforeResponse;
    let Prepared {
        raw,
        mut request,
        route,
        compressor,
        tokenizer,
        client_chose,
    } = prepare(state, session, log).await.map_err(before)?;
    let route_settings = state.router.route(route);
    let upstream = &state.upstreams[route_settings.upstream];
    if upstream.settings.kind != UpstreamKind::Anthropic {
        return Err(before(ProxyError::InvalidRequest(format!(
            "route `{}` leads to upstream `{}`, which does not speak the Anthropic Messages API",
            route_settings.name,
            upstream.name()
        ))));
    }
    let sample = Sample::take(
        state,
        route_settings,
        &request,
        raw.len(),
        client_chose,
        compressor,
        FrontDoor::AnthropicMessages,
    );
    let mut view = CompressionView::of(&request.body);
    let mut outcome = compress(
        state,
        &mut view.messages,
        route,
        compressor_for(sample.as_ref(), compressor, route_settings),
        tokenizer,
        log,
    )
    .await;
    if outcome.changed {
        view.write_back(&mut request.body);
    }
    let shadowing = sample.and_then(|s| s.start(state, session, route, &mut request, &mut outcome));
    let body = if outcome.changed {
        Bytes::from(request.to_bytes())
    } else {
        raw
    };
    let path = upstream.upstream_path(&path_and_query(session));
    let header = upstream
        .request_header(
            session.req_header(),
            &path,
            body.len(),
            false,
            &[("anthropic-version", API_VERSION.to_string())],
        )
        .map_err(before)?;
    let leg = ClientLegRequest {
        upstream,
        header,
        body,
        mode: ResponseMode::Relay,
        extra: accounting_headers(&outcome, &route_settings.name, tokenizer, &request.model),
    };
    let name = &route_settings.name;
    log.status = forward(state, session, leg, shadowing, &request, name, &outcome).await?;
    Ok(())
}
