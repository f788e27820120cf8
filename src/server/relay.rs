//! Relaying an upstream's answer to the client: byte for byte as it arrives (OpenAI-compatible
//! upstreams), or translated from another provider's dialect — streams transcoded chunk by chunk,
//! whole answers and errors decoded into OpenAI JSON. Also what an exchange can fail with, and
//! the hop-by-hop headers never copied between the two sides.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;

use crate::error::ProxyError;
use crate::providers::Provider;

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), plus the ones
/// this proxy recomputes.
pub(super) const HOP_BY_HOP: &[&str] = &[
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

/// What goes on the client's response besides the upstream's headers.
#[derive(Clone, Copy)]
pub struct Extra<'a> {
    /// condenser's own headers (`x-condenser-*`, the key's `x-ratelimit-*`).
    pub headers: &'a [(&'static str, String)],
    /// The call used the operator's key: the provider's account headers stay behind.
    pub operator_key: bool,
}

/// Where an exchange failed: before anything reached the client (answer with a JSON error), or
/// after the response started (the only honest signal left is closing the connection).
#[derive(Debug)]
pub enum ExchangeError {
    BeforeResponse(ProxyError),
    AfterResponse(String),
    /// The upstream refused or failed in a way worth another attempt after `delay`, and nothing
    /// reached the client (only when the caller allowed a retry).
    Retryable {
        delay: std::time::Duration,
        reason: String,
    },
}

impl ExchangeError {
    pub(super) fn into_proxy_error(self) -> ProxyError {
        match self {
            Self::BeforeResponse(e) => e,
            Self::Retryable { reason, .. } => ProxyError::UpstreamProtocol {
                upstream: String::new(),
                reason,
            },
            Self::AfterResponse(reason) => ProxyError::UpstreamProtocol {
                upstream: String::new(),
                reason,
            },
        }
    }
}

/// Largest non-streaming answer buffered for translation.
pub(super) const MAX_TRANSLATED_BODY: usize = 64 * 1024 * 1024;

/// Largest client answer kept for a shadow comparison.
const CAPTURE_LIMIT: usize = 4 * 1024 * 1024;

/// A copy of the body the client received (OpenAI's shape), kept for a shadow comparison.
#[derive(Debug, Default)]
pub struct Capture {
    pub bytes: Vec<u8>,
    /// The answer outgrew [`CAPTURE_LIMIT`]; nothing is kept.
    pub overflowed: bool,
}

impl Capture {
    fn push(&mut self, chunk: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.bytes.len() + chunk.len() > CAPTURE_LIMIT {
            self.overflowed = true;
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(chunk);
        }
    }
}

fn keep(capture: &mut Option<&mut Capture>, chunk: &[u8]) {
    if let Some(c) = capture.as_deref_mut() {
        c.push(chunk);
    }
}

pub enum ResponseMode {
    Relay,
    Translate(Translation),
}

pub struct Translation {
    pub provider: Arc<dyn Provider>,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

/// `(status sent to the client, whether the upstream connection may be pooled)`.
type Written = (u16, bool);

fn after(e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::AfterResponse(format!("client write failed: {e}"))
}

fn protocol(upstream: &str, reason: String) -> ExchangeError {
    ExchangeError::BeforeResponse(ProxyError::UpstreamProtocol {
        upstream: upstream.to_string(),
        reason,
    })
}

fn upstream_header(upstream: &str, up: &HttpSession) -> Result<ResponseHeader, ExchangeError> {
    up.response_header()
        .cloned()
        .ok_or_else(|| protocol(upstream, "no response header".into()))
}

/// Upstream headers minus hop-by-hop ones and minus `skip` (and, for a call made with the
/// operator's key, every one `header_policy` keeps back), then `set` and `extra` on top.
fn copy_headers(
    upstream: &ResponseHeader,
    skip: &[&str],
    set: &[(&'static str, String)],
    extra: &Extra<'_>,
) -> pingora::Result<ResponseHeader> {
    let Extra {
        headers: extra,
        operator_key,
    } = *extra;
    let mut resp = ResponseHeader::build(
        upstream.status,
        Some(upstream.headers.len() + extra.len() + 2),
    )?;
    for (name, value) in upstream.headers.iter() {
        let n = name.as_str();
        let private = operator_key && !super::header_policy::forwards_response(n);
        if !HOP_BY_HOP.contains(&n) && !skip.contains(&n) && !private {
            resp.append_header(name.clone(), value.clone())?;
        }
    }
    for (name, value) in set.iter().chain(extra) {
        resp.insert_header(*name, value.as_str())?;
    }
    Ok(resp)
}

/// Relays the answer unchanged, framed by the upstream's `Content-Length` when it sent one and
/// chunked otherwise (a close-delimited response would cost the client its keep-alive).
pub async fn relay(
    upstream: &str,
    up: &mut HttpSession,
    client: &mut Session,
    extra: &Extra<'_>,
    mut capture: Option<&mut Capture>,
) -> Result<Written, ExchangeError> {
    let header = upstream_header(upstream, up)?;
    let status = header.status.as_u16();
    let event_stream = header
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut resp =
        copy_headers(&header, &[], &[], extra).map_err(|e| protocol(upstream, e.to_string()))?;
    let bodiless = header.status.is_informational() || matches!(status, 204 | 304);
    if !bodiless && resp.headers.get("content-length").is_none() {
        resp.insert_header("transfer-encoding", "chunked")
            .map_err(|e| protocol(upstream, e.to_string()))?;
    }
    client
        .write_response_header(Box::new(resp), false)
        .await
        .map_err(after)?;
    loop {
        match up.read_response_body().await {
            Ok(Some(chunk)) => {
                keep(&mut capture, &chunk);
                client
                    .write_response_body(Some(chunk), false)
                    .await
                    .map_err(after)?
            }
            Ok(None) => break,
            Err(e) => {
                let reason = format!(
                    "upstream `{upstream}` failed mid-response: {}",
                    e.etype().as_str()
                );
                if event_stream {
                    // An SDK reading events sees an error event (and then the unterminated
                    // body), never a stream that merely stops. The blank lines end whatever
                    // partial event the upstream was cut in.
                    let mut frame = b"\n\n".to_vec();
                    frame.extend(crate::openai::chunk::data_frame(
                        &crate::openai::error::error_value(
                            &reason,
                            "server_error",
                            None,
                            "upstream_cut",
                        ),
                    ));
                    let _ = client
                        .write_response_body(Some(Bytes::from(frame)), false)
                        .await;
                }
                return Err(ExchangeError::AfterResponse(reason));
            }
        }
    }
    client
        .write_response_body(None, true)
        .await
        .map_err(after)?;
    Ok((status, true))
}

/// Translates the provider's answer into OpenAI's shapes.
pub async fn translate(
    upstream: &str,
    up: &mut HttpSession,
    client: &mut Session,
    extra: &Extra<'_>,
    t: Translation,
    mut capture: Option<&mut Capture>,
) -> Result<Written, ExchangeError> {
    let header = upstream_header(upstream, up)?;
    let status = header.status.as_u16();
    let skip = ["content-length", "content-type", "content-encoding"];
    if (200..300).contains(&status) && t.stream {
        let set = [
            ("content-type", "text/event-stream".to_string()),
            ("cache-control", "no-cache".to_string()),
            ("transfer-encoding", "chunked".to_string()),
        ];
        let resp = copy_headers(&header, &skip, &set, extra)
            .map_err(|e| protocol(upstream, e.to_string()))?;
        client
            .write_response_header(Box::new(resp), false)
            .await
            .map_err(after)?;
        let mut transcoder = t.provider.stream_transcoder(&t.model, t.include_usage);
        loop {
            match up.read_response_body().await {
                Ok(Some(chunk)) => {
                    let frames = transcoder.feed(&chunk);
                    if !frames.is_empty() {
                        keep(&mut capture, &frames);
                        client
                            .write_response_body(Some(Bytes::from(frames)), false)
                            .await
                            .map_err(after)?;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Tell the client in-band before the connection closes.
                    let frames = transcoder.finish();
                    let _ = client
                        .write_response_body(Some(Bytes::from(frames)), false)
                        .await;
                    return Err(ExchangeError::AfterResponse(format!(
                        "upstream `{upstream}` failed mid-stream: {}",
                        e.etype().as_str()
                    )));
                }
            }
        }
        let frames = transcoder.finish();
        if !frames.is_empty() {
            keep(&mut capture, &frames);
            client
                .write_response_body(Some(Bytes::from(frames)), false)
                .await
                .map_err(after)?;
        }
        client
            .write_response_body(None, true)
            .await
            .map_err(after)?;
        return Ok((status, true));
    }

    let mut body = Vec::new();
    loop {
        match up.read_response_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_TRANSLATED_BODY {
                    return Err(protocol(upstream, "answer too large to translate".into()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(protocol(upstream, e.etype().as_str().to_string())),
        }
    }
    let json = if (200..300).contains(&status) {
        t.provider
            .decode_chat(&body, &t.model)
            .map_err(|reason| protocol(upstream, reason))?
    } else {
        t.provider.decode_error(status, &body)
    };
    let set = [
        ("content-type", "application/json".to_string()),
        ("content-length", json.len().to_string()),
    ];
    let resp =
        copy_headers(&header, &skip, &set, extra).map_err(|e| protocol(upstream, e.to_string()))?;
    client
        .write_response_header(Box::new(resp), false)
        .await
        .map_err(after)?;
    keep(&mut capture, &json);
    client
        .write_response_body(Some(Bytes::from(json)), true)
        .await
        .map_err(after)?;
    Ok((status, true))
}
