//! The model that answers benchmark questions: a local GGUF run by llama.cpp
//! (`local:PATH.gguf`), or any OpenAI-compatible `/v1/chat/completions` endpoint
//! (`http://HOST:PORT/v1#MODEL`) — typically a condenser proxy, which reaches OpenAI, Anthropic
//! and Gemini through the upstreams its config names. Requests to a proxy carry
//! `x-condenser-compress: none`, so the context is exactly what the eval chose to send.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use condenser::llm::{ChatTurn, LocalModel, LocalModelConfig};
use condenser::openai::headers;
use serde_json::{json, Value};

/// USD per million tokens, input and output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

impl Price {
    pub fn cost(&self, prompt_tokens: usize, completion_tokens: usize) -> f64 {
        (prompt_tokens as f64 * self.input + completion_tokens as f64 * self.output) / 1e6
    }
}

pub struct Answer {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

pub enum TaskModel {
    Local {
        model: LocalModel,
        name: String,
    },
    Remote {
        client: reqwest::blocking::Client,
        url: String,
        model: String,
    },
}

/// A single answer may take this long (a long Qasper paper on 2 CPU cores takes minutes).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(900);

impl TaskModel {
    /// `local:PATH.gguf` or `http://HOST:PORT/v1#MODEL`.
    pub fn open(spec: &str, threads: i32, context: u32, workers: usize) -> anyhow::Result<Self> {
        if let Some(path) = spec.strip_prefix("local:") {
            let path = PathBuf::from(path);
            let model = LocalModel::load(&LocalModelConfig {
                workers,
                queue: workers * 2,
                // `downstream` orders its answers so consecutive prompts share prefixes.
                reuse_prompt_prefix: true,
                ..LocalModelConfig::cpu(&path, threads, context)
            })
            .with_context(|| format!("loading task model {}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(Self::Local { model, name });
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let Some((base, model)) = spec.split_once('#') else {
                bail!("a remote task model is written URL#MODEL, e.g. http://127.0.0.1:8080/v1#gpt-4o-mini");
            };
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()?;
            return Ok(Self::Remote {
                client,
                url: format!("{}/chat/completions", base.trim_end_matches('/')),
                model: model.to_string(),
            });
        }
        bail!("task model must be local:PATH.gguf or URL#MODEL, got `{spec}`")
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Local { name, .. } => name,
            Self::Remote { model, .. } => model,
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local { .. })
    }

    pub fn answer(&self, system: &str, user: &str, max_tokens: usize) -> anyhow::Result<Answer> {
        match self {
            Self::Local { model, .. } => {
                let turns = [ChatTurn::new("system", system), ChatTurn::new("user", user)];
                let g = model.generate(&turns, max_tokens, ANSWER_TIMEOUT)?;
                Ok(Answer {
                    text: g.text,
                    prompt_tokens: g.prompt_tokens,
                    completion_tokens: g.completion_tokens,
                })
            }
            Self::Remote { client, url, model } => {
                let body = json!({
                    "model": model,
                    "temperature": 0,
                    "max_tokens": max_tokens,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                });
                let mut request = client
                    .post(url)
                    .header(headers::COMPRESS, headers::COMPRESS_OFF)
                    .json(&body);
                if let Ok(key) = std::env::var("OPENAI_API_KEY") {
                    request = request.bearer_auth(key);
                }
                let response = request.send()?;
                let status = response.status();
                let value: Value = response.json()?;
                if !status.is_success() {
                    bail!(
                        "task model answered {status}: {}",
                        value["error"]["message"]
                    );
                }
                let usage = |k: &str| value["usage"][k].as_u64().unwrap_or(0) as usize;
                Ok(Answer {
                    text: value["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                    prompt_tokens: usage("prompt_tokens"),
                    completion_tokens: usage("completion_tokens"),
                })
            }
        }
    }
}
