//! One sampled request's life on the proxy, shared by both front doors: `Sample::take` decides
//! before compression (rate, budget), `Sample::start` sends the legs the client does not get and
//! sets the request to the one it does, and `Shadowing::finish` reads the client's answer from
//! what it received and hands the sample to the scorer — or abandons it, releasing its budget.

use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;

use super::codec::{leg_request, FrontDoor};
use super::relay::{Capture, ExchangeError};
use super::request::path_and_query;
use super::shadowing::spawn_leg;
use super::state::{AppState, Live};
use crate::compress::{question_text, CompressionOutcome};
use crate::config::{CompressorKind, Leg, RawPrice, Rollout, Route};
use crate::error::ProxyError;
use crate::openai::ChatRequest;
use crate::providers::Provider;
use crate::shadow::{LegAnswer, LegHandle, Pending, Shadow};

/// Output tokens assumed when reserving budget for a leg; the answer's usage replaces it.
const ESTIMATED_ANSWER_TOKENS: u64 = 512;
/// The judge's rubric and reply, assumed likewise for its call.
const JUDGE_RUBRIC_TOKENS: u64 = 150;
const JUDGE_REPLY_TOKENS: u64 = 100;

/// What shadowing this request may cost, before the exact counts exist: per compared pair (one,
/// two with the noise floor) a background leg priced from the body size (about 4 bytes per
/// token) and a judge call priced from the request text and two answers; `None` when the model
/// or the judge has no price.
fn estimate_cost(
    shadow: &Shadow,
    route: &Route,
    model: &str,
    request_text: &str,
    body_len: usize,
) -> Option<f64> {
    let settings = shadow.settings();
    let pairs = 1.0
        + f64::from(u8::from(
            route.shadow.as_ref().is_some_and(|s| s.noise_floor),
        ));
    let tokens = |input: u64, output: u64, price: RawPrice| {
        (input as f64 * price.input + output as f64 * price.output) / 1e6
    };
    let leg = tokens(
        (body_len / 4) as u64,
        ESTIMATED_ANSWER_TOKENS,
        settings.price(model)?,
    );
    let judge = match settings.judge_model.as_deref() {
        None => 0.0,
        Some(judge) => {
            let request_tokens = (request_text.len() / 4) as u64;
            let prompt = JUDGE_RUBRIC_TOKENS + request_tokens + 2 * ESTIMATED_ANSWER_TOKENS;
            tokens(prompt, JUDGE_REPLY_TOKENS, settings.price(judge)?)
        }
    };
    Some(pairs * (leg + judge))
}

/// A request chosen for shadowing, with its budget reserved, before compression.
pub(super) struct Sample<'a> {
    shadow: &'a Shadow,
    reserved_usd: f64,
    /// The request as the client sent it.
    original: ChatRequest,
    /// Its question (`compress::question_text`): the judge's view and the sample's domain.
    request_text: String,
    door: FrontDoor,
    /// Unsampled, the request would have been compressed; otherwise a sample that cannot start
    /// goes upstream as the client sent it.
    compresses_unsampled: bool,
}

impl<'a> Sample<'a> {
    /// Whether this request is sampled. A client that chose compression itself
    /// (`x-condenser-compress`) is never shadowed.
    pub fn take(
        state: &'a AppState,
        route: &Route,
        request: &ChatRequest,
        body_len: usize,
        client_chose: bool,
        requested: Option<CompressorKind>,
        door: FrontDoor,
    ) -> Option<Self> {
        let shadow = state.shadow.as_deref().filter(|_| !client_chose)?;
        // Only a request past the sample-rate roll has its text read and its cost estimated.
        let mut request_text = String::new();
        let reserved_usd = shadow.try_sample(route, || {
            request_text = question_text(request.messages());
            estimate_cost(shadow, route, &request.model, &request_text, body_len)
        })?;
        Some(Self {
            shadow,
            reserved_usd,
            original: request.clone(),
            request_text,
            door,
            compresses_unsampled: requested.is_some(),
        })
    }

    /// Starts the legs the client does not get and sets `request` (which arrives compressed) to
    /// the leg it does. `None`: nothing to compare (compression changed nothing) or the legs could
    /// not start (logged); the sample is abandoned, never the client's request, which then goes as
    /// it would have unsampled.
    pub fn start(
        self,
        state: &Arc<AppState>,
        live: &Arc<Live>,
        session: &Session,
        route_index: usize,
        request: &mut ChatRequest,
        outcome: &mut CompressionOutcome,
    ) -> Option<Shadowing<'a>> {
        let route = &live.router.route(route_index).name;
        let legs = match self.spawn_legs(state, live, session, route_index, request, outcome) {
            Ok(legs) => legs,
            Err(e) => {
                tracing::warn!(route = %route, error = %e, "cannot start a shadow leg");
                None
            }
        };
        let Some(legs) = legs else {
            self.shadow.abandon(route, self.reserved_usd, Vec::new());
            if !self.compresses_unsampled {
                restore(self.original, request, outcome);
            }
            return None;
        };
        if legs.served == Leg::Original {
            restore(self.original, request, outcome);
        }
        Some(Shadowing {
            shadow: self.shadow,
            reserved_usd: self.reserved_usd,
            door: self.door,
            legs,
            started_at: Instant::now(),
        })
    }

    /// Spawns the legs the client does not get; `Ok(None)`: nothing to compare.
    fn spawn_legs(
        &self,
        state: &Arc<AppState>,
        live: &Arc<Live>,
        session: &Session,
        route_index: usize,
        request: &ChatRequest,
        outcome: &CompressionOutcome,
    ) -> Result<Option<Legs>, ProxyError> {
        let route = live.router.route(route_index);
        let Some(cfg) = &route.shadow else {
            return Ok(None);
        };
        if !outcome.changed {
            return Ok(None);
        }
        let served = match route.compression.rollout {
            Rollout::Auto { .. } => self.shadow.serving(&route.name).unwrap_or(Leg::Original),
            Rollout::Manual => cfg.serve,
        };
        let other = match served {
            Leg::Original => leg_request(request),
            Leg::Compressed => leg_request(&self.original),
        };
        let noise = cfg.noise_floor.then(|| leg_request(&self.original));
        let client_path = path_and_query(session);
        let spawn = |leg: &ChatRequest| {
            spawn_leg(
                state,
                live,
                self.shadow,
                route.upstream,
                session.req_header(),
                &client_path,
                leg,
                self.door,
            )
        };
        let other = spawn(&other)?;
        let noise = match noise.as_ref().map(spawn).transpose() {
            Ok(handle) => handle,
            Err(e) => {
                other.abort();
                return Err(e);
            }
        };
        Ok(Some(Legs {
            served,
            compressor: outcome.compressor,
            request_text: self.request_text.clone(),
            tokens_original: outcome.tokens_before as u64,
            tokens_compressed: outcome.tokens_after as u64,
            other,
            noise,
        }))
    }
}

/// Puts the client's own request back, uncompressed.
fn restore(original: ChatRequest, request: &mut ChatRequest, outcome: &mut CompressionOutcome) {
    *request = original;
    outcome.changed = false;
    outcome.tokens_after = outcome.tokens_before;
    outcome.compressor = "off";
}

/// A sampled request is compressed even on a route that serves the original: the comparison
/// needs the compressed version.
pub(super) fn compressor_for(
    sample: Option<&Sample>,
    requested: Option<CompressorKind>,
    route: &Route,
) -> Option<CompressorKind> {
    match sample {
        Some(_) => requested.or(Some(route.compression.compressor)),
        None => requested,
    }
}

/// The background legs of a sampled request, and what the scorer needs to know of it.
struct Legs {
    served: Leg,
    /// The compressor of the compressed leg, whichever leg the client gets: a route that serves
    /// originals while it is shadowed is still measuring this compressor.
    compressor: &'static str,
    request_text: String,
    tokens_original: u64,
    tokens_compressed: u64,
    other: LegHandle,
    noise: Option<LegHandle>,
}

/// A sampled request whose background legs are running while the client's leg is relayed.
pub(super) struct Shadowing<'a> {
    shadow: &'a Shadow,
    reserved_usd: f64,
    door: FrontDoor,
    legs: Legs,
    /// The client's leg is timed from when the background legs started.
    started_at: Instant,
}

/// The client's leg as it ended.
pub(super) struct ClientLeg<'r> {
    pub status: &'r Result<u16, ExchangeError>,
    pub capture: Option<Capture>,
    pub provider: &'r dyn Provider,
    pub request: &'r ChatRequest,
    pub route: &'r str,
}

impl Shadowing<'_> {
    /// Which version the client gets (`x-condenser-shadow`).
    pub fn served(&self) -> Leg {
        self.legs.served
    }

    /// Hands the sample to the scorer, or abandons it (legs aborted, budget released) when the
    /// client's answer cannot be read.
    pub fn finish(self, client: ClientLeg) {
        let latency_ms = self.started_at.elapsed().as_secs_f64() * 1000.0;
        let answer = match (client.status, &client.capture) {
            (Ok(200..=299), Some(c)) if !c.overflowed => self.door.client_answer(
                client.provider,
                &client.request.model,
                client.request.stream,
                &c.bytes,
            ),
            _ => None,
        };
        let Some(answer) = answer else {
            let legs = std::iter::once(self.legs.other)
                .chain(self.legs.noise)
                .collect();
            self.shadow.abandon(client.route, self.reserved_usd, legs);
            return;
        };
        self.shadow.submit(Pending {
            route: client.route.to_string(),
            model: client.request.model.clone(),
            compressor: self.legs.compressor.to_string(),
            served: self.legs.served,
            request_text: self.legs.request_text,
            tokens_original: self.legs.tokens_original,
            tokens_compressed: self.legs.tokens_compressed,
            client: LegAnswer { answer, latency_ms },
            other: self.legs.other,
            noise: self.legs.noise,
            reserved_usd: self.reserved_usd,
        });
    }
}
