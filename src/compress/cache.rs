//! Compression result cache: moka, weighed by bytes, keyed by a 128-bit hash of
//! (compressor, parameters, tokenizer, query when the compressor reads it, text). Concurrent
//! misses on the same key run the compressor once (moka's `try_get_with` coalesces them). With a
//! shared tier (`shared`), a miss asks Redis before computing, and what is computed is published.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use moka::future::Cache;
use xxhash_rust::xxh3::Xxh3;

use super::shared::{Claim, SharedTier};
use super::CompressError;

#[derive(Clone)]
pub struct CompressionCache {
    entries: Cache<u128, Arc<str>>,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    /// Misses the compressor ran for (the others came from the shared tier).
    computed: Arc<AtomicU64>,
    shared: Option<Arc<SharedTier>>,
}

/// Builds the cache key; every field is length-prefixed so no two inputs collide by concatenation.
pub fn cache_key(parts: &[&[u8]]) -> u128 {
    let mut hasher = Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.digest128()
}

impl CompressionCache {
    pub fn new(max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &u128, value: &Arc<str>| {
                u32::try_from(value.len() + 64).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            entries,
            hits: Arc::default(),
            misses: Arc::default(),
            computed: Arc::default(),
            shared: None,
        }
    }

    /// Puts the shared tier behind the local cache.
    pub fn with_shared(mut self, shared: Arc<SharedTier>) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn shared(&self) -> Option<&SharedTier> {
        self.shared.as_deref()
    }

    /// Returns the cached value, or runs `init` once for all concurrent callers of this key.
    pub async fn get_or_compute<F>(&self, key: u128, init: F) -> Result<Arc<str>, CompressError>
    where
        F: Future<Output = Result<String, CompressError>>,
    {
        let misses = &self.misses;
        let ran = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .entries
            .try_get_with(key, async {
                ran.store(true, Ordering::Relaxed);
                misses.fetch_add(1, Ordering::Relaxed);
                if let Some(shared) = &self.shared {
                    if let Some(text) = shared.get(key).await {
                        return Ok(Arc::from(text));
                    }
                    match shared.claim(key).await {
                        Claim::Found(text) => return Ok(Arc::from(text)),
                        Claim::Wait => {
                            if let Some(text) = shared.wait_for(key).await {
                                return Ok(Arc::from(text));
                            }
                        }
                        Claim::Compute => {}
                    }
                }
                self.computed.fetch_add(1, Ordering::Relaxed);
                let text: Arc<str> = init.await.map(Arc::from)?;
                if let Some(shared) = self.shared.clone() {
                    let published = text.clone();
                    tokio::spawn(async move { shared.publish(key, &published).await });
                }
                Ok::<Arc<str>, CompressError>(text)
            })
            .await;
        if !ran.load(Ordering::Relaxed) {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(|e| match e.as_ref() {
            CompressError::Timeout(ms) => CompressError::Timeout(*ms),
            CompressError::Failed { compressor, reason } => CompressError::Failed {
                compressor,
                reason: reason.clone(),
            },
        })
    }

    /// The cached value, without computing it (background mode's lookup).
    pub async fn peek(&self, key: u128) -> Option<Arc<str>> {
        let found = self.entries.get(&key).await;
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return found;
        }
        let text: Arc<str> = Arc::from(self.shared.as_ref()?.get(key).await?);
        self.entries.insert(key, text.clone()).await;
        Some(text)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Compressions this process computed.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_misses_compute_once() {
        let cache = CompressionCache::new(1 << 20);
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_compute(cache_key(&[b"k"]), async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok("value".to_string())
                    })
                    .await
            }));
        }
        for t in tasks {
            let value = t.await.expect("join").expect("value");
            assert_eq!(&*value, "value");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(cache.misses(), 1);
        assert_eq!(cache.hits(), 7);
    }

    #[test]
    fn keys_do_not_collide_by_concatenation() {
        assert_ne!(cache_key(&[b"ab", b"c"]), cache_key(&[b"a", b"bc"]));
    }
}
