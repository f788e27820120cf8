//! The pingora service. Every request is answered in `request_filter` (which returns `Ok(true)`):
//! pingora picks the upstream peer before any body hook runs, but condenser must read the body to
//! route on `model` and to compress, so it reads the body itself and forwards over a pooled
//! connector (see DESIGN.md). Phases, in order, per request:
//! 1. `request_filter` dispatches on method and path (`/healthz`, `GET /v1/models`,
//!    `POST /v1/chat/completions`, `POST /v1/messages`, any other `/v1/*` passed through);
//! 2. the handler reads the body, routes, compresses (chat only), forwards and relays the reply;
//! 3. `logging` writes one structured access line (no bodies, no keys).

mod body;
mod chat;
mod messages;
mod passthrough;
mod respond;
mod response;
mod sampling;
mod shadowing;
pub mod upstream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use serde_json::json;

use crate::compress::Pipeline;
use crate::config::Config;
use crate::error::ProxyError;
use crate::routing::Router;
use crate::shadow::Shadow;
use upstream::{ExchangeError, Upstream};

/// Everything a request needs, built once at start-up.
pub struct AppState {
    pub config: Config,
    pub router: Router,
    pub upstreams: Vec<Upstream>,
    pub pipeline: Pipeline,
    pub connector: Connector,
    /// `[shadow]`: sampling, background legs and scoring; `None` when not configured.
    pub shadow: Option<Arc<Shadow>>,
    /// Connection pool of the shadow runtime (background legs and the judge).
    pub shadow_connector: Arc<Connector>,
}

impl AppState {
    /// Builds the runtime state; loading a configured local model can fail.
    pub fn new(config: Config, connector: Connector) -> Result<Self, String> {
        let upstreams = config
            .upstreams
            .iter()
            .cloned()
            .map(Upstream::new)
            .collect();
        let router = Router::new(config.routes.clone(), config.server.default_route);
        let pipeline = with_local_models(
            Pipeline::new(config.server.compression_cache_bytes),
            &config,
        )?;
        let shadow_connector = Arc::new(Connector::new(None));
        let shadow = match &config.shadow {
            None => None,
            Some(settings) => {
                let judge = match &settings.judge_model {
                    None => None,
                    Some(model) => {
                        let route = router
                            .select(None, Some(model))
                            .map_err(|e| format!("shadow.judge_model: {e}"))?;
                        let upstream = router.route(route).upstream;
                        let judge: Arc<dyn crate::equivalence::JudgeClient> =
                            Arc::new(shadowing::RouteJudge::new(
                                Upstream::new(config.upstreams[upstream].clone()),
                                shadow_connector.clone(),
                                model.clone(),
                            ));
                        Some(judge)
                    }
                };
                Some(Shadow::start(settings.clone(), &config.routes, judge)?)
            }
        };
        Ok(Self {
            config,
            router,
            upstreams,
            pipeline,
            connector,
            shadow,
            shadow_connector,
        })
    }
}

/// Loads the models of `[compressors.prune]`, `[compressors.rewrite]` and `[compressors.select]`
/// (once each) and
/// registers their compressors.
#[cfg(feature = "local-model")]
fn with_local_models(mut pipeline: Pipeline, config: &Config) -> Result<Pipeline, String> {
    use crate::compress::select_prompt::WINDOW_TOKENS;
    use crate::compress::{build, Prune, Rewrite, Select};
    use crate::config::{CompressorKind, LocalModelSettings};
    use crate::llm::{LocalModel, LocalModelConfig, Vocabulary};
    use std::time::Duration;
    let load = |name: &str, settings: &LocalModelSettings| {
        if let Some((adapter, _)) = &settings.lora {
            crate::adapters::check_lora(&settings.model, adapter)
                .map_err(|e| format!("compressors.{name}.lora: {e}"))?;
        }
        let model = LocalModel::load(&LocalModelConfig {
            path: settings.model.clone(),
            lora: settings.lora.clone(),
            threads: settings.threads,
            context: settings.context,
            workers: settings.workers,
            queue: settings.queue,
            gpu_layers: settings.gpu_layers,
            // Compressor outputs are cached by input; they must not depend on the request
            // served before.
            reuse_prompt_prefix: false,
        })
        .map_err(|e| format!("compressors.{name}: {e}"))?;
        tracing::info!(compressor = name, model = %settings.model.display(), workers = settings.workers, "local model loaded");
        Ok::<_, String>(Arc::new(model))
    };
    if let Some(settings) = &config.prune {
        let prune = Prune::new(
            load("prune", settings)?,
            Duration::from_millis(settings.timeout_ms),
        );
        pipeline = pipeline.with_compressor(CompressorKind::Prune, Arc::new(prune));
    }
    if let Some(settings) = &config.rewrite {
        let fallback = settings.fallback.and_then(build);
        let rewrite = Rewrite::new(
            load("rewrite", settings)?,
            Duration::from_millis(settings.timeout_ms),
            fallback,
        );
        pipeline = pipeline.with_compressor(CompressorKind::Rewrite, Arc::new(rewrite));
    }
    if let Some(settings) = &config.select {
        let vocab =
            Vocabulary::load(&settings.model).map_err(|e| format!("compressors.select: {e}"))?;
        let select = Select::new(
            load("select", settings)?,
            vocab,
            WINDOW_TOKENS.min(settings.context as usize),
            Duration::from_millis(settings.timeout_ms),
        )
        .map_err(|e| format!("compressors.select: {e}"))?
        .with_blend(settings.blend.unwrap_or(crate::compress::DEFAULT_BLEND));
        pipeline = pipeline.with_compressor(CompressorKind::Select, Arc::new(select));
    }
    Ok(pipeline)
}

#[cfg(not(feature = "local-model"))]
fn with_local_models(pipeline: Pipeline, _config: &Config) -> Result<Pipeline, String> {
    Ok(pipeline)
}

pub struct Condenser {
    state: Arc<AppState>,
}

impl Condenser {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// Per-request facts for the access log.
pub struct RequestLog {
    start: Instant,
    status: u16,
    route: Option<String>,
    compressor: Option<&'static str>,
    tokens: Option<(usize, usize)>,
    error: Option<String>,
    /// Errors on the Anthropic-native front door are written in Anthropic's shape.
    anthropic_errors: bool,
}

pub(crate) fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

impl Condenser {
    async fn dispatch(
        &self,
        session: &mut Session,
        log: &mut RequestLog,
    ) -> Result<(), ExchangeError> {
        let state = &self.state;
        let method = session.req_header().method.as_str().to_string();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => {
                let body = json!({
                    "status": "ok",
                    "compression": {
                        "requests_compressed": state.pipeline.stats.requests_compressed.load(Ordering::Relaxed),
                        "fail_open": state.pipeline.stats.fail_open.load(Ordering::Relaxed),
                        "cache_hits": state.pipeline.cache().hits(),
                        "cache_misses": state.pipeline.cache().misses(),
                        "background": {
                            "queue_depth": state.pipeline.background_depth(),
                            "queued": state.pipeline.stats.background_queued.load(Ordering::Relaxed),
                            "queue_full": state.pipeline.stats.background_queue_full.load(Ordering::Relaxed),
                            "hits": state.pipeline.stats.background_hits.load(Ordering::Relaxed),
                            "misses": state.pipeline.stats.background_misses.load(Ordering::Relaxed),
                        },
                    }
                });
                self.reply(session, log, 200, body.to_string().into_bytes())
                    .await
            }
            ("GET", "/v1/models") => {
                let body = models_body(&state.config);
                self.reply(session, log, 200, body).await
            }
            ("GET", "/admin/shadow") if self.on_admin_listener(session) => {
                let Some(shadow) = &state.shadow else {
                    return Err(ExchangeError::BeforeResponse(ProxyError::NotFound {
                        method,
                        path,
                    }));
                };
                let query = session.req_header().uri.query().map(str::to_string);
                let body = shadowing::admin_report(shadow, query.as_deref())
                    .await
                    .map_err(ExchangeError::BeforeResponse)?;
                self.reply(session, log, 200, body).await
            }
            (_, p) if self.on_admin_listener(session) || p.starts_with("/admin/") => {
                Err(ExchangeError::BeforeResponse(ProxyError::NotFound {
                    method,
                    path,
                }))
            }
            ("POST", "/v1/chat/completions") => chat::handle(state, session, log).await,
            ("POST", "/v1/messages") => {
                log.anthropic_errors = true;
                messages::handle(state, session, log).await
            }
            (_, p) if p.starts_with("/v1/") => passthrough::handle(state, session, log).await,
            _ => Err(ExchangeError::BeforeResponse(ProxyError::NotFound {
                method,
                path,
            })),
        }
    }

    /// Admin endpoints answer only on `server.admin_listen`, never on the public listener.
    fn on_admin_listener(&self, session: &Session) -> bool {
        let Some(admin) = self.state.config.server.admin_listen else {
            return false;
        };
        session
            .server_addr()
            .and_then(|a| a.as_inet())
            .is_some_and(|a| *a == admin)
    }

    async fn reply(
        &self,
        session: &mut Session,
        log: &mut RequestLog,
        status: u16,
        body: Vec<u8>,
    ) -> Result<(), ExchangeError> {
        log.status = status;
        respond::json(session, status, body)
            .await
            .map_err(|e| ExchangeError::AfterResponse(e.to_string()))
    }
}

/// `GET /v1/models`: the literal model names routes serve. Glob patterns cannot be listed.
fn models_body(config: &Config) -> Vec<u8> {
    let mut seen = std::collections::HashSet::new();
    let data: Vec<_> = config
        .routes
        .iter()
        .flat_map(|r| {
            let owner = config.upstreams[r.upstream].name.clone();
            r.model_patterns
                .iter()
                .filter(|m| !m.contains(['*', '?', '[', '{']))
                .map(move |m| (m.clone(), owner.clone()))
        })
        .filter(|(m, _)| seen.insert(m.clone()))
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}

#[async_trait]
impl ProxyHttp for Condenser {
    type CTX = RequestLog;

    fn new_ctx(&self) -> Self::CTX {
        RequestLog {
            start: Instant::now(),
            status: 0,
            route: None,
            compressor: None,
            tokens: None,
            error: None,
            anthropic_errors: false,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Unreachable: request_filter answers every request.
        Err(Error::explain(
            ErrorType::InternalError,
            "no proxy-state-machine path",
        ))
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<bool> {
        match self.dispatch(session, ctx).await {
            Ok(()) => Ok(true),
            Err(ExchangeError::BeforeResponse(err)) => {
                ctx.status = err.status();
                ctx.error = Some(err.to_string());
                respond::error(session, &err, ctx.anthropic_errors).await?;
                Ok(true)
            }
            Err(ExchangeError::AfterResponse(reason)) => {
                ctx.error = Some(reason.clone());
                // The response has started: closing the connection is the only way to tell the
                // client the body is incomplete.
                session.set_keepalive(None);
                Err(Error::explain(ErrorType::WriteError, reason))
            }
        }
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut Self::CTX,
    ) -> FailToProxy
    where
        Self::CTX: Send + Sync,
    {
        if session.response_written().is_none() {
            let err = ProxyError::Client(e.etype().as_str().to_string());
            let _ = respond::error(session, &err, false).await;
        }
        FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        let (tokens_before, tokens_after) = ctx.tokens.unwrap_or((0, 0));
        tracing::info!(
            method = %session.req_header().method,
            path = %session.req_header().uri.path(),
            status = ctx.status,
            route = ctx.route.as_deref().unwrap_or("-"),
            compressor = ctx.compressor.unwrap_or("-"),
            tokens_before,
            tokens_after,
            elapsed_ms = ctx.start.elapsed().as_secs_f64() * 1000.0,
            error = ctx.error.as_deref().unwrap_or(""),
            "request"
        );
    }
}
