//! The compressors condenser knows, by name. Adding one is one file implementing
//! [`Compressor`](super::Compressor) and one line in [`COMPRESSORS`]: its name, the
//! `[compressors.NAME]` keys it reads beyond the common model settings, and its builder. Config
//! validation, `x-condenser-compress`, `condenser check`, the proxy and `condenser-eval` all read
//! this list; none of them names a compressor.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::settings::{CompressorKind, ModelSettings};
use super::{Compressor, Extractive, Identity, Truncate};
use crate::llm::{ModelBackend, RemoteModel, RemoteModelConfig};

/// One registered compressor.
pub struct CompressorSpec {
    /// Its name in config, in `x-condenser-compress` and in the `x-condenser-compressor` header.
    pub name: &'static str,
    /// `[compressors.NAME]` keys it reads beyond the common model settings (`model`, `lora`,
    /// `threads`, ...).
    pub extra_keys: &'static [&'static str],
    /// Whether its model may be served remotely (`backend = "remote"`).
    pub remote: bool,
    pub build: Builder,
}

/// How a compressor is built.
pub enum Builder {
    /// Needs nothing.
    Plain(fn() -> Arc<dyn Compressor>),
    /// Runs a model (in-process or on an inference server), built from its `[compressors.NAME]`
    /// section and the opened model.
    Model(fn(&ModelParts<'_>) -> Result<Arc<dyn Compressor>, String>),
    /// Runs a local model, and this build has no `local-model` support.
    #[cfg(not(feature = "local-model"))]
    NeedsLocalModel,
}

/// A compressor's opened model.
#[derive(Clone)]
pub enum ModelHandle {
    #[cfg(feature = "local-model")]
    Local(Arc<crate::llm::LocalModel>),
    Remote(Arc<RemoteModel>),
}

impl ModelHandle {
    /// The model as the backend-independent compressors use it.
    pub fn backend(&self) -> Arc<dyn ModelBackend> {
        match self {
            #[cfg(feature = "local-model")]
            Self::Local(model) => model.clone(),
            Self::Remote(model) => model.clone(),
        }
    }
}

/// What a model-backed compressor is built from.
pub struct ModelParts<'a> {
    pub model: ModelHandle,
    pub settings: &'a ModelSettings,
}

impl ModelParts<'_> {
    /// Longest one call may wait for the model (`timeout_ms`).
    pub fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.settings.timeout_ms)
    }
}

#[cfg(feature = "local-model")]
macro_rules! local_model_only {
    ($build:path) => {
        Builder::Model($build)
    };
}

#[cfg(not(feature = "local-model"))]
macro_rules! local_model_only {
    ($build:path) => {
        Builder::NeedsLocalModel
    };
}

/// Every compressor, in the order `condenser check` lists them.
#[rustfmt::skip]
pub static COMPRESSORS: &[CompressorSpec] = &[
    CompressorSpec { name: "identity", extra_keys: &[], remote: false, build: Builder::Plain(|| Arc::new(Identity)) },
    CompressorSpec { name: "truncate", extra_keys: &[], remote: false, build: Builder::Plain(|| Arc::new(Truncate)) },
    CompressorSpec { name: "extractive", extra_keys: &[], remote: false, build: Builder::Plain(|| Arc::new(Extractive::default())) },
    CompressorSpec { name: "prune", extra_keys: &[], remote: true, build: Builder::Model(super::prune::build) },
    CompressorSpec { name: "rewrite", extra_keys: &["fallback"], remote: true, build: Builder::Model(super::rewrite::build) },
    CompressorSpec { name: "select", extra_keys: &["blend"], remote: false, build: local_model_only!(super::select::build) },
];

impl CompressorSpec {
    /// Whether it runs a model (and so needs a `[compressors.NAME]` section).
    pub fn needs_model(&self) -> bool {
        !matches!(self.build, Builder::Plain(_))
    }
}

/// The entry called `name` (case and surrounding spaces ignored).
pub fn spec(name: &str) -> Option<&'static CompressorSpec> {
    let name = name.trim();
    COMPRESSORS
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Every registered name.
pub fn names() -> Vec<&'static str> {
    COMPRESSORS.iter().map(|s| s.name).collect()
}

/// A compressor that needs no model; `None` for model-backed ones.
pub fn build_plain(kind: CompressorKind) -> Option<Arc<dyn Compressor>> {
    match kind.spec()?.build {
        Builder::Plain(build) => Some(build()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Every compressor this configuration can run: the plain ones, and each model-backed one whose
/// `[compressors.NAME]` section is present (its model loaded once, its adapter checked first).
pub fn build_all(
    sections: &BTreeMap<String, ModelSettings>,
) -> Result<HashMap<CompressorKind, Arc<dyn Compressor>>, String> {
    let mut built = HashMap::new();
    for spec in COMPRESSORS {
        let Some(kind) = CompressorKind::named(spec.name) else {
            continue;
        };
        match &spec.build {
            Builder::Plain(build) => {
                built.insert(kind, build());
            }
            Builder::Model(build) => {
                let Some(settings) = sections.get(spec.name) else {
                    continue;
                };
                let model = open_model(spec.name, settings)?;
                let compressor = build(&ModelParts { model, settings })
                    .map_err(|e| format!("compressors.{}: {e}", spec.name))?;
                built.insert(kind, compressor);
            }
            #[cfg(not(feature = "local-model"))]
            Builder::NeedsLocalModel => {
                if sections.contains_key(spec.name) {
                    return Err(format!(
                        "compressors.{}: this build has no local-model support",
                        spec.name
                    ));
                }
            }
        }
    }
    Ok(built)
}

/// The model of `[compressors.NAME]`: a client of its inference server, or the local model
/// loaded.
pub fn open_model(name: &str, settings: &ModelSettings) -> Result<ModelHandle, String> {
    if let Some(remote) = &settings.remote {
        let api_key = match &remote.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("compressors.{name}.api_key_env: environment variable {var} is not set")
            })?),
            None => None,
        };
        tracing::info!(compressor = name, server = %remote.base_url, model = %remote.model, "remote model");
        return Ok(ModelHandle::Remote(Arc::new(RemoteModel::new(
            RemoteModelConfig {
                base_url: remote.base_url.clone(),
                model: remote.model.clone(),
                api_key,
                max_in_flight: settings.workers + settings.queue,
                context: settings.context,
            },
        ))));
    }
    #[cfg(feature = "local-model")]
    {
        load_model(name, settings).map(ModelHandle::Local)
    }
    #[cfg(not(feature = "local-model"))]
    Err(format!(
        "compressors.{name}: this build has no local-model support"
    ))
}

/// Loads the model of `[compressors.NAME]`, checking its LoRA adapter against it first (a
/// mismatched adapter is refused naming the file, not by llama.cpp's abort).
#[cfg(feature = "local-model")]
pub fn load_model(
    name: &str,
    settings: &ModelSettings,
) -> Result<Arc<crate::llm::LocalModel>, String> {
    use crate::llm::{LocalModel, LocalModelConfig};
    if let Some((adapter, _)) = &settings.lora {
        crate::lora::check_lora(&settings.model, adapter)
            .map_err(|e| format!("compressors.{name}.lora: {e}"))?;
    }
    let model = LocalModel::load(&LocalModelConfig {
        path: settings.model.clone(),
        lora: settings.lora.clone(),
        threads: settings.threads,
        context: settings.context,
        workers: settings.workers,
        queue: settings.queue,
        gpu_layers: settings.gpu_layers,
        // Compressor outputs are cached by input; they must not depend on the request served
        // before.
        reuse_prompt_prefix: false,
    })
    .map_err(|e| format!("compressors.{name}: {e}"))?;
    tracing::info!(compressor = name, model = %settings.model.display(), workers = settings.workers, "local model loaded");
    Ok(Arc::new(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively_and_only_when_registered() {
        assert_eq!(
            CompressorKind::named(" Extractive ").map(CompressorKind::name),
            Some("extractive")
        );
        assert!(CompressorKind::named("zip").is_none());
        assert!(spec("select").is_some_and(CompressorSpec::needs_model));
        assert!(spec("truncate").is_some_and(|s| !s.needs_model()));
        assert_eq!(
            CompressorKind::EXTRACTIVE.spec().map(|s| s.name),
            Some("extractive")
        );
    }

    #[test]
    fn every_plain_compressor_builds_under_its_own_name() {
        for spec in COMPRESSORS.iter().filter(|s| !s.needs_model()) {
            let kind = CompressorKind::named(spec.name).expect("registered");
            let built = build_plain(kind).expect("plain");
            assert_eq!(built.name(), spec.name);
        }
    }
}
