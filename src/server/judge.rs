//! The judge gate's model client in the proxy: the route that serves `shadow.judge_model`,
//! called through the same upstream code (provider translation, pooled connections) as client
//! requests, on the shadow runtime's pool.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use serde_json::{json, Map};

use super::codec::{ask_whole, FrontDoor};
use super::upstream::Upstream;
use crate::equivalence::{Answer, JudgeClient};
use crate::openai::ChatRequest;

/// The judge gate's model: the route that serves `model`, called with the upstream's configured
/// key (a judge has no client whose key it could borrow).
pub struct RouteJudge {
    upstream: Upstream,
    connector: Arc<Connector>,
    model: String,
}

impl RouteJudge {
    pub fn new(upstream: Upstream, connector: Arc<Connector>, model: String) -> Self {
        Self {
            upstream,
            connector,
            model,
        }
    }
}

#[async_trait]
impl JudgeClient for RouteJudge {
    async fn ask(&self, system: &str, user: &str) -> Result<Answer, String> {
        // Built as a value, not serialised and parsed back.
        let mut body = Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("temperature".into(), json!(0));
        body.insert(
            "messages".into(),
            json!([
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ]),
        );
        let request = ChatRequest {
            model: self.model.clone(),
            stream: false,
            body,
        };
        let encoded = FrontDoor::ChatCompletions
            .encode(&self.upstream, &request, "/v1/chat/completions", None)
            .map_err(|e| e.to_string())?;
        let mut client = RequestHeader::build("POST", encoded.path.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        client
            .insert_header("content-type", "application/json")
            .map_err(|e| e.to_string())?;
        let target = self.upstream.target(&[]);
        ask_whole(&target, &self.connector, &client, encoded, "judge").await
    }
}
