//! One configured upstream at runtime: its provider dialect, its deployments (`deployment`),
//! and the request/response exchange with one of them over pingora's pooled connector.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::tls::CaType;
use pingora::proxy::Session;
use pingora::utils::tls::{parse_x509, WrappedX509};
use pingora::{Error, ErrorType};

use super::accounting::Accounting;
use super::deployment::{self, Deployment, InFlight};
use super::header_policy;
use super::relay::{self, ExchangeError, ResponseMode, HOP_BY_HOP};
use crate::config::UpstreamSettings;
use crate::error::ProxyError;
use crate::providers::{self, Provider};

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

pub struct Upstream {
    pub settings: UpstreamSettings,
    /// The API dialect this upstream speaks.
    pub provider: Arc<dyn Provider>,
    pub deployments: Vec<Deployment>,
    /// `ca_file`'s certificates, trusted for this upstream instead of the platform's.
    ca: Option<Arc<CaType>>,
    /// `[auth]` is on: the client's credentials are condenser's, never forwarded.
    client_auth: bool,
}

/// One attempt's destination: a deployment of an upstream, counted in flight until dropped.
pub struct Target<'u> {
    pub upstream: &'u Upstream,
    deployment: &'u Deployment,
    pub index: usize,
    _in_flight: InFlight<'u>,
}

/// How the answer goes back to the client: extra headers, relayed or translated, and an optional
/// copy of what the client got.
pub struct Reply<'a> {
    pub extra: Vec<(&'static str, String)>,
    /// The request's token accounting, whose headers join `extra` once a count still running off
    /// the I/O thread is in (it had the upstream's whole answer time to finish).
    pub accounting: Option<&'a mut Accounting>,
    pub mode: ResponseMode,
    pub capture: Option<&'a mut relay::Capture>,
    /// Another attempt may follow: a refusal or a 429/5xx answer is returned as
    /// [`ExchangeError::Retryable`] instead of being relayed.
    pub retry: Option<Retry>,
}

/// When a failed attempt may be retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// No retry is worth starting if its delay would end after this.
    pub deadline: Instant,
    /// The delay before the next attempt, unless a 429 says `Retry-After`.
    pub backoff: Duration,
}

/// Longest `Retry-After` taken at its word, in seconds (a day).
const MAX_RETRY_AFTER_S: u64 = 86_400;

/// Statuses worth another attempt: the upstream is limiting or failing, and has not answered.
const RETRYABLE: &[u16] = &[429, 500, 502, 503, 504];

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Self {
        let deployments = settings
            .deployments
            .iter()
            .map(|d| Deployment::new(&settings.name, d.clone()))
            .collect();
        let ca = settings.ca_certs.as_ref().map(|certs| {
            let wrapped: Vec<WrappedX509> = certs
                .iter()
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect();
            Arc::from(wrapped.into_boxed_slice())
        });
        Self {
            client_auth: false,
            ca,
            provider: providers::for_kind(settings.kind),
            settings,
            deployments,
        }
    }

    /// With client authentication on, the client's `Authorization` / `x-api-key` authenticate
    /// it to condenser and are never sent upstream.
    pub fn with_client_auth(mut self, on: bool) -> Self {
        self.client_auth = on;
        self
    }

    /// Whether every deployment of the upstream is ejected (see [`Deployment::ejected`]).
    pub fn ejected(&self) -> bool {
        self.deployments.iter().all(Deployment::ejected)
    }

    /// The deployment for the next attempt (see [`deployment::pick`]); `tried` are the indexes
    /// this request already used.
    pub fn target(&self, tried: &[usize]) -> Target<'_> {
        let index = deployment::pick(&self.deployments, tried);
        let deployment = &self.deployments[index];
        Target {
            upstream: self,
            deployment,
            index,
            _in_flight: deployment.start(),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// A client path (`/v1/chat/completions?x`) below the API's base path
    /// (`/chat/completions?x`): each deployment puts its own base path in front.
    pub fn relative_path(client_path_and_query: &str) -> &str {
        client_path_and_query
            .strip_prefix("/v1")
            .unwrap_or(client_path_and_query)
    }

    /// Counts a failed exchange by kind (`condenser_upstream_errors_total`).
    fn count_error(&self, error: &ExchangeError) {
        let kind = match error {
            ExchangeError::BeforeResponse(ProxyError::UpstreamTimeout { .. }) => "timeout",
            ExchangeError::BeforeResponse(ProxyError::UpstreamUnreachable { .. }) => "unreachable",
            ExchangeError::BeforeResponse(ProxyError::UpstreamProtocol { .. }) => "protocol",
            ExchangeError::BeforeResponse(_) => "other",
            ExchangeError::AfterResponse(_) => "mid_response",
            ExchangeError::Retryable { .. } => "retried",
        };
        if let Some(m) = crate::metrics::recording() {
            m.upstream_errors
                .with_label_values(&[self.name(), kind])
                .inc();
        }
    }

    fn classify(&self, e: &Error) -> ProxyError {
        let name = self.settings.name.clone();
        match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => ProxyError::UpstreamTimeout {
                upstream: name,
                timeout_ms: self.settings.timeout_ms,
            },
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout => ProxyError::UpstreamUnreachable {
                upstream: name,
                reason: e.etype().as_str().to_string(),
            },
            _ => ProxyError::UpstreamProtocol {
                upstream: name,
                reason: e.etype().as_str().to_string(),
            },
        }
    }
}

impl Target<'_> {
    /// The deployment's `host:port`, for the access log.
    pub fn label(&self) -> String {
        self.deployment.label()
    }

    /// Records the attempt's outcome in the deployment's circuit breaker.
    pub fn record_attempt(&self, failed: bool) {
        let s = &self.upstream.settings;
        self.deployment
            .record_attempt(&s.name, failed, s.eject_after, s.eject_for_ms);
    }

    async fn peer(&self) -> Result<HttpPeer, ProxyError> {
        let d = &self.deployment.settings;
        let s = &self.upstream.settings;
        let addr = self.deployment.address(&s.name).await?;
        let mut peer = HttpPeer::new(addr, d.tls, d.host.clone());
        peer.options.connection_timeout = Some(Duration::from_millis(s.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(s.timeout_ms));
        peer.options.write_timeout = Some(Duration::from_millis(s.timeout_ms));
        peer.options.idle_timeout = Some(POOL_IDLE);
        peer.options.ca = self.upstream.ca.clone();
        Ok(peer)
    }

    /// The upstream request: the client's headers minus hop-by-hop and `x-condenser-*` (with the
    /// operator's key, only those `header_policy` allows), with
    /// `Host`, `Content-Length`, the provider's required headers (unless the client sent them)
    /// and the key in the provider's header: the configured key, else the client's bearer token.
    /// `path` is below the API's base path; the deployment's own goes in front.
    pub fn request_header(
        &self,
        client: &RequestHeader,
        path: &str,
        body_len: usize,
        keep_accept_encoding: bool,
        provider_headers: &[(&'static str, String)],
    ) -> Result<RequestHeader, ProxyError> {
        let path = format!("{}{path}", self.deployment.settings.base_path);
        let mut req = RequestHeader::build(
            client.method.clone(),
            path.as_bytes(),
            Some(client.headers.len() + 2),
        )
        .map_err(|e| ProxyError::InvalidRequest(e.to_string()))?;
        let client_bearer = client
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let native_auth = self.upstream.provider.auth_header("").0;
        let configured = self.deployment.api_key.is_some();
        // A configured key replaces whatever the client sent; otherwise the client's bearer
        // token is re-issued in the provider's own header when that is not `authorization`.
        let client_credential = |n: &str| matches!(n, "authorization" | "x-api-key");
        let drop_client_auth = |n: &str| {
            (self.upstream.client_auth && client_credential(n))
                || (n == "authorization" && (configured || native_auth != "authorization"))
                || (n == native_auth && configured)
        };
        for (name, value) in client.headers.iter() {
            let n = name.as_str();
            let skip = HOP_BY_HOP.contains(&n)
                || matches!(n, "host" | "content-length" | "expect")
                || n.starts_with(crate::openai::headers::PREFIX)
                || (n == "accept-encoding" && !keep_accept_encoding)
                || drop_client_auth(n)
                || (configured && !header_policy::forwards_request(n));
            if !skip {
                let _ = req.append_header(name.clone(), value.clone());
            }
        }
        let invalid = |e: Box<Error>| ProxyError::InvalidRequest(e.to_string());
        req.insert_header("host", self.deployment.host_header())
            .map_err(invalid)?;
        req.insert_header("content-length", body_len.to_string())
            .map_err(invalid)?;
        for (name, value) in provider_headers {
            if !client.headers.contains_key(*name) {
                req.insert_header(*name, value.as_str()).map_err(invalid)?;
            }
        }
        let key = if configured {
            self.deployment.api_key.clone()
        } else if !self.upstream.client_auth
            && native_auth != "authorization"
            && !client.headers.contains_key(native_auth)
        {
            client_bearer
        } else {
            None
        };
        if let Some(key) = key {
            let (name, value) = self.upstream.provider.auth_header(&key);
            req.insert_header(name, value).map_err(invalid)?;
        }
        Ok(req)
    }

    /// Sends the request and writes the answer to the client: relayed as it arrives (SSE events
    /// chunk by chunk, never buffered whole) or translated from the provider's dialect.
    /// `extra` headers go on the response. Returns the status the client got.
    pub async fn exchange(
        &self,
        connector: &Connector,
        client: &mut Session,
        request: RequestHeader,
        body: Bytes,
        reply: Reply<'_>,
    ) -> Result<u16, ExchangeError> {
        let Reply {
            mut extra,
            accounting,
            mode,
            capture,
            retry,
        } = reply;
        let fits = |delay: Duration| {
            retry.filter(|r| {
                Instant::now()
                    .checked_add(delay)
                    .is_some_and(|at| at < r.deadline)
            })
        };
        let peer = self.peer().await.map_err(ExchangeError::BeforeResponse)?;
        let started = Instant::now();
        let mut up = match self.send(connector, &peer, request, body).await {
            Ok(up) => up,
            Err(ExchangeError::BeforeResponse(ProxyError::UpstreamUnreachable {
                reason, ..
            })) if retry.and_then(|r| fits(r.backoff)).is_some() => {
                let delay = retry.map_or(Duration::ZERO, |r| r.backoff);
                let error = ExchangeError::Retryable {
                    delay,
                    reason: format!("`{}` unreachable: {reason}", self.upstream.name()),
                };
                self.upstream.count_error(&error);
                return Err(error);
            }
            Err(error) => {
                self.upstream.count_error(&error);
                return Err(error);
            }
        };
        let first_byte = started.elapsed();
        if let Some(retry) = retry {
            let header = up.response_header();
            let status = header.map_or(0, |h| h.status.as_u16());
            if RETRYABLE.contains(&status) {
                // A 429's Retry-After (seconds) is honoured when it fits the deadline.
                // Capped: an absurd value (u64::MAX) would overflow `Instant + Duration`; one
                // beyond the deadline is not waited for anyway.
                let delay = header
                    .and_then(|h| h.headers.get("retry-after"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(retry.backoff, |s| {
                        Duration::from_secs(s.min(MAX_RETRY_AFTER_S))
                    });
                if fits(delay).is_some() {
                    let error = ExchangeError::Retryable {
                        delay,
                        reason: format!("`{}` answered {status}", self.upstream.name()),
                    };
                    self.upstream.count_error(&error);
                    return Err(error);
                }
            }
        }
        if let Some(accounting) = accounting {
            extra.extend(accounting.headers().await);
        }
        let extra = &relay::Extra {
            headers: &extra,
            operator_key: self.deployment.api_key.is_some(),
        };
        let relayed = match mode {
            ResponseMode::Relay => {
                relay::relay(self.upstream.name(), &mut up, client, extra, capture).await
            }
            ResponseMode::Translate(translation) => {
                relay::translate(
                    self.upstream.name(),
                    &mut up,
                    client,
                    extra,
                    translation,
                    capture,
                )
                .await
            }
        };
        let reusable = relayed.inspect_err(|e| self.upstream.count_error(e))?;
        if let Some(m) = crate::metrics::recording() {
            m.upstream_exchange(self.upstream.name(), first_byte, started.elapsed());
        }
        if reusable.1 {
            connector
                .release_http_session(up, &peer, Some(POOL_IDLE))
                .await;
        }
        Ok(reusable.0)
    }

    /// Sends a request and reads the whole answer, for requests no client waits on (shadow legs,
    /// the judge): returns the status and the body in OpenAI's shape (translated from the
    /// provider's when `provider_model` names the model of a native provider).
    pub async fn fetch(
        &self,
        connector: &Connector,
        request: RequestHeader,
        body: Bytes,
        provider_model: Option<&str>,
    ) -> Result<(u16, Vec<u8>), ProxyError> {
        let peer = self.peer().await?;
        let mut up = self
            .send(connector, &peer, request, body)
            .await
            .map_err(ExchangeError::into_proxy_error)?;
        let status = up.response_header().map_or(502, |h| h.status.as_u16());
        let mut answer = Vec::new();
        loop {
            match up.read_response_body().await {
                Ok(Some(chunk)) => {
                    if answer.len() + chunk.len() > relay::MAX_TRANSLATED_BODY {
                        return Err(ProxyError::UpstreamProtocol {
                            upstream: self.upstream.name().to_string(),
                            reason: "answer too large".into(),
                        });
                    }
                    answer.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.upstream.classify(&e)),
            }
        }
        connector
            .release_http_session(up, &peer, Some(POOL_IDLE))
            .await;
        let answer = match provider_model {
            Some(model) if (200..300).contains(&status) => self
                .upstream
                .provider
                .decode_chat(&answer, model)
                .map_err(|reason| ProxyError::UpstreamProtocol {
                    upstream: self.upstream.name().to_string(),
                    reason,
                })?,
            Some(_) => self.upstream.provider.decode_error(status, &answer),
            None => answer,
        };
        Ok((status, answer))
    }

    /// Writes the request and reads the response header, retrying once on a stale pooled
    /// connection (safe: nothing was answered yet).
    async fn send(
        &self,
        connector: &Connector,
        peer: &HttpPeer,
        request: RequestHeader,
        body: Bytes,
    ) -> Result<HttpSession, ExchangeError> {
        let before = ExchangeError::BeforeResponse;
        let mut attempt = 0;
        loop {
            let (mut up, reused) = connector
                .get_http_session(peer)
                .await
                .map_err(|e| before(self.upstream.classify(&e)))?;
            up.set_read_timeout(peer.options.read_timeout);
            up.set_write_timeout(peer.options.write_timeout);
            let sent: pingora::Result<()> = async {
                up.write_request_header(Box::new(request.clone())).await?;
                up.write_request_body(body.clone(), true).await?;
                up.finish_request_body().await?;
                up.read_response_header().await
            }
            .await;
            match sent {
                Ok(()) => return Ok(up),
                Err(e)
                    if reused && attempt == 0 && !matches!(e.etype(), ErrorType::ReadTimedout) =>
                {
                    attempt += 1;
                    tracing::debug!(upstream = self.upstream.name(), error = %e, "reused connection failed; retrying");
                }
                Err(e) => return Err(before(self.upstream.classify(&e))),
            }
        }
    }
}
