//! One structured access-log line per request — method, path, status, route, compressor, tokens
//! before and after, elapsed time and the error if any; never bodies, never keys — and the same
//! facts recorded as metrics.

use std::time::Instant;

use pingora::proxy::Session;

/// Per-request facts for the access log, filled in as the request is served.
pub struct RequestLog {
    pub start: Instant,
    pub status: u16,
    pub route: Option<String>,
    pub upstream: Option<String>,
    /// The deployment (`host:port`) of the upstream that gave the answer.
    pub deployment: Option<String>,
    /// Upstream attempts made (retries and failover included).
    pub attempts: usize,
    /// The client key the request authenticated with (`[auth]`).
    pub client: Option<crate::config::ClientKey>,
    /// Its place under the concurrency limits (released when the request ends) and its rate
    /// limit state.
    pub admission: Option<super::limits::Admission>,
    pub compressor: Option<&'static str>,
    pub tokens: Option<(usize, usize)>,
    /// Input tokens that went upstream, answered or not (for the key's token rate limit).
    pub sent_tokens: Option<usize>,
    pub error: Option<String>,
    /// Errors on the Anthropic-native front door are written in Anthropic's shape.
    pub anthropic_errors: bool,
}

impl RequestLog {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            status: 0,
            route: None,
            upstream: None,
            deployment: None,
            attempts: 0,
            client: None,
            admission: None,
            compressor: None,
            tokens: None,
            sent_tokens: None,
            error: None,
            anthropic_errors: false,
        }
    }

    /// Writes the line.
    pub fn write(&self, session: &Session) {
        let (tokens_before, tokens_after) = self.tokens.unwrap_or((0, 0));
        tracing::info!(
            method = %session.req_header().method,
            path = %session.req_header().uri.path(),
            status = self.status,
            route = self.route.as_deref().unwrap_or("-"),
            client = self.client.as_ref().map_or("-", |c| c.name.as_str()),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            deployment = self.deployment.as_deref().unwrap_or("-"),
            attempts = self.attempts,
            compressor = self.compressor.unwrap_or("-"),
            tokens_before,
            tokens_after,
            elapsed_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            error = self.error.as_deref().unwrap_or(""),
            "request"
        );
    }
}

impl RequestLog {
    /// The `x-ratelimit-*` headers of a rate-limited client key's answer.
    pub fn rate_headers(&self) -> Vec<(&'static str, String)> {
        self.admission
            .iter()
            .flat_map(|a| &a.rates)
            .flat_map(|r| r.headers())
            .collect()
    }

    /// Settles the client key's token reservation to the input tokens sent upstream.
    pub fn charge_rate_limits(&self) {
        if let Some(admission) = &self.admission {
            admission.settle_input_tokens(self.sent_tokens.or(self.tokens.map(|(_, sent)| sent)));
        }
    }

    /// Records the request in the metrics: its status by route and upstream, and for chat
    /// requests its tokens before and after compression.
    pub fn record_metrics(&self) {
        let Some(m) = crate::metrics::recording() else {
            return;
        };
        let route = self.route.as_deref().unwrap_or("-");
        let status = self.status.to_string();
        m.requests
            .with_label_values(&[route, self.upstream.as_deref().unwrap_or("-"), &status])
            .inc();
        let (Some((before, after)), Some(compressor)) = (self.tokens, self.compressor) else {
            return;
        };
        m.input_tokens
            .with_label_values(&[route, "before"])
            .inc_by(before as u64);
        m.input_tokens
            .with_label_values(&[route, "after"])
            .inc_by(after as u64);
        if compressor != "off" && before > 0 {
            m.tokens_saved
                .with_label_values(&[route, compressor])
                .inc_by(before.saturating_sub(after) as u64);
            m.compression_ratio
                .with_label_values(&[route, compressor])
                .observe(after as f64 / before as f64);
        }
    }
}

impl Default for RequestLog {
    fn default() -> Self {
        Self::new()
    }
}
