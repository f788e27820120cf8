//! `POST /v1/messages`: the Anthropic-native front door, for Claude Code and Anthropic SDK users
//! who set `ANTHROPIC_BASE_URL`. The request stays in Anthropic's format end to end (headers such
//! as `anthropic-beta` / `anthropic-version` and `cache_control` blocks pass through untouched);
//! only long user text and `tool_result` content are compressed, by the same policy and pipeline
//! as chat completions. The answer, streamed or not, is relayed as Anthropic sent it.

use bytes::Bytes;
use pingora::proxy::Session;

use super::chat::{accounting_headers, compress, path_and_query, prepare, Prepared};
use super::response::ResponseMode;
use super::upstream::{ExchangeError, Reply};
use super::{AppState, RequestLog};
use crate::config::UpstreamKind;
use crate::error::ProxyError;
use crate::providers::anthropic::inbound::CompressionView;
use crate::providers::anthropic::API_VERSION;

pub async fn handle(
    state: &AppState,
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
        ..
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
    let mut view = CompressionView::of(&request.body);
    let outcome = compress(state, &mut view.messages, route, compressor, tokenizer, log).await;
    let body = if outcome.changed {
        view.write_back(&mut request.body);
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
    let extra = accounting_headers(&outcome, &route_settings.name, tokenizer, &request.model);
    log.status = upstream
        .exchange(
            &state.connector,
            session,
            header,
            body,
            Reply {
                extra: &extra,
                mode: ResponseMode::Relay,
                capture: None,
            },
        )
        .await?;
    Ok(())
}
