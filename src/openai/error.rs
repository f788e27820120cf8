//! The `{"error": {"message", "type", "param", "code"}}` body every OpenAI SDK knows how to read.

use serde_json::{json, Value};

/// An error body; `param` names the offending request field when there is one.
pub fn error_value(message: &str, kind: &str, param: Option<&str>, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// The same, serialised.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: &str) -> Vec<u8> {
    error_value(message, kind, param, code)
        .to_string()
        .into_bytes()
}
