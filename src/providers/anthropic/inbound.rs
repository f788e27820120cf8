//! The Anthropic-native front door's compression view: an Anthropic Messages request seen as
//! OpenAI-shaped messages, so the one compression policy and pipeline apply unchanged, then the
//! compressed text written back in place. Text blocks are already shaped like OpenAI text parts;
//! `system` becomes a system message; each `tool_result` becomes a tool message. Everything else
//! (images, `tool_use`, `cache_control`, thinking blocks, unknown fields) is left as it was.

use serde_json::{json, Map, Value};

/// Where a view message came from.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    System,
    Message(usize),
    /// `messages[i].content[j]`, a `tool_result` block.
    ToolResult(usize, usize),
}

pub struct CompressionView {
    pub messages: Vec<Value>,
    origins: Vec<Origin>,
}

/// Every text a view of `body` would expose to compression (system, message text blocks,
/// `tool_result` contents), borrowed: what an uncompressed request's token count reads, without
/// building the view.
pub fn texts(body: &Map<String, Value>) -> Vec<&str> {
    fn push<'a>(content: Option<&'a Value>, out: &mut Vec<&'a str>) {
        match content {
            Some(Value::String(s)) => out.push(s),
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(text) = block.get("text").and_then(Value::as_str) {
                                out.push(text);
                            }
                        }
                        Some("tool_result") => push(block.get("content"), out),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    push(body.get("system"), &mut out);
    for message in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push(message.get("content"), &mut out);
    }
    out
}

impl CompressionView {
    pub fn of(body: &Map<String, Value>) -> Self {
        let mut messages = Vec::new();
        let mut origins = Vec::new();
        if let Some(system) = body.get("system") {
            messages.push(json!({"role": "system", "content": system}));
            origins.push(Origin::System);
        }
        for (i, message) in body
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let role = message.get("role").cloned().unwrap_or(Value::Null);
            let content = message.get("content").cloned().unwrap_or(Value::Null);
            if let Value::Array(blocks) = &content {
                for (j, block) in blocks.iter().enumerate() {
                    if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                        let result = block.get("content").cloned().unwrap_or(Value::Null);
                        messages.push(json!({"role": "tool", "content": result}));
                        origins.push(Origin::ToolResult(i, j));
                    }
                }
            }
            messages.push(json!({"role": role, "content": content}));
            origins.push(Origin::Message(i));
        }
        Self { messages, origins }
    }

    /// Copies the (compressed) view back into the request.
    pub fn write_back(self, body: &mut Map<String, Value>) {
        for (view, origin) in self.messages.into_iter().zip(self.origins) {
            let content = view.get("content").cloned().unwrap_or(Value::Null);
            match origin {
                Origin::System => {
                    body.insert("system".into(), content);
                }
                Origin::Message(i) => {
                    if let Some(message) = body.get_mut("messages").and_then(|m| m.get_mut(i)) {
                        // Keep tool_result blocks as already written back.
                        let results: Vec<(usize, Value)> = message
                            .get("content")
                            .and_then(Value::as_array)
                            .map(|blocks| {
                                blocks
                                    .iter()
                                    .enumerate()
                                    .filter(|(_, b)| {
                                        b.get("type").and_then(Value::as_str) == Some("tool_result")
                                    })
                                    .map(|(j, b)| (j, b.clone()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let Some(message) = message.as_object_mut() else {
                            continue;
                        };
                        message.insert("content".into(), content);
                        for (j, block) in results {
                            if let Some(slot) = message["content"].get_mut(j) {
                                *slot = block;
                            }
                        }
                    }
                }
                Origin::ToolResult(i, j) => {
                    if let Some(block) = body
                        .get_mut("messages")
                        .and_then(|m| m.get_mut(i))
                        .and_then(|m| m.get_mut("content"))
                        .and_then(|c| c.get_mut(j))
                        .and_then(Value::as_object_mut)
                    {
                        block.insert("content".into(), content);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_round_trips_and_exposes_tool_results() {
        let body = json!({
            "model": "claude-x", "max_tokens": 10,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "doc"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "result text"},
                    {"type": "text", "text": "question?"}]}
            ]
        });
        let mut map = body.as_object().cloned().expect("object");
        let mut view = CompressionView::of(&map);
        let roles: Vec<&str> = view
            .messages
            .iter()
            .map(|m| m["role"].as_str().expect("role"))
            .collect();
        assert_eq!(roles, vec!["system", "user", "assistant", "tool", "user"]);
        assert_eq!(view.messages[3]["content"], "result text");

        view.messages[0]["content"][0]["text"] = json!("SYS");
        view.messages[3]["content"] = json!("RESULT");
        view.messages[1]["content"] = json!("DOC");
        view.write_back(&mut map);
        assert_eq!(
            map["system"][0],
            json!({"type": "text", "text": "SYS", "cache_control": {"type": "ephemeral"}})
        );
        assert_eq!(map["messages"][0]["content"], "DOC");
        assert_eq!(map["messages"][2]["content"][0]["content"], "RESULT");
        assert_eq!(map["messages"][2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(map["messages"][2]["content"][1]["text"], "question?");
        assert_eq!(map["messages"][1], body["messages"][1]);
    }

    #[test]
    fn texts_are_what_the_view_exposes() {
        let body = json!({
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {"role": "user", "content": "doc"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "not text"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "result"}]},
                    {"type": "text", "text": "question?"}]}
            ]
        });
        let map = body.as_object().expect("object");
        assert_eq!(texts(map), vec!["sys", "doc", "result", "question?"]);
    }
}
