//! A `chat.completion`: an answer reduced to its text, tool calls and usage — what the equivalence
//! gates compare and the shadow scorer prices — read from a completion body or from the SSE
//! stream a client received.

use serde_json::{json, Value};

/// An assistant message; `content` is null when the answer is only tool calls.
pub fn assistant_message(text: &str, tool_calls: Vec<Value>) -> Value {
    let content = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    message
}

/// One entry of `choices`.
pub fn choice(index: u64, message: Value, finish_reason: &str) -> Value {
    json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish_reason})
}

/// A `chat.completion` object.
pub fn completion_value(
    id: &str,
    model: &str,
    created: u64,
    choices: Vec<Value>,
    usage: Value,
) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": choices, "usage": usage,
    })
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub text: String,
    /// Function name and parsed argument JSON (a string when the arguments are not JSON).
    pub tool_calls: Vec<(String, Value)>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

fn parse_arguments(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn usage_of(value: &Value) -> (u64, u64) {
    let get = |k: &str| value["usage"][k].as_u64().unwrap_or(0);
    (get("prompt_tokens"), get("completion_tokens"))
}

impl Answer {
    /// From a non-streaming `chat.completion` body; `None` when it is not one.
    pub fn from_completion(body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let message = value.get("choices")?.get(0)?.get("message")?;
        let tool_calls = message["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        let f = &c["function"];
                        (
                            f["name"].as_str().unwrap_or_default().to_string(),
                            parse_arguments(f["arguments"].as_str().unwrap_or_default()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (prompt_tokens, completion_tokens) = usage_of(&value);
        Some(Self {
            text: message["content"].as_str().unwrap_or_default().to_string(),
            tool_calls,
            prompt_tokens,
            completion_tokens,
        })
    }

    /// From the bytes of a `chat.completion.chunk` SSE stream: content deltas concatenated, tool
    /// call fragments joined by index. `None` when the stream carried an error or no chunk.
    pub fn from_stream(body: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(body);
        let mut answer = Self::default();
        let mut calls: Vec<(String, String)> = Vec::new();
        let mut chunks = 0;
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let value: Value = serde_json::from_str(data).ok()?;
            if value.get("error").is_some() {
                return None;
            }
            chunks += 1;
            if value["usage"].is_object() {
                (answer.prompt_tokens, answer.completion_tokens) = usage_of(&value);
            }
            let delta = &value["choices"][0]["delta"];
            if let Some(content) = delta["content"].as_str() {
                answer.text.push_str(content);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap_or(0) as usize;
                if calls.len() <= index {
                    calls.resize(index + 1, (String::new(), String::new()));
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    calls[index].0.push_str(name);
                }
                if let Some(args) = call["function"]["arguments"].as_str() {
                    calls[index].1.push_str(args);
                }
            }
        }
        if chunks == 0 {
            return None;
        }
        answer.tool_calls = calls
            .into_iter()
            .map(|(name, args)| (name, parse_arguments(&args)))
            .collect();
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_completion_with_tool_calls() {
        let body = br#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}],"usage":{"prompt_tokens":12,"completion_tokens":5}}"#;
        let a = Answer::from_completion(body).expect("parses");
        assert_eq!(a.tool_calls[0].0, "get_weather");
        assert_eq!(a.tool_calls[0].1["city"], "Paris");
        assert_eq!((a.prompt_tokens, a.completion_tokens), (12, 5));
    }

    #[test]
    fn joins_a_stream() {
        let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let a = Answer::from_stream(body).expect("parses");
        assert_eq!(a.text, "Hello");
        assert_eq!(
            a.tool_calls,
            vec![("f".to_string(), serde_json::json!({"a": 1}))]
        );
        assert_eq!(a.completion_tokens, 2);
        assert!(Answer::from_stream(b"data: {\"error\":{\"message\":\"x\"}}\n\n").is_none());
    }
}
