//! Writing complete responses the proxy produces itself (health, model list, errors), as opposed
//! to relaying an upstream's (`relay`): one header with `Content-Length`, one body write, so
//! small answers leave in one segment.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::error::ProxyError;

pub async fn json(session: &mut Session, status: u16, body: Vec<u8>) -> pingora::Result<()> {
    text(session, status, "application/json", body).await
}

/// A complete response of any content type.
pub async fn text(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Vec<u8>,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

/// Answers an error as OpenAI-shaped JSON (Anthropic-shaped on the `/v1/messages` front door).
/// After a 413 the unread body makes the connection unusable, so it is closed.
pub async fn error(
    session: &mut Session,
    err: &ProxyError,
    anthropic: bool,
) -> pingora::Result<()> {
    if matches!(err, ProxyError::BodyTooLarge { .. }) {
        session.set_keepalive(None);
    }
    let body = if anthropic {
        err.anthropic_body()
    } else {
        err.body()
    };
    let mut resp = ResponseHeader::build(err.status(), Some(3))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (name, value) in err.headers() {
        resp.insert_header(name, value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}
