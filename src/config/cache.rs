//! `[shared_cache]`: validated into the compression pipeline's shared-tier settings. The Redis
//! URL is either in the file without credentials (`url`) or in a variable (`url_env`), so a
//! password never sits in the file.

use super::raw::RawSharedCache;
use super::ConfigError;
use crate::compress::shared::SharedCacheSettings;

pub(super) fn validate_shared_cache(
    raw: &RawSharedCache,
) -> Result<SharedCacheSettings, ConfigError> {
    let url = match (&raw.url, &raw.url_env) {
        (Some(url), None) => {
            if super::url_userinfo(url).is_some() {
                return Err(ConfigError::invalid(
                    "shared_cache.url",
                    "carries credentials: put the URL in a variable named by url_env",
                ));
            }
            url.clone()
        }
        (None, Some(var)) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "shared_cache.url_env",
                    format!("the variable {var} is not set"),
                )
            })?,
        _ => {
            return Err(ConfigError::invalid(
                "shared_cache.url",
                "give exactly one of url or url_env",
            ))
        }
    };
    if url.starts_with("rediss://") {
        // The redis crate is built without TLS here: accepting the URL would connect in clear.
        return Err(ConfigError::invalid(
            "shared_cache.url",
            "rediss:// (TLS) is not supported by this build; use redis:// over a private \
             network or a TLS tunnel (SECURITY.md)",
        ));
    }
    if !url.starts_with("redis://") {
        return Err(ConfigError::invalid(
            "shared_cache.url",
            "must be a redis:// URL",
        ));
    }
    for (key, value) in [
        ("ttl_seconds", raw.ttl_seconds),
        ("timeout_ms", raw.timeout_ms),
        ("lock_ms", raw.lock_ms),
        ("rate_limit_sync_ms", raw.rate_limit_sync_ms),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(
                format!("shared_cache.{key}"),
                "must be > 0",
            ));
        }
    }
    let key_secret = match &raw.key_secret_env {
        None => None,
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| super::digest(&v))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "shared_cache.key_secret_env",
                        format!("the variable {var} is not set"),
                    )
                })?,
        ),
    };
    Ok(SharedCacheSettings {
        key_secret,
        url,
        ttl_seconds: raw.ttl_seconds,
        timeout_ms: raw.timeout_ms,
        cool_down_ms: raw.cool_down_ms,
        lock_ms: raw.lock_ms,
        prefix: raw.prefix.clone(),
        rate_limits: raw.rate_limits,
        rate_limit_sync_ms: raw.rate_limit_sync_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_stay_out_of_the_file() {
        let raw = |url: &str| RawSharedCache {
            url: Some(url.into()),
            ..RawSharedCache::default()
        };
        assert!(validate_shared_cache(&raw("redis://127.0.0.1:6379/0")).is_ok());
        let secret = validate_shared_cache(&raw("redis://:hunter2@cache:6379"))
            .expect_err("credentials")
            .to_string();
        assert!(
            secret.contains("url_env") && !secret.contains("hunter2"),
            "{secret}"
        );
        assert!(validate_shared_cache(&raw("http://cache:6379")).is_err());
        assert!(validate_shared_cache(&raw("rediss://cache:6379")).is_err());
        let unset = RawSharedCache {
            key_secret_env: Some("CONDENSER_TEST_UNSET_CACHE_SECRET".into()),
            ..raw("redis://cache:6379")
        };
        let err = validate_shared_cache(&unset)
            .expect_err("unset")
            .to_string();
        assert!(err.starts_with("shared_cache.key_secret_env"), "{err}");
        assert!(validate_shared_cache(&RawSharedCache::default()).is_err());
    }
}
