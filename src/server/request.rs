//! What condenser reads of the client's request: header values, the path, and the body, read
//! whole under the configured size cap. Chat requests must be read whole to be routed on `model`
//! and compressed; the cap is enforced both from `Content-Length` (before reading a byte) and
//! while reading (chunked bodies), and the whole body must arrive within a deadline (408), so a
//! client trickling bytes cannot hold a connection and its admission places for ever.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use crate::error::ProxyError;

/// The body, read whole within `deadline`.
pub async fn read_whole(
    session: &mut Session,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ProxyError> {
    let timed_out = ProxyError::BodyTimeout(deadline.as_secs());
    match tokio::time::timeout(deadline, read_body(session, limit)).await {
        // pingora's own per-read timeout (set to the same length) may fire first: same answer.
        Err(_) | Ok(Err(ReadError::TimedOut)) => Err(timed_out),
        Ok(Err(ReadError::Other(e))) => Err(e),
        Ok(Ok(body)) => Ok(body),
    }
}

/// The request's `Content-Length`, when it declares one.
pub fn declared_length(session: &Session) -> Option<usize> {
    header_str(session, "content-length").and_then(|v| v.trim().parse::<usize>().ok())
}

/// Why reading the body stopped: a read timed out, or anything else (answered as is).
enum ReadError {
    TimedOut,
    Other(ProxyError),
}

impl From<ProxyError> for ReadError {
    fn from(e: ProxyError) -> Self {
        Self::Other(e)
    }
}

fn client_error(e: Box<pingora::Error>) -> ReadError {
    if matches!(e.etype(), pingora::ErrorType::ReadTimedout) {
        ReadError::TimedOut
    } else {
        ReadError::Other(ProxyError::Client(e.to_string()))
    }
}

async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, ReadError> {
    let declared = declared_length(session);
    let header = session.req_header();
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit }.into());
    }
    let expects_continue = header
        .headers
        .get("expect")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        // Without the interim answer, curl and some SDKs wait a second before sending.
        session
            .write_continue_response()
            .await
            .map_err(client_error)?;
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = session.read_request_body().await.map_err(client_error)? {
        if body.len() + chunk.len() > limit {
            return Err(ProxyError::BodyTooLarge { limit }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A request header's value, when present and visible ASCII.
pub fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

/// The client's path with its query string.
pub fn path_and_query(session: &Session) -> String {
    session.req_header().uri.path_and_query().map_or_else(
        || session.req_header().uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    )
}
