//! What condenser reads of the client's request: header values, the path, and the body, read
//! whole under the configured size cap. Chat requests must be read whole to be routed on `model`
//! and compressed; the cap is enforced both from `Content-Length` (before reading a byte) and
//! while reading (chunked bodies).

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use crate::error::ProxyError;

pub async fn read_whole(session: &mut Session, limit: usize) -> Result<Bytes, ProxyError> {
    let header = session.req_header();
    let declared = header
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
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
            .map_err(|e| ProxyError::Client(e.to_string()))?;
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| ProxyError::Client(e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ProxyError::BodyTooLarge { limit });
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
