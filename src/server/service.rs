//! The pingora `ProxyHttp` implementation: dispatch on method and path (one service per listener:
//! the public API or the admin endpoints), errors written in the client's dialect, and the
//! access-log hook.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};

use super::access_log::RequestLog;
use super::codec::FrontDoor;
use super::relay::ExchangeError;
use super::state::{AppState, Live};
use super::{admin, auth, front_door, health, passthrough, reply};
use crate::config::Listener;
use crate::error::ProxyError;

pub struct Condenser {
    state: Arc<AppState>,
    admin_key: admin::AdminKey,
    /// Which listener this service answers: the admin service serves only the admin
    /// endpoints, whatever address it is bound to (a wildcard one included).
    listener: Listener,
}

impl Condenser {
    pub fn new(state: Arc<AppState>, listener: Listener) -> Self {
        let admin_key = admin::AdminKey::from_env(state.server.admin_key_env.as_deref());
        Self {
            state,
            admin_key,
            listener,
        }
    }

    async fn dispatch(
        &self,
        session: &mut Session,
        log: &mut RequestLog,
    ) -> Result<(), ExchangeError> {
        let state = &self.state;
        // One configuration snapshot serves the whole request, admission included: a reload
        // in between cannot admit it under one set of keys and route it under another.
        let live = state.live();
        let server = &live.config.server;
        // Bounds on a slow client: the wait for its next request on this connection, and for
        // each read of the body (the whole body's deadline is `read_whole`'s).
        session.set_keepalive(Some(server.keepalive_timeout_seconds));
        session.set_read_timeout(Some(Duration::from_secs(server.body_timeout_seconds)));
        let header = session.req_header();
        let path = header.uri.path().to_string();
        let method = header.method.to_string();
        crate::access::check_path(&path).map_err(|e| ExchangeError::BeforeResponse(e.into()))?;
        let not_found = || {
            ExchangeError::BeforeResponse(ProxyError::NotFound {
                method: method.clone(),
                path: crate::error::clip(&path).to_string(),
            })
        };
        if let ("GET", "/healthz" | "/readyz") = (method.as_str(), path.as_str()) {
            let body = if path == "/healthz" {
                health::healthz_body(&state.pipeline)
            } else {
                let compressors = state.pipeline.compressor_names();
                health::readyz_body(&compressors, state.shadow.is_some())
            };
            return self.reply(session, log, 200, body).await;
        }
        if self.listener == Listener::Admin {
            return match (method.as_str(), path.as_str()) {
                ("GET", "/metrics") => {
                    let body = health::metrics_body(&state.pipeline);
                    log.status = 200;
                    reply::text(session, 200, "text/plain; version=0.0.4", body)
                        .await
                        .map_err(|e| ExchangeError::AfterResponse(e.to_string()))
                }
                (_, p) if p.starts_with("/admin/") => {
                    let body = admin::handle(state, &self.admin_key, session)
                        .await
                        .map_err(ExchangeError::BeforeResponse)?;
                    self.reply(session, log, 200, body).await
                }
                _ => Err(not_found()),
            };
        }
        // Clients probe the base URL before their first call (Claude Code sends `HEAD /`): answer
        // as a provider does, not with an error.
        match (method.as_str(), path.as_str()) {
            ("HEAD", "/") => {
                log.status = 200;
                return reply::text(session, 200, "text/plain", Vec::new())
                    .await
                    .map_err(|e| ExchangeError::AfterResponse(e.to_string()));
            }
            ("GET", "/") => {
                let body = br#"{"service":"condenser","status":"ok"}"#.to_vec();
                return self.reply(session, log, 200, body).await;
            }
            _ => {}
        }
        if !path.starts_with("/v1/") {
            return Err(not_found());
        }
        Self::admit(&live, session, log).map_err(ExchangeError::BeforeResponse)?;
        match (method.as_str(), path.as_str()) {
            ("GET", "/v1/models") => {
                let body = live.models_body.clone();
                self.reply(session, log, 200, body).await
            }
            ("POST", "/v1/chat/completions") => {
                front_door::handle(state, live, session, log, FrontDoor::ChatCompletions).await
            }
            ("POST", "/v1/messages") => {
                log.anthropic_errors = true;
                front_door::handle(state, live, session, log, FrontDoor::AnthropicMessages).await
            }
            _ => passthrough::handle(state, &live, session, log).await,
        }
    }

    /// Admits a `/v1/*` request: authenticates it (with `[auth]`; the key is recorded in
    /// `log`) and takes its place under the concurrency and rate limits, held in `log` until
    /// the request ends.
    fn admit(live: &Live, session: &Session, log: &mut RequestLog) -> Result<(), ProxyError> {
        let server = &live.config.server;
        let headers = &session.req_header().headers;
        if headers.len() > server.max_header_count {
            return Err(ProxyError::HeadersTooLarge(format!(
                "{} headers, at most {}",
                headers.len(),
                server.max_header_count
            )));
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if bytes > server.max_header_bytes {
            return Err(ProxyError::HeadersTooLarge(format!(
                "{bytes} bytes, at most {}",
                server.max_header_bytes
            )));
        }
        if session.req_header().uri.path() == "/v1/messages" {
            log.anthropic_errors = true;
        }
        if let Some(keys) = &live.config.auth {
            log.client = Some(auth::authenticate(session, keys)?);
        }
        let estimate = super::request::declared_length(session).unwrap_or(0) / 4;
        log.admission = Some(live.limits.admit(log.client.as_ref(), estimate)?);
        Ok(())
    }

    async fn reply(
        &self,
        session: &mut Session,
        log: &mut RequestLog,
        status: u16,
        body: Vec<u8>,
    ) -> Result<(), ExchangeError> {
        log.status = status;
        reply::json(session, status, body)
            .await
            .map_err(|e| ExchangeError::AfterResponse(e.to_string()))
    }
}

#[async_trait]
impl ProxyHttp for Condenser {
    type CTX = RequestLog;

    fn new_ctx(&self) -> Self::CTX {
        RequestLog::new()
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
                reply::error(session, &err, ctx.anthropic_errors).await?;
                Ok(true)
            }
            Err(ExchangeError::Retryable { reason, .. }) => {
                // The forwarding loop never lets a retry escape; answer as a failed upstream.
                let err = ProxyError::UpstreamProtocol {
                    upstream: String::new(),
                    reason,
                };
                ctx.status = err.status();
                ctx.error = Some(err.to_string());
                reply::error(session, &err, ctx.anthropic_errors).await?;
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
            let _ = reply::error(session, &err, false).await;
        }
        FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        ctx.write(session);
        ctx.charge_rate_limits();
        ctx.record_metrics();
    }
}
