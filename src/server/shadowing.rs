//! A shadowed request's other version as a background leg: always non-streaming, encoded by the
//! same front-door codec as client requests, sent on the shadow runtime's own connection pool. A
//! sampled request's lifecycle around it is in `sampling`.

use std::sync::Arc;
use std::time::Instant;

use pingora::http::RequestHeader;

use super::codec::FrontDoor;
use super::state::{AppState, Live};
use crate::equivalence::Answer;
use crate::error::ProxyError;
use crate::openai::ChatRequest;
use crate::shadow::{LegAnswer, LegHandle, Shadow};

/// Encodes `leg` for the route's upstream (headers, key and translation as for the client's own
/// request) and starts it on the shadow runtime.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn_leg(
    state: &Arc<AppState>,
    live: &Arc<Live>,
    shadow: &Shadow,
    upstream_index: usize,
    client: &RequestHeader,
    client_path: &str,
    leg: &ChatRequest,
    door: FrontDoor,
) -> Result<LegHandle, ProxyError> {
    let upstream = &live.upstreams[upstream_index];
    let encoded = door.encode(upstream, leg, client_path, None)?;
    let mut header = upstream.request_header(
        client,
        &encoded.path,
        encoded.body.len(),
        false,
        &encoded.headers,
    )?;
    let (body, native_model) = (encoded.body, encoded.native_model);
    // The client may have asked for a stream; this leg is read whole.
    let _ = header.insert_header("accept", "application/json");
    let (state, live) = (state.clone(), live.clone());
    Ok(shadow.spawn_leg(async move {
        let started = Instant::now();
        let upstream = &live.upstreams[upstream_index];
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
