//! What a route's `[routes.compression]` table and a `[compressors.NAME]` section tell the
//! compressors: message roles, pipeline mode, the compressor's name, and a model-backed
//! compressor's model settings. Plain data, parsed and validated by `config`, which re-exports
//! these types; they live here so compression depends on nothing above it.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::registry::{self, CompressorSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMode {
    #[default]
    Inline,
    Background,
}

/// A registered compressor, by name (`compress::registry` lists them). Only names in the
/// registry can be constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompressorKind(&'static str);

impl CompressorKind {
    /// The default compressor of a route.
    pub const EXTRACTIVE: Self = Self("extractive");

    /// The registered compressor called `name` (as written in config or in
    /// `x-condenser-compress`; case and surrounding spaces ignored).
    pub fn named(name: &str) -> Option<Self> {
        registry::spec(name).map(|spec| Self(spec.name))
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// Its registry entry.
    pub fn spec(self) -> Option<&'static CompressorSpec> {
        registry::spec(self.0)
    }
}

impl std::fmt::Display for CompressorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl<'de> Deserialize<'de> for CompressorKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::named(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown compressor `{name}`; registered: {}",
                registry::names().join(", ")
            ))
        })
    }
}

/// The pipeline's view of a route's compression settings.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings<'a> {
    /// Message roles whose text may be compressed.
    pub roles: &'a [Role],
    /// Messages with fewer tokens than this are never touched.
    pub min_tokens: usize,
    /// Compressed / original tokens the compressor aims for.
    pub target_ratio: f64,
    /// Longest a compressor may take before the original request is forwarded.
    pub timeout_ms: u64,
    pub mode: CompressionMode,
    /// Who may share this request's cache entries: the client key's name, or empty for every
    /// client (`server.compression_cache_scope`).
    pub scope: &'a str,
}

/// `[compressors.NAME]`: the model behind a model-backed compressor, in-process or on an
/// inference server.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// The GGUF file of a local model (empty for a remote one).
    pub model: PathBuf,
    /// `backend = "remote"`: the inference server serving the model; `None` runs it in-process.
    pub remote: Option<RemoteSettings>,
    pub threads: i32,
    pub context: u32,
    pub workers: usize,
    pub queue: usize,
    pub timeout_ms: u64,
    pub gpu_layers: u32,
    pub lora: Option<(PathBuf, f32)>,
    /// `rewrite`: the compressor used when the model's output is unusable.
    pub fallback: Option<CompressorKind>,
    /// `select`: weight of `extractive`'s ranking in the blend.
    pub blend: Option<f64>,
}

/// `backend = "remote"` in `[compressors.NAME]`: an OpenAI-compatible inference server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// The API root, e.g. `http://gpu-host:8090/v1`.
    pub base_url: String,
    /// The model id the server serves.
    pub model: String,
    /// Environment variable holding the server's key, if it wants one.
    pub api_key_env: Option<String>,
}
