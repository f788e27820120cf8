//! `GET /healthz` (liveness, with the compression counters), `GET /readyz` (readiness),
//! `GET /metrics` (Prometheus text, admin listener only) and `GET /v1/models` (the literal model
//! names routes serve, computed once at start-up).
//!
//! Readiness: condenser loads its local models, the embedding model and the shadow store before
//! it opens its listeners, so a process that answers at all has them (before that, connections
//! are refused, which orchestrators read as not ready); `/readyz` lists what is loaded.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::compress::shared::SharedStats;
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
            "computed": pipeline.cache().computed(),
            "shared_cache": pipeline.cache().shared().map(|s| &s.stats),
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

/// The `/readyz` body: what the process has loaded.
pub fn readyz_body(compressors: &[&str], shadow: bool) -> Vec<u8> {
    json!({"status": "ready", "compressors": compressors, "shadow": shadow})
        .to_string()
        .into_bytes()
}

/// The `/metrics` exposition: the registry, plus the pipeline's own counters.
pub fn metrics_body(pipeline: &Pipeline) -> Vec<u8> {
    let stats = &pipeline.stats;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
    let shared = |pick: fn(&SharedStats) -> &std::sync::atomic::AtomicU64| {
        pipeline
            .cache()
            .shared()
            .map_or(0.0, |s| load(pick(&s.stats)))
    };
    let extra = [
        (
            "compression_cache_hits_total",
            "Compressions served from the cache",
            "counter",
            pipeline.cache().hits() as f64,
        ),
        (
            "compression_cache_misses_total",
            "Compressions computed",
            "counter",
            pipeline.cache().misses() as f64,
        ),
        (
            "compressions_computed_total",
            "Compressions this process ran (misses not served by the shared tier)",
            "counter",
            pipeline.cache().computed() as f64,
        ),
        (
            "shared_cache_hits_total",
            "Local cache misses answered by the shared (Redis) tier",
            "counter",
            shared(|s| &s.hits),
        ),
        (
            "shared_cache_errors_total",
            "Shared-tier calls that failed or timed out (each switches the tier off a while)",
            "counter",
            shared(|s| &s.errors),
        ),
        (
            "shared_cache_skipped_total",
            "Shared-tier calls skipped while it was switched off",
            "counter",
            shared(|s| &s.skipped),
        ),
        (
            "requests_compressed_total",
            "Requests the pipeline compressed",
            "counter",
            load(&stats.requests_compressed),
        ),
        (
            "background_queue_depth",
            "Background compressions queued or running",
            "gauge",
            pipeline.background_depth() as f64,
        ),
        (
            "background_queue_full_total",
            "Texts not queued for background compression because the queue was full",
            "counter",
            load(&stats.background_queue_full),
        ),
    ];
    crate::metrics::metrics().render(&extra).into_bytes()
}
