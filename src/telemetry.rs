//! OpenTelemetry traces: one span per chat request, following the GenAI semantic conventions
//! where they fit (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
//! `gen_ai.usage.input_tokens`) plus condenser's own (`condenser.route`, `condenser.compressor`,
//! tokens before and after, `condenser.fail_open`), with child spans for compression and the
//! upstream exchange. A client's W3C `traceparent` makes the request span its child; the
//! upstream request carries the upstream span's `traceparent`.
//!
//! Exported over OTLP/HTTP (JSON) in batches from a background thread, to `[telemetry]
//! otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`. Off by default; when off no
//! span is created and no header is touched (one relaxed load per request).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

static ENABLED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP exporter: {0}")]
pub struct TelemetryError(String);

/// Whether spans are recorded.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts exporting when an endpoint is configured (`endpoint`, else the environment's
/// `OTEL_EXPORTER_OTLP_ENDPOINT`); returns the provider to flush at shutdown. `sample_rate`
/// is the share of traces recorded when the client did not decide (parent-based otherwise).
pub fn init(
    endpoint: Option<&str>,
    sample_rate: f64,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let from_env = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let Some(base) = endpoint.map(str::to_string).or(from_env) else {
        return Ok(None);
    };
    let url = format!("{}/v1/traces", base.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("condenser")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_rate,
        ))))
        .with_resource(resource)
        .build();
    global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// The GenAI provider name of an upstream dialect.
pub fn provider_name(kind: crate::config::UpstreamKind) -> &'static str {
    match kind {
        crate::config::UpstreamKind::Openai => "openai",
        crate::config::UpstreamKind::Anthropic => "anthropic",
        crate::config::UpstreamKind::Gemini => "gcp.gemini",
    }
}

struct HeaderMapExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderMapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Headers(Vec<(String, String)>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// One request's trace: the request span, and the context its children start from.
pub struct RequestTrace {
    cx: Context,
}

impl RequestTrace {
    /// Starts the request span (a child of the client's `traceparent` when it sent one);
    /// `None` when tracing is off.
    pub fn start(client_headers: &http::HeaderMap, operation: &str, model: &str) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let parent = TraceContextPropagator::new().extract(&HeaderMapExtractor(client_headers));
        let tracer = global::tracer("condenser");
        let span = tracer
            .span_builder(format!("{operation} {model}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", operation.to_string()),
                KeyValue::new("gen_ai.request.model", model.to_string()),
            ])
            .start_with_context(&tracer, &parent);
        Some(Self {
            cx: parent.with_span(span),
        })
    }

    /// Records a finished child span (compression) from its start time, with attributes.
    pub fn child(&self, name: &'static str, started: SystemTime, attributes: Vec<KeyValue>) {
        let tracer = global::tracer("condenser");
        let mut span = tracer
            .span_builder(name)
            .with_start_time(started)
            .with_attributes(attributes)
            .start_with_context(&tracer, &self.cx);
        span.end();
    }

    /// Starts the upstream exchange's span and returns it with the `traceparent` the upstream
    /// request carries.
    pub fn upstream(&self, upstream: &str, provider: &str) -> (UpstreamSpan, Option<String>) {
        let tracer = global::tracer("condenser");
        let span = tracer
            .span_builder(format!("upstream {upstream}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("gen_ai.provider.name", provider.to_string()),
                KeyValue::new("condenser.upstream", upstream.to_string()),
            ])
            .start_with_context(&tracer, &self.cx);
        let cx = self.cx.with_span(span);
        let mut headers = Headers(Vec::new());
        TraceContextPropagator::new().inject_context(&cx, &mut headers);
        let traceparent = headers
            .0
            .into_iter()
            .find(|(k, _)| k == "traceparent")
            .map(|(_, v)| v);
        (UpstreamSpan { cx }, traceparent)
    }

    /// Ends the request span with the response status and the request's facts.
    pub fn finish(self, status: u16, attributes: Vec<KeyValue>) {
        let span = self.cx.span();
        span.set_attributes(attributes);
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("status {status}")));
        }
        span.end();
    }
}

/// The upstream exchange's span, ended with the upstream's status.
pub struct UpstreamSpan {
    cx: Context,
}

impl UpstreamSpan {
    pub fn finish(self, status: Option<u16>) {
        let span = self.cx.span();
        match status {
            Some(status) => span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            )),
            None => span.set_status(Status::error("upstream exchange failed")),
        }
        span.end();
    }
}

/// What a chat request's span says about it.
pub struct ChatFacts<'a> {
    pub route: &'a str,
    pub provider: &'static str,
    pub compressor: &'static str,
    /// Tokens before and after compression, when the request got that far.
    pub tokens: Option<(usize, usize)>,
    pub fail_open: bool,
}

impl ChatFacts<'_> {
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new("gen_ai.provider.name", self.provider),
            KeyValue::new("condenser.route", self.route.to_string()),
            KeyValue::new("condenser.compressor", self.compressor),
            KeyValue::new("condenser.fail_open", self.fail_open),
        ];
        if let Some((before, after)) = self.tokens {
            attributes.extend([
                // What the upstream is billed for: the compressed input.
                KeyValue::new("gen_ai.usage.input_tokens", after as i64),
                KeyValue::new("condenser.tokens_before", before as i64),
                KeyValue::new("condenser.tokens_after", after as i64),
            ]);
        }
        attributes
    }
}
