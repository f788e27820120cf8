//! `[compressors.NAME]`: a model-backed compressor's section, validated against its registry
//! entry (the extra keys it takes, whether its model may be served remotely) and its backend:
//! a local GGUF file, or an OpenAI-compatible inference server (`backend = "remote"`).

use super::raw::RawLocalModel;
use super::ConfigError;
use crate::compress::registry::CompressorSpec;
use crate::compress::{ModelSettings, RemoteSettings};

pub(super) fn validate_local_model(
    raw: &RawLocalModel,
    spec: &CompressorSpec,
) -> Result<ModelSettings, ConfigError> {
    let name = spec.name;
    let key = |field: &str| format!("compressors.{name}.{field}");
    let takes = |field: &str| spec.extra_keys.contains(&field);
    if let Some(fallback) = raw.fallback {
        if !takes("fallback") {
            return Err(ConfigError::invalid(
                key("fallback"),
                format!("`{name}` takes no fallback"),
            ));
        }
        if fallback.spec().is_none_or(CompressorSpec::needs_model) {
            return Err(ConfigError::invalid(
                key("fallback"),
                "a fallback must be a compressor that needs no model (identity, truncate, \
                 extractive)",
            ));
        }
    }
    if let Some(blend) = raw.blend {
        if !takes("blend") {
            return Err(ConfigError::invalid(
                key("blend"),
                format!("`{name}` takes no blend"),
            ));
        }
        if !(0.0..=1.0).contains(&blend) {
            return Err(ConfigError::invalid(key("blend"), "a weight from 0 to 1"));
        }
    }
    if !(raw.lora_scale.is_finite() && raw.lora_scale >= 0.0) {
        return Err(ConfigError::invalid(key("lora_scale"), "must be >= 0"));
    }
    let remote = validate_model_backend(raw, name)?;
    if remote.is_some() && !spec.remote {
        return Err(ConfigError::invalid(
            key("backend"),
            format!("`{name}` runs in-process only (backend = \"local\")"),
        ));
    }
    if remote.is_none() && !cfg!(feature = "local-model") {
        return Err(ConfigError::invalid(
            format!("compressors.{name}"),
            "this build has no local-model support (build with `--features local-model`, or \
             serve the model remotely: backend = \"remote\")",
        ));
    }
    if raw.threads < 1 {
        return Err(ConfigError::invalid(key("threads"), "must be >= 1"));
    }
    if raw.context < 256 {
        return Err(ConfigError::invalid(
            key("context"),
            "must be >= 256 tokens",
        ));
    }
    if raw.workers == 0 || raw.queue == 0 || raw.timeout_ms == 0 {
        return Err(ConfigError::invalid(
            key("workers"),
            "workers, queue and timeout_ms must be > 0",
        ));
    }
    Ok(ModelSettings {
        model: if remote.is_some() {
            std::path::PathBuf::new()
        } else {
            raw.model.clone().into()
        },
        remote,
        threads: raw.threads,
        context: raw.context,
        workers: raw.workers,
        queue: raw.queue,
        timeout_ms: raw.timeout_ms,
        gpu_layers: raw.gpu_layers,
        lora: raw.lora.clone().map(|p| (p.into(), raw.lora_scale)),
        fallback: raw.fallback,
        blend: raw.blend,
    })
}

/// `backend`, and for `remote` its server: an http(s) API root, no adapter file (the server
/// loads it), no key in the URL.
fn validate_model_backend(
    raw: &RawLocalModel,
    name: &str,
) -> Result<Option<RemoteSettings>, ConfigError> {
    let key = |field: &str| format!("compressors.{name}.{field}");
    match raw.backend.as_deref().unwrap_or("local") {
        "local" => {
            if raw.base_url.is_some() || raw.api_key_env.is_some() {
                return Err(ConfigError::invalid(
                    key("base_url"),
                    "base_url and api_key_env belong to backend = \"remote\"",
                ));
            }
            Ok(None)
        }
        "remote" => {
            let base_url = raw.base_url.clone().ok_or_else(|| {
                ConfigError::invalid(key("base_url"), "a remote backend needs the server's URL")
            })?;
            let parsed = http::Uri::try_from(base_url.as_str()).ok();
            let scheme_ok = parsed
                .as_ref()
                .and_then(|u| u.scheme_str())
                .is_some_and(|s| s == "http" || s == "https");
            if !scheme_ok || parsed.as_ref().and_then(|u| u.host()).is_none() {
                return Err(ConfigError::invalid(
                    key("base_url"),
                    "an http:// or https:// URL, e.g. http://gpu-host:8090/v1",
                ));
            }
            if super::url_userinfo(&base_url).is_some() {
                return Err(ConfigError::invalid(
                    key("base_url"),
                    "credentials do not belong in the URL: use api_key_env",
                ));
            }
            if raw.lora.is_some() {
                return Err(ConfigError::invalid(
                    key("lora"),
                    "a remote model's adapter is loaded by its server (llama-server --lora, \
                     condenser serve-model --lora), or serve the merged GGUF",
                ));
            }
            if raw.model.trim().is_empty() {
                return Err(ConfigError::invalid(
                    key("model"),
                    "the model id the server serves",
                ));
            }
            Ok(Some(RemoteSettings {
                base_url,
                model: raw.model.clone(),
                api_key_env: raw.api_key_env.clone(),
            }))
        }
        other => Err(ConfigError::invalid(
            key("backend"),
            format!("`local` or `remote`, got `{other}`"),
        )),
    }
}
