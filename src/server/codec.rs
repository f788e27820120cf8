//! The front doors' wire codecs: how a request that came through `/v1/chat/completions` or
//! `/v1/messages` is encoded for an upstream (the client's own leg and shadow legs alike), and how
//! the answer the client received is read back for a shadow comparison. The request lifecycle
//! around them is one (`front_door`).

use bytes::Bytes;
use serde_json::Value;

use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

use super::upstream::{Target, Upstream};
use crate::config::UpstreamKind;
use crate::equivalence::Answer;
use crate::error::ProxyError;
use crate::openai::ChatRequest;
use crate::providers::anthropic::API_VERSION;
use crate::providers::Provider;

/// Which front door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    /// `/v1/chat/completions`: translated per upstream, answers in OpenAI's shape.
    ChatCompletions,
    /// `/v1/messages`: sent to the Anthropic upstream as it came, answers in Anthropic's shape.
    AnthropicMessages,
}

/// A request encoded for one upstream.
pub struct Encoded {
    /// Below the API's base path (`/chat/completions`), which each deployment sets.
    pub path: String,
    pub body: Bytes,
    /// Headers the provider's API requires (`anthropic-version`, ...).
    pub headers: Vec<(&'static str, String)>,
    /// Set when the answer comes back in a provider's native shape: the model to translate it
    /// to OpenAI's shape with.
    pub native_model: Option<String>,
}

impl FrontDoor {
    /// Refuses a route whose upstream cannot serve this door.
    pub fn accepts(self, route: &str, upstream: &Upstream) -> Result<(), ProxyError> {
        if self == Self::AnthropicMessages && upstream.settings.kind != UpstreamKind::Anthropic {
            return Err(ProxyError::InvalidRequest(format!(
                "route `{route}` leads to upstream `{}`, which does not speak the Anthropic \
                 Messages API",
                upstream.name()
            )));
        }
        Ok(())
    }

    /// Encodes `request` for `upstream`. `unchanged` is the client's body when `request` is
    /// exactly what it sent: a request that needs no translation is then forwarded byte for byte.
    pub fn encode(
        self,
        upstream: &Upstream,
        request: &ChatRequest,
        client_path: &str,
        unchanged: Option<Bytes>,
    ) -> Result<Encoded, ProxyError> {
        let as_sent = |headers| Encoded {
            path: Upstream::relative_path(client_path).to_string(),
            body: unchanged
                .clone()
                .unwrap_or_else(|| Bytes::from(request.to_bytes())),
            headers,
            native_model: None,
        };
        match self {
            Self::AnthropicMessages => Ok(Encoded {
                native_model: Some(request.model.clone()),
                ..as_sent(vec![("anthropic-version", API_VERSION.to_string())])
            }),
            Self::ChatCompletions => Ok(match upstream.provider.encode_chat(request)? {
                None => as_sent(Vec::new()),
                Some(native) => Encoded {
                    path: native.path,
                    body: Bytes::from(native.body),
                    headers: native.headers,
                    native_model: Some(request.model.clone()),
                },
            }),
        }
    }

    /// The answer the client received, in the equivalence gates' terms; `None` when it cannot be
    /// read (an error, a truncated stream).
    pub fn client_answer(
        self,
        provider: &dyn Provider,
        model: &str,
        stream: bool,
        body: &[u8],
    ) -> Option<Answer> {
        match (self, stream) {
            (Self::ChatCompletions, false) => Answer::from_completion(body),
            (Self::ChatCompletions, true) => Answer::from_stream(body),
            (Self::AnthropicMessages, false) => {
                Answer::from_completion(&provider.decode_chat(body, model).ok()?)
            }
            (Self::AnthropicMessages, true) => {
                let mut transcoder = provider.stream_transcoder(model, true);
                let mut chunks = transcoder.feed(body);
                chunks.extend(transcoder.finish());
                Answer::from_stream(&chunks)
            }
        }
    }
}

/// Sends an encoded non-streaming request no client waits on (a shadow leg, a judge call) to
/// `target` with `client`'s headers, and reads the whole answer as a chat completion; `who`
/// names the caller in errors.
pub async fn ask_whole(
    target: &Target<'_>,
    connector: &Connector,
    client: &RequestHeader,
    encoded: Encoded,
    who: &str,
) -> Result<Answer, String> {
    let mut header = target
        .request_header(
            client,
            &encoded.path,
            encoded.body.len(),
            false,
            &encoded.headers,
        )
        .map_err(|e| e.to_string())?;
    // The client may have asked for a stream; this request is read whole.
    let _ = header.insert_header("accept", "application/json");
    let (status, answer) = target
        .fetch(
            connector,
            header,
            encoded.body,
            encoded.native_model.as_deref(),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !(200..300).contains(&status) {
        return Err(format!("{who} answered {status}"));
    }
    Answer::from_completion(&answer)
        .ok_or_else(|| format!("{who}'s answer is not a chat completion"))
}

/// The request as a non-streaming leg (shadow legs are read whole).
pub fn leg_request(request: &ChatRequest) -> ChatRequest {
    let mut leg = request.clone();
    leg.body.insert("stream".into(), Value::Bool(false));
    leg.body.remove("stream_options");
    leg.stream = false;
    leg
}
