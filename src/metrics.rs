//! Prometheus metrics, served as text at `GET /metrics` on the admin listener. One process-wide
//! registry (`metrics()`), recorded where things happen: the front doors (requests, tokens,
//! ratio, compression time), the upstream exchange (time to first byte, total, errors), the
//! compression pipeline (fail-open by cause) and the shadow scorer (samples, verdicts, spend).
//! Counters kept elsewhere as atomics (cache hits, background queue) are read at scrape time.
//!
//! `server.metrics = false` turns recording off (`/metrics` then serves what was recorded: nothing).
//!
//! Labels are low-cardinality by construction: route, upstream and compressor names come from the
//! configuration, statuses are HTTP codes, causes and results are fixed words. Never a model
//! name (clients choose those), a key or a user.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric condenser records.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub input_tokens: IntCounterVec,
    pub tokens_saved: IntCounterVec,
    pub compression_ratio: HistogramVec,
    pub compression_seconds: HistogramVec,
    pub fail_open: IntCounterVec,
    pub upstream_first_byte_seconds: HistogramVec,
    pub upstream_seconds: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub shadow_samples: IntCounterVec,
    pub shadow_spend_usd: CounterVec,
    pub local_model_queue_depth: IntGauge,
    pub connections_refused: IntCounterVec,
}

/// Latency buckets from 0.1 ms to a minute (LLM answers take seconds; compression milliseconds).
const SECONDS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];
const RATIOS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("condenser".into()), None)?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let h = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let shadow_spend_usd = CounterVec::new(
            Opts::new(
                "shadow_spend_usd_total",
                "USD spent on shadow legs and judge calls",
            ),
            &["route"],
        )?;
        registry.register(Box::new(shadow_spend_usd.clone()))?;
        let local_model_queue_depth = IntGauge::new(
            "local_model_queue_depth",
            "Local-model requests queued or running",
        )?;
        registry.register(Box::new(local_model_queue_depth.clone()))?;
        Ok(Self {
            requests: counter(
                "requests_total",
                "Requests answered, by route, upstream and HTTP status",
                &["route", "upstream", "status"],
            )?,
            input_tokens: counter(
                "input_tokens_total",
                "Input tokens of chat requests before and after compression",
                &["route", "stage"],
            )?,
            tokens_saved: counter(
                "tokens_saved_total",
                "Input tokens compression removed",
                &["route", "compressor"],
            )?,
            compression_ratio: histogram(
                "compression_ratio",
                "Tokens after / before, per compressed request",
                &["route", "compressor"],
                RATIOS,
            )?,
            compression_seconds: histogram(
                "compression_seconds",
                "Time a request spent in compression",
                &["compressor"],
                SECONDS,
            )?,
            fail_open: counter(
                "fail_open_total",
                "Requests forwarded uncompressed because compression failed",
                &["compressor", "cause"],
            )?,
            upstream_first_byte_seconds: histogram(
                "upstream_first_byte_seconds",
                "From sending a request upstream to its response header",
                &["upstream"],
                SECONDS,
            )?,
            upstream_seconds: histogram(
                "upstream_seconds",
                "From sending a request upstream to the end of its answer",
                &["upstream"],
                SECONDS,
            )?,
            upstream_errors: counter(
                "upstream_errors_total",
                "Upstream exchanges that failed, by kind",
                &["upstream", "kind"],
            )?,
            shadow_samples: counter(
                "shadow_samples_total",
                "Shadow samples by outcome (passed, failed, abandoned)",
                &["route", "result"],
            )?,
            connections_refused: counter(
                "connections_refused_total",
                "Connections answered 503 and closed: the listener was at server.max_connections",
                &["listener"],
            )?,
            shadow_spend_usd,
            local_model_queue_depth,
            registry,
        })
    }

    /// The Prometheus text exposition of every metric, plus the counters `extra` reads from
    /// elsewhere (name without prefix, help, kind, value).
    pub fn render(&self, extra: &[(&str, &str, &str, f64)]) -> String {
        let families = self.registry.gather();
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut buffer);
        let mut text = String::from_utf8(buffer).unwrap_or_default();
        // A labelled family with nothing recorded yet (no fail-open so far) is still announced,
        // so dashboards and alerts can be checked against what this endpoint serves.
        for (collector, kind) in self.families() {
            for desc in collector.desc() {
                // The registry adds the `condenser_` prefix when it gathers.
                let name = format!("condenser_{}", desc.fq_name);
                if !families.iter().any(|f| f.name() == name) {
                    text.push_str(&format!(
                        "# HELP {name} {}\n# TYPE {name} {kind}\n",
                        desc.help
                    ));
                }
            }
        }
        for (name, help, kind, value) in extra {
            text.push_str(&format!(
                "# HELP condenser_{name} {help}\n# TYPE condenser_{name} {kind}\ncondenser_{name} {value}\n"
            ));
        }
        text
    }

    /// Every registered family and its Prometheus type.
    fn families(&self) -> [(&dyn Collector, &'static str); 12] {
        [
            (&self.requests, "counter"),
            (&self.input_tokens, "counter"),
            (&self.tokens_saved, "counter"),
            (&self.compression_ratio, "histogram"),
            (&self.compression_seconds, "histogram"),
            (&self.fail_open, "counter"),
            (&self.upstream_first_byte_seconds, "histogram"),
            (&self.upstream_seconds, "histogram"),
            (&self.upstream_errors, "counter"),
            (&self.shadow_samples, "counter"),
            (&self.shadow_spend_usd, "counter"),
            (&self.local_model_queue_depth, "gauge"),
        ]
    }

    /// Records one upstream exchange.
    pub fn upstream_exchange(&self, upstream: &str, first_byte: Duration, total: Duration) {
        self.upstream_first_byte_seconds
            .with_label_values(&[upstream])
            .observe(first_byte.as_secs_f64());
        self.upstream_seconds
            .with_label_values(&[upstream])
            .observe(total.as_secs_f64());
    }
}

static RECORDING: AtomicBool = AtomicBool::new(true);

/// Turns recording on or off for the process (`server.metrics`); set once at start-up.
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// The metrics to record into, or `None` when recording is off (then recording costs one
/// relaxed load).
pub fn recording() -> Option<&'static Metrics> {
    RECORDING.load(Ordering::Relaxed).then(metrics)
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    // Registering fixed, distinct names cannot fail; a failure is a programming error caught by
    // the tests on the first call.
    METRICS.get_or_init(|| Metrics::new().unwrap_or_else(|e| panic!("metrics registry: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_carries_prefixed_names_and_labels() {
        let m = metrics();
        m.requests.with_label_values(&["main", "mock", "200"]).inc();
        m.upstream_exchange("mock", Duration::from_millis(2), Duration::from_millis(30));
        let text = m.render(&[("compression_cache_hits_total", "Hits", "counter", 3.0)]);
        assert!(text
            .contains("condenser_requests_total{route=\"main\",status=\"200\",upstream=\"mock\"}"));
        assert!(text.contains("condenser_upstream_seconds_bucket{upstream=\"mock\",le=\"0.05\"} "));
        assert!(text.contains("# TYPE condenser_compression_cache_hits_total counter\ncondenser_compression_cache_hits_total 3\n"));
        // Nothing failed open in this test: the family is announced all the same.
        assert!(text.contains("# TYPE condenser_fail_open_total counter\n"));
    }
}
