//! A shadowed request's other version as a background leg: always non-streaming, encoded by the
//! same front-door codec as client requests, sent on the shadow runtime's own connection pool. A
//! sampled request's lifecycle around it is in `sampling`.

use std::sync::Arc;
use std::time::Instant;

use pingora::http::RequestHeader;

use super::codec::{ask_whole, FrontDoor};
use super::state::{AppState, Live};
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
    let encoded = door.encode(&live.upstreams[upstream_index], leg, client_path, None)?;
    let client = client.clone();
    let (state, live) = (state.clone(), live.clone());
    Ok(shadow.spawn_leg(async move {
        let started = Instant::now();
        let target = live.upstreams[upstream_index].target(&[]);
        let answer = ask_whole(
            &target,
            &state.shadow_connector,
            &client,
            encoded,
            "shadow leg",
        )
        .await?;
        Ok(LegAnswer {
            answer,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }))
}
