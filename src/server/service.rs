//! The pingora `ProxyHttp` implementation: dispatch on method and path, errors written in the
//! client's dialect, and the access-log hook.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};

use super::access_log::RequestLog;
use super::codec::FrontDoor;
use super::relay::ExchangeError;
use super::state::{AppState, Live};
use super::{admin, auth, front_door, health, passthrough, reply};
use crate::error::ProxyError;

pub struct Condenser {
    state: Arc<AppState>,
    admin_key: admin::AdminKey,
}

impl Condenser {
    pub fn new(state: Arc<AppState>) -> Self {
        let admin_key = admin::AdminKey::from_env(state.server.admin_key_env.as_deref());
        Self { state, admin_key }
    }

    async fn dispatch(
        &self,
        session: &mut Session,
        log: &mut RequestLog,
    ) -> Result<(), ExchangeError> {
        let state = &self.state;
        let header = session.req_header();
        let not_found = || {
            ExchangeError::BeforeResponse(ProxyError::NotFound {
                method: header.method.to_string(),
                path: header.uri.path().to_string(),
            })
        };
        let on_admin = self.on_admin_listener(session);
        // One configuration snapshot serves the whole request, admission included: a reload
        // in between cannot admit it under one set of keys and route it under another.
        let live = state.live();
        if header.uri.path().starts_with("/v1/") && !on_admin {
            Self::admit(&live, session, log).map_err(ExchangeError::BeforeResponse)?;
        }
        match (header.method.as_str(), header.uri.path()) {
            ("GET", "/healthz") => {
                let body = health::healthz_body(&state.pipeline);
                self.reply(session, log, 200, body).await
            }
            ("GET", "/readyz") => {
                let compressors = state.pipeline.compressor_names();
                let body = health::readyz_body(&compressors, state.shadow.is_some());
                self.reply(session, log, 200, body).await
            }
            ("GET", "/metrics") if on_admin => {
                let body = health::metrics_body(&state.pipeline);
                log.status = 200;
                reply::text(session, 200, "text/plain; version=0.0.4", body)
                    .await
                    .map_err(|e| ExchangeError::AfterResponse(e.to_string()))
            }
            ("GET", "/v1/models") => {
                let body = live.models_body.clone();
                self.reply(session, log, 200, body).await
            }
            (_, p) if on_admin && p.starts_with("/admin/") => {
                let body = admin::handle(state, &self.admin_key, session)
                    .await
                    .map_err(ExchangeError::BeforeResponse)?;
                self.reply(session, log, 200, body).await
            }
            (_, p) if on_admin || p.starts_with("/admin/") => Err(not_found()),
            ("POST", "/v1/chat/completions") => {
                front_door::handle(state, live, session, log, FrontDoor::ChatCompletions).await
            }
            ("POST", "/v1/messages") => {
                log.anthropic_errors = true;
                front_door::handle(state, live, session, log, FrontDoor::AnthropicMessages).await
            }
            (_, p) if p.starts_with("/v1/") => {
                passthrough::handle(state, &live, session, log).await
            }
            _ => Err(not_found()),
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
        log.admission = Some(live.limits.admit(log.client.as_ref())?);
        Ok(())
    }

    /// Admin endpoints answer only on `server.admin_listen`, never on the public listener.
    fn on_admin_listener(&self, session: &Session) -> bool {
        let Some(admin) = self.state.server.admin_listen else {
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
