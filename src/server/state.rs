//! The composition root: everything a request needs, built once from a validated [`Config`] —
//! routes, upstreams, the compression pipeline with every compressor the configuration can run
//! (`compress::registry`), and the shadow runtime with its judge. `condenser-eval` builds its
//! compressors from the same registry.

use std::sync::Arc;

use pingora::connectors::http::Connector;

use super::judge::RouteJudge;
use super::upstream::Upstream;
use crate::compress::{registry, Pipeline, Tokenizer};
use crate::config::Config;
use crate::equivalence::JudgeClient;
use crate::routing::Router;
use crate::shadow::Shadow;

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
    /// The `GET /v1/models` body, which only configuration changes.
    pub models_body: Vec<u8>,
}

impl AppState {
    /// Builds the runtime state: loads configured local models (which can fail, naming the
    /// section), starts the shadow runtime, and warms what the first requests would otherwise
    /// pay for (the BPE encodings).
    pub fn new(config: Config, connector: Connector) -> Result<Self, String> {
        let upstreams = config
            .upstreams
            .iter()
            .cloned()
            .map(Upstream::new)
            .collect();
        let router = Router::new(config.routes.clone(), config.server.default_route);
        let compressors = registry::build_all(&config.compressors)?;
        let pipeline = Pipeline::new(config.server.compression_cache_bytes, compressors);
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
                        let judge: Arc<dyn JudgeClient> = Arc::new(RouteJudge::new(
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
        Tokenizer::warm_up();
        Ok(Self {
            models_body: super::health::models_body(&config),
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
