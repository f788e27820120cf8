//! The configuration file's shape, exactly as written in `proxy.toml`: strict (unknown keys are
//! errors), with the defaults a user gets for every key left out.

use serde::Deserialize;

use super::shadow::{RawRollout, RawRouteShadow, RawShadow};
use crate::compress::{CompressionMode, CompressorKind, Role};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub compressors: RawCompressors,
    pub shadow: Option<RawShadow>,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// `[auth]`: client keys; absent: no client authentication (loopback only, unless
    /// `server.allow_unauthenticated`).
    pub auth: Option<RawAuth>,
    /// `[shared_cache]`: compressions shared between replicas through Redis.
    pub shared_cache: Option<RawSharedCache>,
}

/// `[shared_cache]`: a Redis (or Valkey) tier behind the in-process compression cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSharedCache {
    /// `redis://host:port/db`, without credentials.
    pub url: Option<String>,
    /// The variable holding the URL, for one with a password (`redis://:secret@host`).
    pub url_env: Option<String>,
    pub ttl_seconds: u64,
    /// Longest any Redis call may take; a slower or failed call switches the tier off.
    pub timeout_ms: u64,
    /// How long the tier stays off after a failure.
    pub cool_down_ms: u64,
    /// How long a replica computing a compression makes the others wait for it.
    pub lock_ms: u64,
    pub prefix: String,
    /// Share the client keys' rate-limit buckets (`[[auth.keys]]`) through the same Redis.
    pub rate_limits: bool,
    /// How often each replica reconciles its rate-limit buckets with Redis, in ms.
    pub rate_limit_sync_ms: u64,
    /// The variable holding a secret shared by the replicas, which keys every cache key.
    pub key_secret_env: Option<String>,
}

impl Default for RawSharedCache {
    fn default() -> Self {
        Self {
            url: None,
            url_env: None,
            ttl_seconds: 86_400,
            timeout_ms: 25,
            cool_down_ms: 5_000,
            lock_ms: 2_000,
            prefix: "condenser:".into(),
            rate_limits: true,
            rate_limit_sync_ms: 200,
            key_secret_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub keys: Vec<RawClientKey>,
}

/// One client key: the variable holding it, or its SHA-256 — never the key itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientKey {
    pub name: String,
    pub key_env: Option<String>,
    pub sha256: Option<String>,
    /// Routes this key may use; absent: all.
    pub routes: Option<Vec<String>>,
    /// Requests of this key in flight at once; more get 503 with `Retry-After`.
    pub max_in_flight: Option<usize>,
    /// Requests per minute (a token bucket: bursts up to this many); more get 429.
    pub requests_per_minute: Option<u32>,
    /// Input tokens sent upstream per minute (after compression, as providers bill them): an
    /// estimate (body bytes / 4) is reserved at admission, so concurrent requests see each
    /// other, and settled to the tokens sent when the request ends, however it ends.
    pub input_tokens_per_minute: Option<u32>,
    /// Passthrough endpoints this key may use (`"METHOD /v1/path"` globs), on routes whose own
    /// `passthrough` list also allows them; absent: none.
    pub passthrough: Option<Vec<String>>,
    /// May pick a route by name with `x-condenser-route` (the route must still serve the model).
    #[serde(default)]
    pub route_header: bool,
    /// May override the route's compression with `x-condenser-compress`.
    #[serde(default)]
    pub compress_header: bool,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// Collector base URL (`http://127.0.0.1:4318`); absent: `OTEL_EXPORTER_OTLP_ENDPOINT`, and
    /// without that no tracing.
    pub otlp_endpoint: Option<String>,
    /// Share of traces recorded when the client's `traceparent` did not decide.
    pub sample_rate: f64,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_rate: 1.0,
        }
    }
}

/// `[compressors.NAME]`: model-backed compressors (`compress::registry`), each configured once
/// and shared by every route.
pub type RawCompressors = std::collections::BTreeMap<String, RawLocalModel>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalModel {
    /// `local` (default: llama.cpp in this process) or `remote` (an inference server).
    pub backend: Option<String>,
    /// Local: the GGUF file (e.g. `models/SmolLM2-135M-Instruct.Q4_1.gguf`); remote: the model
    /// id the server serves.
    pub model: String,
    /// Remote: the server's API root (`http://host:port/v1`).
    pub base_url: Option<String>,
    /// Remote: environment variable holding the server's key.
    pub api_key_env: Option<String>,
    #[serde(default = "default_model_threads")]
    pub threads: i32,
    #[serde(default = "default_model_context")]
    pub context: u32,
    #[serde(default = "default_one")]
    pub workers: usize,
    #[serde(default = "default_model_queue")]
    pub queue: usize,
    /// Longest one call may wait for the model, queueing included.
    #[serde(default = "default_model_timeout_ms")]
    pub timeout_ms: u64,
    /// Layers offloaded to the GPU in `cuda` / `metal` builds.
    #[serde(default)]
    pub gpu_layers: u32,
    /// A GGUF LoRA adapter applied at runtime.
    pub lora: Option<String>,
    #[serde(default = "default_lora_scale")]
    pub lora_scale: f32,
    /// `rewrite` only: the compressor used when the model's output is unusable.
    pub fallback: Option<CompressorKind>,
    /// `select` only: weight (0–1) of `extractive`'s ranking blended with the model's.
    pub blend: Option<f64>,
}

fn default_lora_scale() -> f32 {
    1.0
}

fn default_model_threads() -> i32 {
    2
}

fn default_model_context() -> u32 {
    8192
}

fn default_one() -> usize {
    1
}

fn default_model_queue() -> usize {
    8
}

fn default_model_timeout_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    /// Largest request body accepted, in bytes; bigger ones get 413.
    pub max_body_bytes: usize,
    /// Route used when neither the header nor the model selects one.
    pub default_route: Option<String>,
    /// Worker threads of the proxy service (0 = one per core).
    pub threads: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub grace_period_seconds: u64,
    /// Bytes of compressed text kept in the compression cache.
    pub compression_cache_bytes: u64,
    /// Listener for `/admin/*` and `/metrics`; absent: no admin endpoints.
    pub admin_listen: Option<String>,
    /// Environment variable holding the admin key (`Authorization: Bearer`). Unset: the admin
    /// API is read-only (changes are refused).
    pub admin_key_env: Option<String>,
    /// Where route changes made through the admin API are kept across restarts.
    pub overrides_file: String,
    /// A `postgres://` database that keeps them instead, shared by replicas (each follows the
    /// others' changes every `overrides_sync_ms`).
    pub overrides_store: Option<String>,
    pub overrides_sync_ms: u64,
    /// Access-log and diagnostics format: `text` or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// Record Prometheus metrics (`/metrics` on the admin listener).
    pub metrics: bool,
    /// Serve HTTPS on `listen` with this certificate chain and key (PEM files).
    pub tls: Option<RawTls>,
    /// Listen on a non-loopback address without `[auth]`: anyone who reaches the listener may
    /// spend the configured provider keys. Refused at start-up unless set.
    pub allow_unauthenticated: bool,
    /// Requests in flight at once across all clients (0: no limit); more get 503.
    pub max_in_flight: usize,
    /// Request headers accepted, by count and total bytes (names and values); more get 431.
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    /// Messages in one chat request; more get 400.
    pub max_messages: usize,
    /// Folders model and adapter files may be loaded from (`config::paths`).
    pub model_dirs: Vec<String>,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout_seconds: u64,
    /// Longest the whole request body may take to arrive (408 after); also the longest wait
    /// for any one read of the connection.
    pub body_timeout_seconds: u64,
    /// Longest a request header may take to arrive, from its first byte (the connection is
    /// closed after).
    pub header_timeout_seconds: u64,
    /// Connections open at once per listener (0: no cap); one more is answered 503 and closed.
    pub max_connections: usize,
    /// Who shares a compression-cache entry: `key` (each client key its own, with `[auth]`)
    /// or `deployment` (every client).
    pub compression_cache_scope: CacheScope,
}

/// `server.compression_cache_scope`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Each client key's compressions are its own: one tenant cannot learn from a cache hit's
    /// speed that another sent a text.
    #[default]
    Key,
    /// Every client shares the cache (one organisation behind several keys).
    Deployment,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            max_body_bytes: 32 * 1024 * 1024,
            default_route: None,
            threads: 0,
            grace_period_seconds: 5,
            compression_cache_bytes: 64 * 1024 * 1024,
            admin_listen: None,
            admin_key_env: None,
            overrides_file: "condenser-overrides.json".into(),
            overrides_store: None,
            overrides_sync_ms: 5_000,
            log_format: LogFormat::Text,
            metrics: true,
            tls: None,
            allow_unauthenticated: false,
            max_in_flight: 0,
            max_header_count: 100,
            max_header_bytes: 64 * 1024,
            max_messages: 10_000,
            model_dirs: vec!["models".into(), "adapters".into()],
            keepalive_timeout_seconds: 60,
            body_timeout_seconds: 60,
            header_timeout_seconds: 30,
            max_connections: 10_000,
            compression_cache_scope: CacheScope::Key,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// Any OpenAI-compatible API: OpenAI, vLLM, llama-server, OpenRouter, ...
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub kind: UpstreamKind,
    /// The upstream's one deployment; or list several in `deployments`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the key; the key itself never goes in the file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Several deployments of the same API (regions, accounts, replicas), each with its own
    /// `base_url` and `api_key_env`: a request goes to the one with the fewest requests in
    /// flight, and a retry to another.
    #[serde(default)]
    pub deployments: Vec<RawDeployment>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for the response header and between two body reads.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM bundle of the CA certificates that may sign an `https://` upstream's certificate, in
    /// place of the platform's (a private CA). Verification is always on.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Retries of a request this upstream refused or answered 429/500/502/503/504 before
    /// anything reached the client.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First retry's delay; each retry doubles it, with jitter. A 429's `Retry-After` wins.
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Consecutive failed attempts (refused, 429, 5xx) after which the upstream is skipped
    /// while a route has another to try (0: never).
    #[serde(default = "default_eject_after")]
    pub eject_after: u32,
    /// How long an ejected upstream is skipped before one request probes it again.
    #[serde(default = "default_eject_for_ms")]
    pub eject_for_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub base_url: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
}

fn default_eject_after() -> u32 {
    5
}

fn default_eject_for_ms() -> u64 {
    30_000
}

fn default_retries() -> u32 {
    2
}

fn default_retry_backoff_ms() -> u64 {
    200
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_timeout_ms() -> u64 {
    600_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    /// Glob patterns on the request's `model`.
    #[serde(default)]
    pub models: Vec<String>,
    pub upstream: String,
    /// Upstreams tried in order when `upstream` fails before answering (connection refused,
    /// 429, 5xx, after its retries).
    #[serde(default)]
    pub fallbacks: Vec<String>,
    #[serde(default)]
    pub compression: RawCompression,
    pub shadow: Option<RawRouteShadow>,
    /// Other `/v1/*` endpoints forwarded through this route with its upstream's key
    /// (`"METHOD /v1/path"` globs, `access`); absent: all without `[auth]`, none with it.
    pub passthrough: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCompression {
    pub enabled: bool,
    pub compressor: CompressorKind,
    /// Messages with fewer tokens than this are never touched.
    pub min_tokens: usize,
    /// Compressed / original tokens the compressor aims for.
    pub target_ratio: f64,
    /// Message roles whose text may be compressed.
    pub roles: Vec<Role>,
    /// Longest a compressor may take before the original request is forwarded.
    pub timeout_ms: u64,
    /// `inline`: compress before forwarding (within `timeout_ms`); `background`: forward texts
    /// seen for the first time uncompressed and compress them off the request path, so their
    /// next appearance is served from the cache.
    pub mode: CompressionMode,
    /// `manual` (`enabled` decides) or `auto` (the route's shadow pass rate decides).
    pub rollout: RawRollout,
    /// Auto rollout: scored samples needed before compression is served.
    pub min_samples: usize,
    /// Auto rollout: pass rate (net of the noise floor) compression must keep.
    pub min_pass_rate: f64,
    /// Largest request (bytes of message text) compressed; a bigger one is forwarded as sent,
    /// so one huge request cannot hold a compressor for seconds.
    pub max_bytes: usize,
}

impl Default for RawCompression {
    fn default() -> Self {
        Self {
            enabled: false,
            compressor: CompressorKind::EXTRACTIVE,
            min_tokens: 512,
            target_ratio: 0.35,
            roles: vec![Role::System, Role::Developer, Role::User, Role::Tool],
            timeout_ms: 250,
            mode: CompressionMode::Inline,
            rollout: RawRollout::Manual,
            min_samples: 50,
            min_pass_rate: 0.95,
            max_bytes: 512 * 1024,
        }
    }
}
