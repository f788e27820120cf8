//! The inbound chat-completion request: just enough structure to route and compress, validated
//! leniently. The request stays a JSON tree, so fields this proxy does not know (new OpenAI
//! parameters) pass through untouched and in their original order.

use serde_json::{Map, Value};

/// Why a request body is not a chat-completion request; the message says where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Invalid(String),
}

/// A validated chat-completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    pub body: Map<String, Value>,
}

impl ChatRequest {
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| WireError::MalformedJson(e.to_string()))?;
        let Value::Object(body) = value else {
            return Err(WireError::Invalid(
                "the request body must be a JSON object".into(),
            ));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::String(_)) | None => {
                return Err(WireError::Invalid(
                    "you must provide a model parameter".into(),
                ))
            }
            Some(other) => return Err(wrong_type("model", "a string", other)),
        };
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(wrong_type("stream", "a boolean", other)),
        };
        match body.get("messages") {
            Some(Value::Array(messages)) => validate_messages(messages)?,
            Some(other) => return Err(wrong_type("messages", "an array", other)),
            None => {
                return Err(WireError::Invalid(
                    "missing required parameter: 'messages'".into(),
                ))
            }
        }
        Ok(Self {
            model,
            stream,
            body,
        })
    }

    pub fn messages_mut(&mut self) -> &mut [Value] {
        match self.body.get_mut("messages") {
            Some(Value::Array(messages)) => messages.as_mut_slice(),
            _ => &mut [],
        }
    }

    pub fn messages(&self) -> &[Value] {
        match self.body.get("messages") {
            Some(Value::Array(messages)) => messages.as_slice(),
            _ => &[],
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, got: &Value) -> WireError {
    WireError::Invalid(format!(
        "invalid type for '{param}': expected {expected}, but got {}",
        type_name(got)
    ))
}

/// Roles of OpenAI's chat API (and the two of Anthropic's Messages API).
const KNOWN_ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn validate_messages(messages: &[Value]) -> Result<(), WireError> {
    if messages.is_empty() {
        return Err(WireError::Invalid(
            "'messages' must contain at least one message".into(),
        ));
    }
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(fields) = message else {
            return Err(wrong_type(&format!("messages[{i}]"), "an object", message));
        };
        match fields.get("role") {
            Some(Value::String(role)) if KNOWN_ROLES.contains(&role.as_str()) => {}
            Some(Value::String(role)) => {
                return Err(WireError::Invalid(format!(
                    "invalid value for 'messages[{i}].role': `{role}`; supported: {}",
                    KNOWN_ROLES.join(", ")
                )))
            }
            Some(other) => {
                return Err(wrong_type(
                    &format!("messages[{i}].role"),
                    "a string",
                    other,
                ))
            }
            None => {
                return Err(WireError::Invalid(format!(
                    "missing required parameter: 'messages[{i}].role'"
                )))
            }
        }
        match fields.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    if part.get("type").and_then(Value::as_str).is_none() {
                        return Err(WireError::Invalid(format!(
                            "'messages[{i}].content[{j}]' must be an object with a string 'type'"
                        )));
                    }
                }
            }
            Some(other) => {
                return Err(wrong_type(
                    &format!("messages[{i}].content"),
                    "a string or an array of parts",
                    other,
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_in_order() {
        let raw = br#"{"model":"m","zeta":1,"messages":[{"role":"user","content":"hi","x":true}],"alpha":{"a":[1,2]}}"#;
        let req = ChatRequest::parse(raw).expect("valid");
        assert_eq!(req.to_bytes(), raw.to_vec());
    }

    #[test]
    fn bad_inputs_are_rejected_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "not valid JSON"),
            (b"[1,2]", "JSON object"),
            (br#"{"messages":[]}"#, "model parameter"),
            (br#"{"model":"m"}"#, "'messages'"),
            (br#"{"model":"m","messages":"hi"}"#, "expected an array"),
            (br#"{"model":7,"messages":[]}"#, "'model'"),
            (br#"{"model":"m","messages":[{"content":"x"}]}"#, "role"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "content",
            ),
            (
                br#"{"model":"m","stream":"yes","messages":[{"role":"user"}]}"#,
                "'stream'",
            ),
        ];
        for (body, needle) in cases {
            let err = ChatRequest::parse(body).expect_err("must fail");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }
}
