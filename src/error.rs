//! Client-visible errors: one enum, one table from variant to HTTP status and OpenAI error
//! `type`/`code`, and the `{"error":{...}}` body every client of an OpenAI SDK knows how to read.

use serde_json::json;

use crate::openai::WireError;

/// An error answered to the client before any response byte was sent.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("request body exceeds the {limit} byte limit")]
    BodyTooLarge { limit: usize },
    #[error("no route serves model `{}`", clip(.0))]
    NoRoute(String),
    #[error("route `{route}` (named in x-condenser-route) does not serve model `{}`", clip(.model))]
    RouteModelMismatch { route: String, model: String },
    #[error("this API key may not set `{0}`")]
    HeaderNotAllowed(&'static str),
    #[error("{method} {path} is not an endpoint this API key may use through condenser")]
    EndpointNotAllowed { method: String, path: String },
    #[error("refused path: {0}")]
    UnsafePath(String),
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    #[error("unknown route `{0}` in x-condenser-route")]
    UnknownRoute(String),
    #[error(
        "unknown compressor `{0}` in x-condenser-compress (on, off, or one of: {names})",
        names = crate::compress::registry::names().join(", ")
    )]
    UnknownCompressor(String),
    #[error("no such endpoint: {method} {path}")]
    NotFound { method: String, path: String },
    #[error("upstream `{upstream}` is unreachable: {reason}")]
    UpstreamUnreachable { upstream: String, reason: String },
    #[error("upstream `{upstream}` did not answer within {timeout_ms} ms")]
    UpstreamTimeout { upstream: String, timeout_ms: u64 },
    #[error("upstream `{upstream}` failed: {reason}")]
    UpstreamProtocol { upstream: String, reason: String },
    #[error("client connection failed: {0}")]
    Client(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the admin API needs `Authorization: Bearer <admin key>`")]
    AdminUnauthorized,
    #[error("the admin API is read-only: set server.admin_key_env to allow changes")]
    AdminReadOnly,
    #[error("no route named `{0}`")]
    RouteNotFound(String),
    #[error("missing or unknown API key: send `Authorization: Bearer <key>` or `x-api-key: <key>` with a key condenser accepts")]
    Unauthorized,
    #[error("this API key may not use route `{0}`")]
    RouteNotAllowed(String),
    #[error("request headers exceed the limit ({0})")]
    HeadersTooLarge(String),
    #[error("too many requests in flight ({0}); retry shortly")]
    Overloaded(&'static str),
    #[error("rate limit reached for this API key: {limit} {} per minute", unit.noun())]
    RateLimited {
        unit: RateUnit,
        limit: u32,
        retry_after_s: u64,
    },
}

impl ProxyError {
    /// HTTP status, OpenAI error `type`, and machine-readable `code`.
    pub fn classify(&self) -> (u16, &'static str, &'static str) {
        match self {
            Self::MalformedJson(_) => (400, "invalid_request_error", "invalid_json"),
            Self::InvalidRequest(_) => (400, "invalid_request_error", "invalid_request"),
            Self::BodyTooLarge { .. } => (413, "invalid_request_error", "request_too_large"),
            Self::NoRoute(_) => (404, "invalid_request_error", "model_not_found"),
            Self::UnknownRoute(_) => (400, "invalid_request_error", "unknown_route"),
            Self::RouteModelMismatch { .. } => {
                (400, "invalid_request_error", "route_model_mismatch")
            }
            Self::HeaderNotAllowed(_) => (403, "permission_error", "header_not_allowed"),
            Self::EndpointNotAllowed { .. } => (403, "permission_error", "endpoint_not_allowed"),
            Self::UnsafePath(_) => (400, "invalid_request_error", "invalid_path"),
            Self::BodyTimeout(_) => (408, "invalid_request_error", "request_timeout"),
            Self::UnknownCompressor(_) => (400, "invalid_request_error", "unknown_compressor"),
            Self::NotFound { .. } => (404, "invalid_request_error", "unknown_url"),
            Self::UpstreamUnreachable { .. } => (502, "api_error", "upstream_unreachable"),
            Self::UpstreamTimeout { .. } => (504, "api_error", "upstream_timeout"),
            Self::UpstreamProtocol { .. } => (502, "api_error", "upstream_protocol_error"),
            Self::Client(_) => (400, "invalid_request_error", "client_error"),
            Self::Internal(_) => (500, "api_error", "internal_error"),
            Self::AdminUnauthorized => (401, "authentication_error", "invalid_admin_key"),
            Self::AdminReadOnly => (403, "permission_error", "admin_read_only"),
            Self::RouteNotFound(_) => (404, "invalid_request_error", "route_not_found"),
            Self::Unauthorized => (401, "invalid_request_error", "invalid_api_key"),
            Self::RouteNotAllowed(_) => (403, "invalid_request_error", "route_not_allowed"),
            Self::Overloaded(_) => (503, "api_error", "overloaded"),
            Self::HeadersTooLarge(_) => (
                431,
                "invalid_request_error",
                "request_header_fields_too_large",
            ),
            Self::RateLimited { .. } => (429, "rate_limit_error", "rate_limit_exceeded"),
        }
    }

    pub fn status(&self) -> u16 {
        self.classify().0
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Vec<u8> {
        let (_, kind, code) = self.classify();
        let param = match self {
            Self::NoRoute(_) => Some("model"),
            _ => None,
        };
        crate::openai::error::error_body(&self.to_string(), kind, param, code)
    }
}

/// Longest client-supplied text (a model name, a path) an error message repeats: the rest is
/// cut, so a 32 MiB `model` is not echoed into the answer and the access log.
const ECHO_LIMIT: usize = 128;

/// `text` cut to [`ECHO_LIMIT`] bytes (on a character boundary).
pub fn clip(text: &str) -> &str {
    if text.len() <= ECHO_LIMIT {
        return text;
    }
    let mut end = ECHO_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl From<WireError> for ProxyError {
    fn from(error: WireError) -> Self {
        match error {
            WireError::MalformedJson(reason) => Self::MalformedJson(reason),
            WireError::Invalid(reason) => Self::InvalidRequest(reason),
        }
    }
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Requests,
    /// Input tokens sent upstream (after compression).
    Tokens,
}

impl RateUnit {
    fn noun(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "input tokens",
        }
    }

    /// The `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` header names OpenAI's
    /// clients read.
    pub fn header_names(self) -> [&'static str; 3] {
        match self {
            Self::Requests => [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            Self::Tokens => [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        }
    }
}

impl ProxyError {
    /// Headers the error's answer carries: when to retry, and the rate limit.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Overloaded(_) => vec![("retry-after", "1".into())],
            Self::RateLimited {
                unit,
                limit,
                retry_after_s,
            } => {
                let [limit_name, remaining_name, reset_name] = unit.header_names();
                vec![
                    ("retry-after", retry_after_s.to_string()),
                    (limit_name, limit.to_string()),
                    (remaining_name, "0".into()),
                    (reset_name, format!("{retry_after_s}s")),
                ]
            }
            _ => Vec::new(),
        }
    }

    /// The same error in the Anthropic Messages API's shape, for `/v1/messages` clients.
    pub fn anthropic_body(&self) -> Vec<u8> {
        let kind = match self.status() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": self.to_string()}})
            .to_string()
            .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped_and_names_the_model() {
        let err = ProxyError::NoRoute("gpt-9".into());
        assert_eq!(err.status(), 404);
        let v: serde_json::Value = serde_json::from_slice(&err.body()).expect("json");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("gpt-9")));
    }

    #[test]
    fn statuses_follow_the_table() {
        assert_eq!(ProxyError::BodyTooLarge { limit: 1 }.status(), 413);
        let timeout = ProxyError::UpstreamTimeout {
            upstream: "u".into(),
            timeout_ms: 5,
        };
        assert_eq!(timeout.status(), 504);
        let down = ProxyError::UpstreamUnreachable {
            upstream: "u".into(),
            reason: "refused".into(),
        };
        assert_eq!(down.status(), 502);
    }
}
