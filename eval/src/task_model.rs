//! The model that answers benchmark questions: a local GGUF run by llama.cpp
//! (`local:PATH.gguf`), or any OpenAI-compatible `/v1/chat/completions` endpoint
//! (`http://HOST:PORT/v1#MODEL`, or `https://`) — typically a condenser proxy, which reaches
//! OpenAI, Anthropic and Gemini through the upstreams its config names. Requests to a proxy carry
//! `x-condenser-compress: off`, so the context is exactly what the eval chose to send.
//!
//! HTTPS uses rustls and the platform's certificate store; `CONDENSER_EVAL_CA_FILE` names
//! a PEM bundle of extra roots (a private CA in front of an internal endpoint).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use condenser::llm::{ChatTurn, LocalModel, LocalModelConfig, ModelBackend};
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
            let ca_file = std::env::var_os("CONDENSER_EVAL_CA_FILE").map(PathBuf::from);
            return Self::remote(spec, ca_file.as_deref());
        }
        bail!("task model must be local:PATH.gguf or URL#MODEL, got `{spec}`")
    }

    /// `URL#MODEL`, trusting the roots in `ca_file` besides the platform's.
    fn remote(spec: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let Some((base, model)) = spec.split_once('#') else {
            bail!("a remote task model is written URL#MODEL, e.g. http://127.0.0.1:8080/v1#gpt-4o-mini");
        };
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM bundle", path.display()))?;
            builder = builder.tls_certs_merge(roots);
        }
        Ok(Self::Remote {
            client: builder.build()?,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            model: model.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::TaskModel;

    /// An HTTPS endpoint with a certificate made here, answering every request with one chat
    /// completion; returns its port and the certificate (PEM). Each request's head is sent back
    /// on `heads`.
    fn https_endpoint(heads: std::sync::mpsc::Sender<String>) -> (u16, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let pem = certified.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                while let Ok((tcp, _)) = listener.accept().await {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        continue; // a client that refused the certificate
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !String::from_utf8_lossy(&request).contains("\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = heads.send(String::from_utf8_lossy(&request).to_lowercase());
                    let body = r#"{"choices":[{"message":{"role":"assistant","content":"Paris"}}],"usage":{"prompt_tokens":12,"completion_tokens":1}}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        });
        (port, pem)
    }

    #[test]
    fn https_task_models_are_reached_with_verified_certificates() {
        let (heads, seen) = std::sync::mpsc::channel();
        let (port, pem) = https_endpoint(heads);
        let mut ca = tempfile::NamedTempFile::new().expect("temp");
        ca.write_all(pem.as_bytes()).expect("write");
        let spec = format!("https://localhost:{port}/v1#gpt-4o-mini");

        let trusted = TaskModel::remote(&spec, Some(ca.path())).expect("client");
        let answer = trusted
            .answer("Be brief.", "Capital of France?", 8)
            .expect("answer");
        assert_eq!((answer.text.as_str(), answer.prompt_tokens), ("Paris", 12));
        let head = seen.recv().expect("request head");
        assert!(head.starts_with("post /v1/chat/completions"), "{head}");
        assert!(head.contains("x-condenser-compress: off"), "{head}");

        // Verification is on: the same endpoint without its CA is refused.
        let untrusted = TaskModel::remote(&spec, None).expect("client");
        let refused = untrusted.answer("Be brief.", "Capital of France?", 8);
        assert!(refused.is_err(), "an unknown certificate must be refused");
    }
}
