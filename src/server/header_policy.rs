//! Which headers cross condenser when it calls the provider with the operator's key (an
//! upstream with `api_key_env`). The request carries the organisation's credentials, so only
//! headers that shape the API call go with it — never the client's `OpenAI-Organization`,
//! `OpenAI-Project` or cookies, which would bill or scope the call to another account — and the
//! answer goes back without the provider's account-wide facts (organisation ids, the account's
//! own rate-limit counters, cookies). condenser adds its per-key `x-ratelimit-*` afterwards.
//!
//! When the client's own key is forwarded (no configured key), the account is the client's and
//! every end-to-end header passes both ways.

/// Request headers forwarded with the operator's key (lower-case); `x-stainless-*` (the
/// official SDKs' runtime facts) too.
const REQUEST_ALLOWED: &[&str] = &[
    "accept",
    "accept-encoding",
    "anthropic-beta",
    "anthropic-version",
    "content-type",
    "idempotency-key",
    "openai-beta",
    "traceparent",
    "tracestate",
    "user-agent",
    "x-client-request-id",
    "x-request-id",
];

/// Response headers relayed from a call made with the operator's key (lower-case).
const RESPONSE_ALLOWED: &[&str] = &[
    "cache-control",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "openai-processing-ms",
    "openai-version",
    "request-id",
    "retry-after",
    "retry-after-ms",
    "vary",
    "x-request-id",
    "x-should-retry",
];

/// Whether a client request header goes upstream with the operator's key.
pub fn forwards_request(name: &str) -> bool {
    REQUEST_ALLOWED.contains(&name) || name.starts_with("x-stainless-")
}

/// Whether an upstream response header goes back to the client of a call made with the
/// operator's key.
pub fn forwards_response(name: &str) -> bool {
    RESPONSE_ALLOWED.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_headers_stay_behind() {
        for name in ["openai-organization", "openai-project", "cookie"] {
            assert!(!forwards_request(name), "{name}");
        }
        for name in ["content-type", "anthropic-beta", "x-stainless-os"] {
            assert!(forwards_request(name), "{name}");
        }
        for name in [
            "openai-organization",
            "anthropic-organization-id",
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-remaining",
            "set-cookie",
        ] {
            assert!(!forwards_response(name), "{name}");
        }
        assert!(forwards_response("retry-after"));
    }
}
