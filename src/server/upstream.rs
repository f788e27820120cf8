//! One configured upstream at runtime: its address (resolved asynchronously and cached, because
//! `HttpPeer::new` with a hostname does a blocking lookup and panics on failure), its key (read
//! from the environment once, never logged), and the request/response exchange over pingora's
//! pooled connector.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::config::UpstreamSettings;
use crate::error::ProxyError;

/// How long a DNS answer is reused.
const DNS_TTL: Duration = Duration::from_secs(30);
/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), plus the ones
/// this proxy recomputes.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Upstream {
    pub settings: UpstreamSettings,
    api_key: Option<String>,
    resolved: Mutex<Option<(Instant, SocketAddr)>>,
}

/// Where an exchange failed: before anything reached the client (answer with a JSON error), or
/// after the response started (the only honest signal left is closing the connection).
#[derive(Debug)]
pub enum ExchangeError {
    BeforeResponse(ProxyError),
    AfterResponse(String),
}

impl Upstream {
    /// Reads the key from `api_key_env` once. When that variable is unset, the client's own
    /// `Authorization` is forwarded instead (with a start-up warning), so a developer can run the
    /// shipped `proxy.toml` with their SDK's key.
    pub fn new(settings: UpstreamSettings) -> Self {
        let api_key = settings
            .api_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| !k.is_empty());
        if let (Some(var), None) = (&settings.api_key_env, &api_key) {
            tracing::warn!(
                upstream = %settings.name,
                variable = %var,
                "API key variable not set; forwarding the client's Authorization header"
            );
        }
        Self {
            settings,
            api_key,
            resolved: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Maps a client path (`/v1/chat/completions?x`) onto this upstream's base path.
    pub fn upstream_path(&self, client_path_and_query: &str) -> String {
        let rest = client_path_and_query
            .strip_prefix("/v1")
            .unwrap_or(client_path_and_query);
        format!("{}{rest}", self.settings.base_path)
    }

    fn host_header(&self) -> String {
        let s = &self.settings;
        let default_port = if s.tls { 443 } else { 80 };
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        if s.port == default_port {
            host
        } else {
            format!("{host}:{}", s.port)
        }
    }

    async fn address(&self) -> Result<SocketAddr, ProxyError> {
        if let Ok(ip) = self.settings.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.settings.port));
        }
        if let Ok(guard) = self.resolved.lock() {
            if let Some((at, addr)) = *guard {
                if at.elapsed() < DNS_TTL {
                    return Ok(addr);
                }
            }
        }
        let unreachable = |reason: String| ProxyError::UpstreamUnreachable {
            upstream: self.settings.name.clone(),
            reason,
        };
        let addr = tokio::net::lookup_host((self.settings.host.as_str(), self.settings.port))
            .await
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.settings.host)))?
            .next()
            .ok_or_else(|| unreachable(format!("{} has no address", self.settings.host)))?;
        if let Ok(mut guard) = self.resolved.lock() {
            *guard = Some((Instant::now(), addr));
        }
        Ok(addr)
    }

    async fn peer(&self) -> Result<HttpPeer, ProxyError> {
        let addr = self.address().await?;
        let mut peer = HttpPeer::new(addr, self.settings.tls, self.settings.host.clone());
        peer.options.connection_timeout =
            Some(Duration::from_millis(self.settings.connect_timeout_ms));
        peer.options.read_timeout = Some(Duration::from_millis(self.settings.timeout_ms));
        peer.options.write_timeout = Some(Duration::from_millis(self.settings.timeout_ms));
        peer.options.idle_timeout = Some(POOL_IDLE);
        Ok(peer)
    }

    /// The upstream request: the client's headers minus hop-by-hop and `x-condenser-*`, with
    /// `Host`, `Content-Length` and (when configured) the upstream's own key.
    pub fn request_header(
        &self,
        client: &RequestHeader,
        path: &str,
        body_len: usize,
        keep_accept_encoding: bool,
    ) -> Result<RequestHeader, ProxyError> {
        let mut req = RequestHeader::build(
            client.method.clone(),
            path.as_bytes(),
            Some(client.headers.len() + 2),
        )
        .map_err(|e| ProxyError::InvalidRequest(e.to_string()))?;
        for (name, value) in client.headers.iter() {
            let n = name.as_str();
            let skip = HOP_BY_HOP.contains(&n)
                || matches!(n, "host" | "content-length" | "expect")
                || n.starts_with("x-condenser-")
                || (n == "accept-encoding" && !keep_accept_encoding)
                || (n == "authorization" && self.api_key.is_some());
            if !skip {
                let _ = req.append_header(name.clone(), value.clone());
            }
        }
        let invalid = |e: Box<Error>| ProxyError::InvalidRequest(e.to_string());
        req.insert_header("host", self.host_header())
            .map_err(invalid)?;
        req.insert_header("content-length", body_len.to_string())
            .map_err(invalid)?;
        if let Some(key) = &self.api_key {
            req.insert_header("authorization", format!("Bearer {key}"))
                .map_err(invalid)?;
        }
        Ok(req)
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

    /// Sends the request and relays the response to the client as it arrives (SSE events are
    /// forwarded chunk by chunk, never buffered whole). `extra` headers go on the response.
    pub async fn exchange(
        &self,
        connector: &Connector,
        client: &mut Session,
        request: RequestHeader,
        body: Bytes,
        extra: &[(&'static str, String)],
    ) -> Result<u16, ExchangeError> {
        let before = ExchangeError::BeforeResponse;
        let peer = self.peer().await.map_err(before)?;
        let mut attempt = 0;
        let mut up = loop {
            let (mut up, reused) = connector
                .get_http_session(&peer)
                .await
                .map_err(|e| before(self.classify(&e)))?;
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
                Ok(()) => break up,
                // A pooled connection the server already closed: one fresh retry is safe
                // because nothing was answered.
                Err(e)
                    if reused && attempt == 0 && !matches!(e.etype(), ErrorType::ReadTimedout) =>
                {
                    attempt += 1;
                    tracing::debug!(upstream = self.name(), error = %e, "reused connection failed; retrying");
                }
                Err(e) => return Err(before(self.classify(&e))),
            }
        };
        let upstream_header = up.response_header().cloned().ok_or_else(|| {
            before(ProxyError::UpstreamProtocol {
                upstream: self.settings.name.clone(),
                reason: "no response header".into(),
            })
        })?;
        let status = upstream_header.status.as_u16();
        let response =
            client_response(&upstream_header, extra).map_err(|e| before(self.classify(&e)))?;
        client
            .write_response_header(Box::new(response), false)
            .await
            .map_err(|e| ExchangeError::AfterResponse(format!("client write failed: {e}")))?;
        loop {
            match up.read_response_body().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = client.write_response_body(Some(chunk), false).await {
                        // Client went away: drop (do not pool) the half-read upstream connection.
                        return Err(ExchangeError::AfterResponse(format!(
                            "client write failed: {e}"
                        )));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ExchangeError::AfterResponse(format!(
                        "upstream `{}` failed mid-response: {}",
                        self.name(),
                        e.etype().as_str()
                    )))
                }
            }
        }
        client
            .write_response_body(None, true)
            .await
            .map_err(|e| ExchangeError::AfterResponse(format!("client write failed: {e}")))?;
        connector
            .release_http_session(up, &peer, Some(POOL_IDLE))
            .await;
        Ok(status)
    }
}

/// The client's response header: upstream status and headers minus hop-by-hop ones, framed by
/// the upstream's `Content-Length` when it sent one and chunked otherwise (a close-delimited
/// response would cost the client its keep-alive connection).
fn client_response(
    upstream: &ResponseHeader,
    extra: &[(&'static str, String)],
) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(
        upstream.status,
        Some(upstream.headers.len() + extra.len() + 1),
    )?;
    for (name, value) in upstream.headers.iter() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            resp.append_header(name.clone(), value.clone())?;
        }
    }
    let bodiless =
        upstream.status.is_informational() || matches!(upstream.status.as_u16(), 204 | 304);
    if !bodiless && resp.headers.get("content-length").is_none() {
        resp.insert_header("transfer-encoding", "chunked")?;
    }
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    Ok(resp)
}
