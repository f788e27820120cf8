//! Gate 1, embedding similarity: all-MiniLM-L6-v2 run by candle on the CPU, mean-pooled over the
//! answer's real tokens (the tokenizer file pads to 128; padding is turned off so no pad token
//! enters the mean) and L2-normalised; the score is the cosine of the two answers. Long answers
//! are cut at 256 word pieces, the length the model was trained on.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::sync::Arc;
use tokenizers::{Tokenizer, TruncationParams};

use async_trait::async_trait;

use super::gates::{Case, Gate, GateFinding};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("cannot load the embedding model from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
}

const MAX_PIECES: usize = 256;

impl Embedder {
    /// `dir` holds `config.json`, `tokenizer.json` and `model.safetensors`
    /// (`scripts/fetch-embedder`).
    pub fn load(dir: &Path) -> Result<Self, EmbeddingError> {
        let fail = |reason: String| EmbeddingError::Load {
            path: dir.display().to_string(),
            reason,
        };
        let config: Config = std::fs::read(dir.join("config.json"))
            .map_err(|e| fail(e.to_string()))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| fail(e.to_string())))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| fail(e.to_string()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_PIECES,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(e.to_string()))?;
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is memory-mapped read-only and not modified while the model lives.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)
                .map_err(|e| fail(e.to_string()))?
        };
        let model = BertModel::load(vb, &config).map_err(|e| fail(e.to_string()))?;
        Ok(Self { model, tokenizer })
    }

    /// Unit-length sentence embedding.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbeddingError> {
        let run = |e: String| EmbeddingError::Run(e);
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| run(e.to_string()))?;
        let ids = encoding.get_ids();
        let device = &self.model.device;
        let input = Tensor::new(ids, device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(|e| run(e.to_string()))?;
        let pooled = (|| {
            let types = input.zeros_like()?;
            let hidden = self.model.forward(&input, &types, None)?;
            let mean = hidden.mean(1)?.squeeze(0)?;
            let norm = mean.sqr()?.sum_all()?.sqrt()?;
            mean.broadcast_div(&norm)?.to_vec1::<f32>()
        })()
        .map_err(|e| run(e.to_string()))?;
        Ok(pooled)
    }

    /// Cosine similarity of two texts' embeddings.
    pub fn similarity(&self, a: &str, b: &str) -> Result<f32, EmbeddingError> {
        let (x, y) = (self.embed(a)?, self.embed(b)?);
        Ok(x.iter().zip(&y).map(|(p, q)| p * q).sum())
    }
}

/// The embedding-similarity gate (`embedding`), when `shadow.embedding_model` is configured. A
/// forward pass is milliseconds of CPU, so it runs on the blocking pool; a failed pass is logged
/// and the gate sits the sample out.
pub struct EmbeddingGate(pub Arc<Embedder>);

#[async_trait]
impl Gate for EmbeddingGate {
    fn name(&self) -> &'static str {
        "embedding"
    }

    async fn check(&self, case: &Case<'_>) -> GateFinding {
        let embedder = self.0.clone();
        let a = case.reference.text.trim().to_string();
        let b = case.candidate.text.trim().to_string();
        let similarity = tokio::task::spawn_blocking(move || embedder.similarity(&a, &b)).await;
        let score = match similarity {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "embedding gate failed");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "embedding gate panicked");
                None
            }
        };
        GateFinding {
            score,
            ..GateFinding::default()
        }
    }
}
