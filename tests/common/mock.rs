//! The mock upstream: records what it receives and answers in the providers' wire formats —
//! OpenAI chat completions (JSON and SSE, scripted answers for the shadow tests), Anthropic
//! Messages and Gemini from recorded fixtures — plus an echo for pass-through paths.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// How long the `slowleg` model takes to answer a non-streamed request (the shadow's
/// background leg): long enough that a client kept waiting for it cannot pass for a loaded
/// machine's jitter.
pub const SLOW_LEG: Duration = Duration::from_secs(5);

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("recorded body is JSON")
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_string())
    }
}

#[derive(Clone, Default)]
pub struct MockState {
    pub received: Arc<Mutex<Vec<Recorded>>>,
    /// `model: "gated"` streams its first event, then waits for this before the rest.
    pub gate: Arc<Notify>,
    /// `model: "pairjudge"` answers only once two of its calls are in flight together.
    pub judge_pair: JudgePair,
}

#[derive(Clone)]
pub struct JudgePair(Arc<tokio::sync::Barrier>);

impl Default for JudgePair {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Barrier::new(2)))
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: MockState,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let state = MockState::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/messages", post(anthropic))
            .route("/v1beta/models/{*rest}", post(gemini))
            .fallback(any(echo))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("mock serve");
        });
        Self { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.state.received.lock().expect("lock").clone()
    }

    pub fn last(&self) -> Recorded {
        self.received()
            .last()
            .cloned()
            .expect("upstream received a request")
    }
}

fn record(state: &MockState, uri: &Uri, headers: &HeaderMap, body: &Bytes) {
    state.received.lock().expect("lock").push(Recorded {
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.to_string()),
        headers: headers.clone(),
        body: body.clone(),
    });
}

async fn echo(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &uri, &headers, &body);
    let out = json!({"object": "list", "path": uri.path(), "received_bytes": body.len(),
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]});
    // A provider's account headers, which must not reach a client of the operator's key.
    (
        [
            ("openai-organization", "org-operator"),
            ("x-ratelimit-remaining-tokens", "149999"),
            ("set-cookie", "__cf_bm=operator; path=/"),
            ("x-request-id", "req-mock"),
        ],
        axum::Json(out),
    )
        .into_response()
}

fn completion(model: &str, message: Value, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-mock1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    })
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let c = json!({"id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

/// Answers for the shadow tests, deterministic per request:
/// - `stable` / `slowleg` answer the same whatever the context;
/// - `sensitive` answers correctly only when the whole document arrived (all 40 sections of
///   [`long_document`] repeat one sentence), so a compressed leg answers differently;
/// - `judge` plays the LLM judge: equivalent when answers A and B are identical; `pairjudge`
///   too, once two of its calls are in flight together.
fn scripted_answer(model: &str, request: &Value, body: &[u8]) -> Option<String> {
    const RIGHT: &str = "The lamp was first lit on 14 March 1896 by Marguerite Okonkwo.";
    match model {
        "stable" | "slowleg" => Some(RIGHT.into()),
        "sensitive" => {
            let text = String::from_utf8_lossy(body);
            Some(if text.matches("migratory birds").count() >= 40 {
                RIGHT.into()
            } else {
                "The document does not say when the lamp was first lit.".into()
            })
        }
        "judge" | "pairjudge" => {
            let prompt = request["messages"][1]["content"]
                .as_str()
                .unwrap_or_default();
            let a = prompt
                .split("Answer A (reference):\n")
                .nth(1)?
                .split("\n\nAnswer B:\n")
                .next()?;
            let b = prompt.split("\n\nAnswer B:\n").nth(1)?;
            Some(if a.trim() == b.trim() {
                r#"{"verdict": "equivalent", "score": 0.95, "missing_facts": []}"#.into()
            } else {
                r#"{"verdict": "different", "score": 0.1, "missing_facts": ["the date"]}"#.into()
            })
        }
        _ => None,
    }
}

fn tool_call_message() -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": "call_abc123", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
}

async fn chat(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &uri, &headers, &body);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("").to_string();
    let stream = request["stream"].as_bool().unwrap_or(false);
    let messages = request["messages"].as_array().map_or(0, Vec::len);
    match model.as_str() {
        "fail" => {
            let err = json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                "param": null, "code": "rate_limit_exceeded"}});
            return (StatusCode::TOO_MANY_REQUESTS, axum::Json(err)).into_response();
        }
        "retry-forever" => {
            let err = json!({"error": {"message": "Rate limit reached", "type": "requests",
                "param": null, "code": "rate_limit_exceeded"}});
            let wait = [("retry-after", u64::MAX.to_string())];
            return (StatusCode::TOO_MANY_REQUESTS, wait, axum::Json(err)).into_response();
        }
        "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        "pairjudge" => {
            let paired = tokio::time::timeout(Duration::from_secs(5), state.judge_pair.0.wait());
            if paired.await.is_err() {
                let err = json!({"error": {"message": "no second judge call arrived", "type": "server_error"}});
                return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(err)).into_response();
            }
        }
        _ => {}
    }
    if model == "slowleg" && !stream {
        tokio::time::sleep(SLOW_LEG).await;
    }
    let tools = model == "tools";
    let scripted = scripted_answer(&model, &request, &body);
    if !stream {
        let message = if tools {
            tool_call_message()
        } else if let Some(text) = &scripted {
            json!({"role": "assistant", "content": text, "refusal": null})
        } else {
            json!({"role": "assistant", "content": format!("received {messages} messages"), "refusal": null})
        };
        return axum::Json(completion(
            &model,
            message,
            if tools { "tool_calls" } else { "stop" },
        ))
        .into_response();
    }
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    let gate = state.gate.clone();
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
        };
        send(chunk(
            &model,
            json!({"role": "assistant", "content": ""}),
            None,
        ))
        .await;
        if model == "gated" {
            gate.notified().await;
        }
        if tools {
            let call = json!({"tool_calls": [{"index": 0, "id": "call_abc123", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]});
            send(chunk(&model, call, None)).await;
            for part in ["{\"city\":", "\"Paris\"}"] {
                let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]});
                send(chunk(&model, delta, None)).await;
            }
            send(chunk(&model, json!({}), Some("tool_calls"))).await;
        } else if let Some(text) = scripted {
            for word in text.split_inclusive(' ') {
                send(chunk(&model, json!({"content": word}), None)).await;
            }
            send(chunk(&model, json!({}), Some("stop"))).await;
        } else {
            for word in ["Hello", " from", " the", " mock"] {
                send(chunk(&model, json!({"content": word}), None)).await;
            }
            send(chunk(&model, json!({}), Some("stop"))).await;
        }
        if include_usage {
            let usage = json!({"id": "chatcmpl-mock1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}});
            send(format!("data: {usage}\n\n")).await;
        }
        send("data: [DONE]\n\n".to_string()).await;
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .expect("response")
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// Streams a recorded SSE transcript in small pieces (chunk boundaries fall mid-event);
/// `cut` stops halfway, as a dropped connection would.
fn transcript(bytes: Vec<u8>, cut: bool) -> Response {
    let end = if cut { bytes.len() / 2 } else { bytes.len() };
    let pieces: Vec<Result<Bytes, std::convert::Infallible>> = bytes[..end]
        .chunks(37)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(pieces)))
        .expect("response")
}

/// Anthropic Messages API mock: the shadow tests' scripted answers for their models, otherwise the
/// recorded fixtures.
async fn anthropic(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &uri, &headers, &body);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("");
    let tools = request.get("tools").is_some();
    if model == "claude-fail" {
        let err = fixture("anthropic/error.json");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json")],
            err,
        )
            .into_response();
    }
    let stream = request["stream"].as_bool().unwrap_or(false);
    if let Some(text) = scripted_answer(model, &request, &body) {
        return anthropic_scripted(model, &text, stream);
    }
    if stream {
        let name = match (model, tools) {
            ("claude-overloaded", _) => "anthropic/stream_error.sse",
            (_, true) => "anthropic/stream_tool_use.sse",
            _ => "anthropic/stream_text.sse",
        };
        return transcript(fixture(name), model == "claude-cut");
    }
    let name = if tools {
        "anthropic/tool_use.json"
    } else {
        "anthropic/message.json"
    };
    ([("content-type", "application/json")], fixture(name)).into_response()
}

/// A scripted answer in the Messages API's shape, whole or as its SSE event sequence.
fn anthropic_scripted(model: &str, text: &str, stream: bool) -> Response {
    let usage = json!({"input_tokens": 900, "output_tokens": 16});
    if !stream {
        let message = json!({"id": "msg_mock1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": null, "usage": usage});
        return axum::Json(message).into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock1",
            "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 900, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for word in text.split_inclusive(' ') {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta",
            "index": 0, "delta": {"type": "text_delta", "text": word}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 16}})));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(events.concat()))
        .expect("response")
}

/// Gemini API mock: `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
async fn gemini(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, &uri, &headers, &body);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let tools = request.get("tools").is_some();
    if uri.path().contains("gemini-fail") {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json")],
            fixture("gemini/error.json"),
        )
            .into_response();
    }
    if uri.path().ends_with(":streamGenerateContent") {
        let name = if tools {
            "gemini/stream_function_call.sse"
        } else {
            "gemini/stream.sse"
        };
        return transcript(fixture(name), uri.path().contains("gemini-cut"));
    }
    let name = if tools {
        "gemini/function_call.json"
    } else {
        "gemini/response.json"
    };
    ([("content-type", "application/json")], fixture(name)).into_response()
}
