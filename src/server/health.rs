//! `GET /healthz` (liveness, with the compression counters) and `GET /v1/models` (the literal
//! model names routes serve, computed once at start-up).

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::compress::Pipeline;
use crate::config::Config;

/// The `/healthz` body.
pub fn healthz_body(pipeline: &Pipeline) -> Vec<u8> {
    let stats = &pipeline.stats;
    json!({
        "status": "ok",
        "compression": {
            "requests_compressed": stats.requests_compressed.load(Ordering::Relaxed),
            "fail_open": stats.fail_open.load(Ordering::Relaxed),
            "cache_hits": pipeline.cache().hits(),
            "cache_misses": pipeline.cache().misses(),
            "background": {
                "queue_depth": pipeline.background_depth(),
                "queued": stats.background_queued.load(Ordering::Relaxed),
                "queue_full": stats.background_queue_full.load(Ordering::Relaxed),
                "hits": stats.background_hits.load(Ordering::Relaxed),
                "misses": stats.background_misses.load(Ordering::Relaxed),
            },
        }
    })
    .to_string()
    .into_bytes()
}

/// The `/v1/models` body: literal model names only (glob patterns cannot be listed), each once.
pub fn models_body(config: &Config) -> Vec<u8> {
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
