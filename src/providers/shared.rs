//! Pieces every translating provider needs: reading OpenAI tool calls and stop sequences,
//! merging same-role turns (both Anthropic and Gemini require alternating roles), and writing
//! OpenAI `chat.completion.chunk` frames.

use serde_json::{json, Map, Value};

use crate::error::ProxyError;

/// One assistant tool call: `(id, function name, parsed arguments)`.
pub type ToolCall = (Option<String>, String, Value);

/// The assistant message's `tool_calls`, with arguments parsed (they must be a JSON object).
pub fn tool_calls(message: &Value) -> Result<Vec<ToolCall>, ProxyError> {
    let calls = message.get("tool_calls").and_then(Value::as_array);
    calls
        .into_iter()
        .flatten()
        .map(|call| {
            let arguments = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let args = if arguments.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(arguments).map_err(|_| {
                    ProxyError::InvalidRequest("tool call arguments must be a JSON object".into())
                })?
            };
            let id = call.get("id").and_then(Value::as_str).map(str::to_string);
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Ok((id, name, args))
        })
        .collect()
}

/// OpenAI `stop` (a string or a list) as a list, when there is one.
pub fn stop_sequences(body: &Map<String, Value>) -> Option<Value> {
    match body.get("stop") {
        Some(Value::String(s)) => Some(json!([s])),
        Some(Value::Array(a)) if !a.is_empty() => Some(Value::Array(a.clone())),
        _ => None,
    }
}

/// Appends `items` under `key` to the last turn when it has the same role, else starts a turn.
pub fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut() {
        if last["role"] == role {
            if let Some(existing) = last[key].as_array_mut() {
                existing.extend(items);
                return;
            }
        }
    }
    let mut turn = Map::new();
    turn.insert("role".into(), json!(role));
    turn.insert(key.into(), Value::Array(items));
    turns.push(Value::Object(turn));
}

#[cfg(test)]
pub mod test_support {
    //! Fixture loading and stream replay shared by the providers' unit tests.

    use crate::providers::StreamTranscoder;

    pub fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    }

    /// Replays a transcript in `step`-byte chunks; returns the `data:` payloads produced.
    pub fn replay(transcoder: &mut dyn StreamTranscoder, bytes: &[u8], step: usize) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            out.extend(transcoder.feed(chunk));
        }
        out.extend(transcoder.finish());
        String::from_utf8(out)
            .expect("utf8")
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| f.strip_prefix("data: ").expect("data frame").to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_role_turns_merge() {
        let mut turns = Vec::new();
        push_turn(&mut turns, "user", "parts", vec![json!(1)]);
        push_turn(&mut turns, "user", "parts", vec![json!(2)]);
        push_turn(&mut turns, "model", "parts", vec![json!(3)]);
        push_turn(&mut turns, "model", "parts", Vec::new());
        assert_eq!(
            turns,
            vec![
                json!({"role": "user", "parts": [1, 2]}),
                json!({"role": "model", "parts": [3]})
            ]
        );
    }

    #[test]
    fn tool_arguments_must_be_json() {
        let ok = json!({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{\"x\":1}"}}]});
        assert_eq!(
            tool_calls(&ok).expect("ok"),
            vec![(Some("a".into()), "f".into(), json!({"x": 1}))]
        );
        let bad = json!({"tool_calls": [{"function": {"name": "f", "arguments": "{"}}]});
        assert!(tool_calls(&bad).is_err());
    }
}
