//! Shadow A/B on the Anthropic front door (`/v1/messages`): the real binary over the mock
//! Anthropic upstream (Messages wire format, JSON and SSE), the real SQLite store and MiniLM gate,
//! and the mock's judge on an OpenAI-compatible route.

mod common;

use common::long_document;
use common::shadow::{ask_anthropic, messages_requests, start_anthropic, wait_scored};
use serde_json::Value;

#[tokio::test]
async fn anthropic_messages_are_shadowed_in_anthropic_format() {
    let (s, admin_port, proxy) = start_anthropic("original").await;
    let resp = ask_anthropic(&proxy, "sensitive", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-condenser-shadow"], "original");
    assert_eq!(resp.headers()["x-condenser-compressor"], "off");
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["type"], "message", "relayed in Anthropic's shape");
    assert!(answer["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .contains("1896"));
    let route = wait_scored(admin_port, 1).await;
    let legs = messages_requests(&s.mock);
    assert_eq!(legs.len(), 2, "original and compressed both sent");
    for leg in &legs {
        assert_eq!(
            leg.header("anthropic-version").as_deref(),
            Some("2023-06-01")
        );
        assert_eq!(
            leg.header("x-api-key").as_deref(),
            Some("sk-ant-client-secret")
        );
        assert_eq!(leg.json()["max_tokens"], 256);
    }
    let systems: Vec<usize> = legs
        .iter()
        .map(|l| l.json()["system"].as_str().unwrap_or_default().len())
        .collect();
    assert_eq!(
        systems
            .iter()
            .filter(|&&n| n == long_document().len())
            .count(),
        1
    );
    assert!(
        systems.iter().any(|&n| n < long_document().len() / 2),
        "{systems:?}"
    );
    // The compressed leg said something else: the gates see it.
    assert_eq!(route["pass_rate"], 0.0, "{route}");
    assert!(
        !route["worst"][0]["failed_gates"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{route}"
    );
}

#[tokio::test]
async fn a_streamed_anthropic_answer_is_read_for_scoring() {
    let (s, admin_port, proxy) = start_anthropic("compressed").await;
    let resp = ask_anthropic(&proxy, "stable", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-condenser-shadow"], "compressed");
    let text = resp.text().await.expect("body");
    assert!(text.contains("event: message_stop"), "{text}");
    let route = wait_scored(admin_port, 1).await;
    assert_eq!(route["pass_rate"], 1.0, "{route}");
    let legs: Vec<Value> = messages_requests(&s.mock)
        .iter()
        .map(|r| r.json())
        .collect();
    assert_eq!(legs.len(), 2);
    let streamed = legs
        .iter()
        .find(|l| l["stream"] == true)
        .expect("client's leg");
    let background = legs
        .iter()
        .find(|l| l["stream"] == false)
        .expect("shadow leg");
    assert!(
        streamed["system"].as_str().map(str::len) < background["system"].as_str().map(str::len),
        "the client got the compressed leg, the original went in the background"
    );
}
