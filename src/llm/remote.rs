//! The remote backend: a compressor's model served by an OpenAI-compatible inference server.
//!
//! - Token self-information (`prune`) comes from the legacy completions endpoint with
//!   `echo: true`, `logprobs: 0`, `max_tokens: 0`: the server returns the prompt's tokens with
//!   their character offsets and `ln p(token | before)`, the first one `null` (vLLM and
//!   `condenser serve-model` implement it; llama.cpp's `llama-server` returns log-probabilities
//!   of generated tokens only, and llama-cpp-python's server shifts prompt log-probabilities by
//!   one position, so neither can score prompts — README "Remote compressors").
//! - Chat generation (`rewrite`) is a chat completion at temperature 0, which every
//!   OpenAI-compatible server offers.
//!
//! Calls are blocking (compressors run on the blocking pool), share one pooled agent, are bounded
//! by the caller's deadline, and at most `max_in_flight` run at once; beyond that a call is
//! refused at once, as the local model's full queue is. Every failure is an error the pipeline
//! fails open on. The key is sent as a bearer token and never appears in an error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::{ChatTurn, Generation, LlmError, ModelBackend, TokenSurprisal};

/// Where the model is served, and how hard to lean on it.
#[derive(Debug, Clone)]
pub struct RemoteModelConfig {
    /// The API root, e.g. `http://gpu-host:8090/v1` (requests go to `{base_url}/completions`
    /// and `{base_url}/chat/completions`).
    pub base_url: String,
    /// The model id the server serves.
    pub model: String,
    pub api_key: Option<String>,
    /// Calls in flight at once; more are refused.
    pub max_in_flight: usize,
    /// The server's context in tokens: longer texts are scored in pieces that fit.
    pub context: u32,
}

pub struct RemoteModel {
    config: RemoteModelConfig,
    agent: ureq::Agent,
    in_flight: AtomicUsize,
}

/// Bytes of text per window sent for scoring, per token of context: English runs ~4 bytes a
/// token on small-model vocabularies; 3 leaves room for denser text.
const BYTES_PER_CONTEXT_TOKEN: usize = 3;
/// Context kept free for the prefix (the question) in each window.
const PREFIX_RESERVE_TOKENS: usize = 256;
/// Longest excerpt of a server's error body carried in an error.
const ERROR_EXCERPT: usize = 300;

impl RemoteModel {
    pub fn new(config: RemoteModelConfig) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(config.max_in_flight.max(1))
            .build()
            .into();
        Self {
            config,
            agent,
            in_flight: AtomicUsize::new(0),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// One JSON POST within `timeout`; the parsed answer of a 2xx, or the error it was.
    fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, LlmError> {
        let slot = InFlight::take(&self.in_flight, self.config.max_in_flight)?;
        let mut request = self
            .agent
            .post(self.url(path))
            .config()
            .timeout_global(Some(timeout))
            .build();
        if let Some(key) = &self.config.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let mut response = request.send_json(body).map_err(transport_error)?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(transport_error)?;
        drop(slot);
        if !status.is_success() {
            let excerpt: String = text.chars().take(ERROR_EXCERPT).collect();
            return Err(LlmError::Remote(format!(
                "{path} answered {}: {excerpt}",
                status.as_u16()
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| LlmError::Remote(format!("{path} answered invalid JSON: {e}")))
    }

    /// The prompt log-probabilities of `prefix + text`, as the text's tokens.
    fn score_window(
        &self,
        prefix: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Vec<TokenSurprisal>, LlmError> {
        let prompt = format!("{prefix}{text}");
        let body = json!({
            "model": self.config.model,
            "prompt": prompt,
            "echo": true,
            "logprobs": 0,
            "max_tokens": 0,
            "temperature": 0,
        });
        let answer = self.post("completions", &body, timeout)?;
        let logprobs = &answer["choices"][0]["logprobs"];
        let offsets = numbers(&logprobs["text_offset"], "text_offset")?;
        let values = logprobs["token_logprobs"]
            .as_array()
            .ok_or_else(|| malformed("token_logprobs"))?;
        if offsets.len() != values.len() {
            return Err(malformed("text_offset and token_logprobs differ in length"));
        }
        text_tokens(&prompt, prefix.len(), &offsets, values)
    }
}

impl ModelBackend for RemoteModel {
    fn surprisal(
        &self,
        prefix: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Vec<TokenSurprisal>, LlmError> {
        let window_bytes = (self.config.context as usize)
            .saturating_sub(PREFIX_RESERVE_TOKENS)
            .max(64)
            * BYTES_PER_CONTEXT_TOKEN;
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        for piece in windows(text, window_bytes) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(LlmError::Deadline);
            }
            out.extend(self.score_window(prefix, piece, left)?);
        }
        Ok(out)
    }

    fn generate(
        &self,
        turns: &[ChatTurn],
        max_tokens: usize,
        timeout: Duration,
    ) -> Result<Generation, LlmError> {
        let messages: Vec<Value> = turns
            .iter()
            .map(|t| json!({"role": t.role, "content": t.content}))
            .collect();
        let body = json!({
            "model": self.config.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": false,
        });
        let answer = self.post("chat/completions", &body, timeout)?;
        let choice = &answer["choices"][0];
        let text = choice["message"]["content"]
            .as_str()
            .ok_or_else(|| malformed("choices[0].message.content"))?
            .to_string();
        let usage = |field: &str| answer["usage"][field].as_u64().unwrap_or(0) as usize;
        Ok(Generation {
            text,
            prompt_tokens: usage("prompt_tokens"),
            reused_prompt_tokens: 0,
            completion_tokens: usage("completion_tokens"),
            finished: choice["finish_reason"].as_str() == Some("stop"),
        })
    }
}

/// Counts a call in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn take(counter: &'a AtomicUsize, limit: usize) -> Result<Self, LlmError> {
        let taken = counter.fetch_add(1, Ordering::AcqRel);
        if taken >= limit.max(1) {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(LlmError::QueueFull);
        }
        Ok(Self(counter))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn transport_error(error: ureq::Error) -> LlmError {
    match error {
        ureq::Error::Timeout(_) => LlmError::Deadline,
        other => LlmError::Remote(other.to_string()),
    }
}

fn malformed(what: &str) -> LlmError {
    LlmError::Remote(format!("malformed completion: {what}"))
}

fn numbers(value: &Value, what: &str) -> Result<Vec<usize>, LlmError> {
    value
        .as_array()
        .ok_or_else(|| malformed(what))?
        .iter()
        .map(|v| {
            v.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| malformed(what))
        })
        .collect()
}

/// The text's tokens from a scored prompt: token `i` spans characters `offsets[i]` up to the
/// next token's offset (the last one to the end); spans are cut to the text (after
/// `prefix_bytes`), tokens wholly in the prefix dropped.
fn text_tokens(
    prompt: &str,
    prefix_bytes: usize,
    offsets: &[usize],
    values: &[Value],
) -> Result<Vec<TokenSurprisal>, LlmError> {
    // Byte position of every character offset, the end included.
    let mut char_bytes: Vec<usize> = prompt.char_indices().map(|(b, _)| b).collect();
    char_bytes.push(prompt.len());
    let byte_at = |chars: usize| {
        char_bytes
            .get(chars)
            .copied()
            .ok_or_else(|| malformed("text_offset beyond the prompt"))
    };
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let start = byte_at(offsets[i])?;
        let end = match offsets.get(i + 1) {
            Some(&next) => byte_at(next)?,
            None => prompt.len(),
        };
        if end < start {
            return Err(malformed("text_offset goes backwards"));
        }
        if end <= prefix_bytes {
            continue;
        }
        let logprob = match value {
            Value::Null => None,
            v => Some(v.as_f64().ok_or_else(|| malformed("token_logprobs"))?),
        };
        out.push(TokenSurprisal::new(
            prompt.as_bytes()[start.max(prefix_bytes)..end].to_vec(),
            logprob,
        ));
    }
    Ok(out)
}

/// `text` in pieces of at most `max_bytes`, each ending at whitespace where there is any (a
/// word is never split unless it alone is longer).
fn windows(text: &str, max_bytes: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max_bytes {
        let mut cut = max_bytes;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let at_space = rest[..cut]
            .rfind(char::is_whitespace)
            .map(|i| i + rest[i..].chars().next().map_or(1, char::len_utf8));
        let cut = at_space.filter(|&i| i > 0).unwrap_or(cut.max(1));
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_character_offsets_and_drop_the_prefix() {
        // "Q: é\n" + "ab cd": tokens "Q", ":", " é", "\n", "ab", " cd".
        let prompt = "Q: é\nab cd";
        let prefix = "Q: é\n".len();
        let offsets = [0, 1, 2, 4, 5, 7];
        let values = [
            Value::Null,
            json!(-1.0),
            json!(-2.0),
            json!(-0.5),
            json!(-std::f64::consts::LN_2),
            json!(-2.0 * std::f64::consts::LN_2),
        ];
        let tokens = text_tokens(prompt, prefix, &offsets, &values).expect("parsed");
        let pieces: Vec<&[u8]> = tokens.iter().map(|t| t.bytes.as_slice()).collect();
        assert_eq!(pieces, [b"ab".as_slice(), b" cd".as_slice()]);
        assert!((tokens[0].bits - 1.0).abs() < 1e-6);
        assert!((tokens[1].bits - 2.0).abs() < 1e-6);
    }

    #[test]
    fn a_token_straddling_the_prefix_keeps_the_text_part() {
        let prompt = "Context: The end";
        let prefix = "Context:".len();
        let tokens = text_tokens(
            prompt,
            prefix,
            &[0, 7, 8, 12],
            &[Value::Null, json!(-1.0), json!(-1.0), json!(-1.0)],
        )
        .expect("parsed");
        let text: Vec<u8> = tokens.iter().flat_map(|t| t.bytes.clone()).collect();
        assert_eq!(text, b" The end");
    }

    #[test]
    fn offsets_past_the_prompt_or_backwards_are_refused() {
        assert!(text_tokens("ab", 0, &[0, 5], &[Value::Null, json!(-1.0)]).is_err());
        assert!(text_tokens(
            "abc",
            0,
            &[0, 2, 1],
            &[Value::Null, json!(-1.0), json!(-1.0)]
        )
        .is_err());
    }

    #[test]
    fn windows_end_at_whitespace_and_cover_the_text() {
        let text = "alpha beta gamma delta epsilon";
        let pieces = windows(text, 12);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| p.len() <= 12));
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.ends_with(' ')));
        assert_eq!(windows("short", 12), ["short"]);
        assert_eq!(windows("", 12), [""]);
        let long_word = "x".repeat(30);
        assert_eq!(windows(&long_word, 12).concat(), long_word);
    }

    #[test]
    fn calls_beyond_the_limit_are_refused_and_slots_come_back() {
        let counter = AtomicUsize::new(0);
        let first = InFlight::take(&counter, 1).expect("free");
        assert!(matches!(
            InFlight::take(&counter, 1),
            Err(LlmError::QueueFull)
        ));
        drop(first);
        assert!(InFlight::take(&counter, 1).is_ok());
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }
}
