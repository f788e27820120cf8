//! Every other `/v1/*` endpoint (embeddings, files, audio, responses, ...): forwarded unchanged to
//! the route's upstream when the route's and the client key's allowlists allow it
//! (`access::may_pass_through`). The body is read whole (under the same cap and deadline) so a
//! JSON `model` can pick the route and a stale pooled connection can be retried safely; its
//! bytes / 4 are charged to the key's input-token limit.

use pingora::proxy::Session;

use super::access_log::RequestLog;
use super::relay::{ExchangeError, ResponseMode};
use super::request::{header_str, path_and_query, read_whole};
use super::state::{AppState, Live};
use super::upstream::{Reply, Upstream};
use crate::openai::headers;

pub async fn handle(
    state: &AppState,
    live: &Live,
    session: &mut Session,
    log: &mut RequestLog,
) -> Result<(), ExchangeError> {
    let before = ExchangeError::BeforeResponse;
    let server = &live.config.server;
    let raw = read_whole(session, server.max_body_bytes, server.body_deadline())
        .await
        .map_err(before)?;
    log.sent_tokens = Some(raw.len() / 4);
    let model = model_of(&raw);
    let route_index = crate::access::route_for(
        &live.router,
        log.client.as_ref(),
        header_str(session, headers::ROUTE),
        model.as_deref(),
    )
    .map_err(before)?;
    let route = live.router.route(route_index);
    log.route = Some(route.name.clone());
    let header = session.req_header();
    crate::access::may_pass_through(
        route,
        live.config.auth.is_some(),
        log.client.as_ref(),
        header.method.as_str(),
        header.uri.path(),
    )
    .map_err(before)?;
    let upstream = &live.upstreams[route.upstream];
    log.upstream = Some(upstream.name().to_string());
    let target = upstream.target(&[]);
    log.deployment = Some(target.label());
    let path = Upstream::relative_path(&path_and_query(session)).to_string();
    let header = target
        .request_header(session.req_header(), &path, raw.len(), true, &[])
        .map_err(before)?;
    let mut extra = vec![(headers::ROUTE, route.name.clone())];
    extra.extend(log.rate_headers());
    log.status = target
        .exchange(
            &state.connector,
            session,
            header,
            raw,
            Reply {
                extra,
                accounting: None,
                retry: None,
                mode: ResponseMode::Relay,
                capture: None,
            },
        )
        .await?;
    Ok(())
}

/// The `model` of a JSON body, when there is one.
fn model_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithModel {
        model: String,
    }
    if body.first().is_some_and(|b| *b == b'{') {
        serde_json::from_slice::<WithModel>(body)
            .ok()
            .map(|w| w.model)
    } else {
        None
    }
}
