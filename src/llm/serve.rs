//! `condenser serve-model`: a local GGUF model (with its LoRA adapter) served over the two
//! OpenAI-compatible calls the remote compressor backend makes, for a GPU host that replicas
//! share. llama.cpp's own `llama-server` cannot score prompts (its completions return
//! log-probabilities of generated tokens only), which `prune` needs; this server can.
//!
//! - `POST /v1/completions` with `echo: true` and `max_tokens: 0`: the prompt's tokens with their
//!   character offsets and `ln p(token | before)` (`logprobs.tokens`, `text_offset`,
//!   `token_logprobs`, the first `null` when nothing precedes it), as vLLM returns them.
//!   Generating completions is not offered (400): compressors do not need it.
//! - `POST /v1/chat/completions`: greedy decoding with the model's chat template, not streamed
//!   (`temperature` and sampling fields are accepted and ignored: compressor outputs must be
//!   deterministic).
//! - `GET /v1/models`, `GET /health`.
//!
//! Errors are OpenAI-shaped: 400 for a request it cannot serve, 401 without the key (when one is
//! set), 429 when the model's queue is full, 504 past the deadline, 500 for a model failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ChatTurn, LlmError, LocalModel, ModelBackend, PromptToken};

/// What the server serves.
pub struct ModelServer {
    pub model: Arc<LocalModel>,
    /// The id clients name in `model` (any id is accepted; this one is reported).
    pub name: String,
    /// Longest one call may take, queueing included.
    pub timeout: Duration,
    /// SHA-256 of the key clients must send as a bearer token; `None`: no key asked.
    pub key_digest: Option<[u8; 32]>,
}

impl ModelServer {
    /// The digest [`ModelServer::key_digest`] holds for `key`.
    pub fn digest(key: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(key.as_bytes()).into()
    }
}

/// Largest request body: a long document and its question.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Serves until the process is stopped.
pub async fn serve(server: ModelServer, listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, model = %server.name, "serving the model");
    axum::serve(listener, router(Arc::new(server))).await
}

pub fn router(server: Arc<ModelServer>) -> Router {
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            require_key,
        ));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(server)
}

/// With `--api-key-env`, the API answers only requests bearing the key (digests compared, so
/// the comparison's time says nothing about the key).
async fn require_key(
    State(server): State<Arc<ModelServer>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(expected) = &server.key_digest {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(ModelServer::digest);
        if given.as_ref() != Some(expected) {
            return error(StatusCode::UNAUTHORIZED, "a valid API key is required");
        }
    }
    next.run(request).await
}

async fn models(State(server): State<Arc<ModelServer>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": server.name, "object": "model", "owned_by": "condenser"}],
    }))
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Value,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    logprobs: Option<u64>,
}

async fn completions(
    State(server): State<Arc<ModelServer>>,
    body: Result<Json<CompletionRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let Some(prompt) = request.prompt.as_str().map(str::to_string) else {
        return error(StatusCode::BAD_REQUEST, "`prompt` must be one string");
    };
    if !request.echo || request.max_tokens != Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "this server scores prompts only: send echo: true and max_tokens: 0 (use \
             /v1/chat/completions to generate)",
        );
    }
    if request.logprobs.unwrap_or(0) > 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "top log-probabilities are not offered: send logprobs: 0",
        );
    }
    let model = server.model.clone();
    let timeout = server.timeout;
    let text = prompt.clone();
    let scored = tokio::task::spawn_blocking(move || model.log_probs("", &text, timeout)).await;
    let tokens = match scored {
        Ok(Ok(tokens)) => tokens,
        Ok(Err(e)) => return model_error(&e),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "scoring task failed"),
    };
    let (pieces, offsets, logprobs) = logprobs_fields(&prompt, &tokens);
    let n = tokens.len();
    Json(json!({
        "id": format!("cmpl-{:016x}", fastrand::u64(..)),
        "object": "text_completion",
        "created": unix_now(),
        "model": server.name,
        "choices": [{
            "index": 0,
            "text": prompt,
            "logprobs": {
                "tokens": pieces,
                "text_offset": offsets,
                "token_logprobs": logprobs,
                "top_logprobs": Value::Null,
            },
            "finish_reason": "length",
        }],
        "usage": {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n},
    }))
    .into_response()
}

/// The OpenAI `logprobs` arrays of a scored prompt: token strings, character offsets (a token
/// that starts inside a multi-byte character is placed at that character), ln p.
fn logprobs_fields(prompt: &str, tokens: &[PromptToken]) -> (Vec<String>, Vec<usize>, Vec<Value>) {
    let mut pieces = Vec::with_capacity(tokens.len());
    let mut offsets = Vec::with_capacity(tokens.len());
    let mut logprobs = Vec::with_capacity(tokens.len());
    let mut byte = 0usize;
    for token in tokens {
        let mut start = byte.min(prompt.len());
        while !prompt.is_char_boundary(start) {
            start -= 1;
        }
        offsets.push(prompt[..start].chars().count());
        pieces.push(String::from_utf8_lossy(&token.bytes).into_owned());
        logprobs.push(token.logprob.map_or(Value::Null, |lp| json!(lp)));
        byte += token.bytes.len();
    }
    (pieces, offsets, logprobs)
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Value,
}

/// Default completion budget when the request names none.
const DEFAULT_MAX_TOKENS: usize = 512;

async fn chat_completions(
    State(server): State<Arc<ModelServer>>,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    if request.stream {
        return error(StatusCode::BAD_REQUEST, "streaming is not offered");
    }
    let mut turns = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let Some(content) = text_content(&message.content) else {
            return error(
                StatusCode::BAD_REQUEST,
                "message content must be a string or text parts",
            );
        };
        turns.push(ChatTurn::new(&message.role, content));
    }
    if turns.is_empty() {
        return error(StatusCode::BAD_REQUEST, "`messages` is empty");
    }
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS)
        .max(1);
    let model = server.model.clone();
    let timeout = server.timeout;
    let generated =
        tokio::task::spawn_blocking(move || model.generate(&turns, max_tokens, timeout)).await;
    let generation = match generated {
        Ok(Ok(generation)) => generation,
        Ok(Err(e)) => return model_error(&e),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "generation task failed"),
    };
    Json(json!({
        "id": format!("chatcmpl-{:016x}", fastrand::u64(..)),
        "object": "chat.completion",
        "created": unix_now(),
        "model": server.name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": generation.text},
            "finish_reason": if generation.finished { "stop" } else { "length" },
        }],
        "usage": {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        },
    }))
    .into_response()
}

/// A message's text: a string, or the text parts of a content array joined.
fn text_content(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| (p["type"] == "text").then(|| p["text"].as_str()).flatten())
            .collect::<Option<Vec<_>>>()
            .map(|texts| texts.concat()),
        _ => None,
    }
}

fn model_error(e: &LlmError) -> Response {
    let status = match e {
        LlmError::QueueFull => StatusCode::TOO_MANY_REQUESTS,
        LlmError::Deadline => StatusCode::GATEWAY_TIMEOUT,
        LlmError::TooLong { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

fn error(status: StatusCode, message: &str) -> Response {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": Value::Null, "code": Value::Null}})),
    )
        .into_response()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_count_characters_and_pieces_concatenate_to_the_prompt() {
        let prompt = "añb c";
        let tokens = [
            PromptToken {
                bytes: b"a".to_vec(),
                logprob: None,
            },
            // "ñ" split over two tokens, as byte-level vocabularies do.
            PromptToken {
                bytes: vec![0xc3],
                logprob: Some(-1.0),
            },
            PromptToken {
                bytes: vec![0xb1, b'b'],
                logprob: Some(-2.0),
            },
            PromptToken {
                bytes: b" c".to_vec(),
                logprob: Some(-0.5),
            },
        ];
        let (_, offsets, logprobs) = logprobs_fields(prompt, &tokens);
        assert_eq!(offsets, [0, 1, 1, 3]);
        assert_eq!(logprobs[0], Value::Null);
        assert_eq!(logprobs[3], json!(-0.5));
    }

    #[test]
    fn content_parts_are_joined_and_other_parts_refused() {
        assert_eq!(
            text_content(&json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])),
            Some("ab".into())
        );
        assert_eq!(text_content(&json!([{"type": "image_url"}])), None);
        assert_eq!(text_content(&json!(3)), None);
    }
}
