//! The shared cache tier: compressions published to Redis (or Valkey) so that replicas behind a
//! load balancer compute each one once. It sits behind the in-process cache (`cache`): a local
//! miss asks Redis before running the compressor, and a replica that computed a compression
//! publishes it (with a TTL). Concurrent misses across replicas are computed once where
//! practical: the first takes a short lock key (`SET NX PX`), the others wait for its result up
//! to the lock's lifetime and compute it themselves if it does not come.
//!
//! Redis is an optimisation, never a dependency: every call is bounded by `timeout_ms`, and the
//! first error or timeout switches the tier off for `cool_down_ms` (a circuit breaker), so an
//! outage costs at most one timeout per cool-down — counted in `SharedStats` and the metrics.
//!
//! Values are the compressed text only. Its token count is recomputed by the replica that uses
//! it (an o200k count of a compressed text takes microseconds, and the count cache keeps it),
//! so a value never carries a tokenizer's result that another build might count differently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde::Serialize;

/// `[shared_cache]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCacheSettings {
    /// `redis://host:port/db` (credentials only through `url_env`).
    pub url: String,
    pub ttl_seconds: u64,
    pub timeout_ms: u64,
    pub cool_down_ms: u64,
    /// How long a replica computing a compression holds its lock, and others wait for it.
    pub lock_ms: u64,
    /// Prefix of every key condenser writes.
    pub prefix: String,
    /// Whether client keys' rate limits are shared through this Redis (`server::shared_limits`).
    pub rate_limits: bool,
    /// How often a replica reconciles its rate-limit buckets with Redis.
    pub rate_limit_sync_ms: u64,
    /// SHA-256 of `key_secret_env`'s value: the secret every compression-cache key is keyed
    /// with, so a reader of Redis cannot test whether a given text was compressed.
    pub key_secret: Option<[u8; 32]>,
}

/// What the tier did, for `/healthz` and the metrics.
#[derive(Debug, Default, Serialize)]
pub struct SharedStats {
    /// Local misses answered from Redis (directly or after waiting for another replica).
    pub hits: AtomicU64,
    /// Local misses Redis did not have.
    pub misses: AtomicU64,
    /// Compressions published for other replicas.
    pub published: AtomicU64,
    /// Calls that failed or timed out (each opens the breaker).
    pub errors: AtomicU64,
    /// Calls skipped while the breaker was open.
    pub skipped: AtomicU64,
}

/// Who computes a compression no replica has published.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// This replica (it holds the lock, or Redis is unavailable).
    Compute,
    /// Another replica holds the lock: wait for its result.
    Wait,
    /// It was published meanwhile.
    Found(String),
}

pub struct SharedTier {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    down_until: Mutex<Option<Instant>>,
    settings: SharedCacheSettings,
    pub stats: SharedStats,
}

impl SharedTier {
    /// Parses the URL; connects on first use (a Redis that is down at start-up does not stop
    /// condenser from starting).
    pub fn new(settings: SharedCacheSettings) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("not a Redis URL: {e}"))?;
        Ok(Self {
            client,
            connection: tokio::sync::Mutex::new(None),
            down_until: Mutex::new(None),
            settings,
            stats: SharedStats::default(),
        })
    }

    fn key(&self, key: u128) -> String {
        format!("{}c:{key:032x}", self.settings.prefix)
    }

    fn lock_key(&self, key: u128) -> String {
        format!("{}lock:{key:032x}", self.settings.prefix)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }

    fn is_down(&self) -> bool {
        let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down.is_some_and(|until| Instant::now() < until)
    }

    /// Opens the breaker after a failed call.
    fn fail(&self, what: &str, reason: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        *down = Some(Instant::now() + Duration::from_millis(self.settings.cool_down_ms));
        tracing::warn!(
            call = what,
            reason,
            cool_down_ms = self.settings.cool_down_ms,
            "shared cache unavailable; local cache only"
        );
    }

    /// The connection, unless the breaker is open (then `None`, counted as skipped).
    async fn connection(&self) -> Option<MultiplexedConnection> {
        if self.is_down() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Some(conn.clone());
        }
        match tokio::time::timeout(
            self.timeout(),
            self.client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(conn)) => {
                *slot = Some(conn.clone());
                Some(conn)
            }
            Ok(Err(e)) => {
                self.fail("connect", &e.to_string());
                None
            }
            Err(_) => {
                self.fail("connect", "timed out");
                None
            }
        }
    }

    /// Runs one command within the timeout; an error or timeout opens the breaker and drops
    /// the connection (the next call after the cool-down reconnects).
    async fn call<T, F, Fut>(&self, what: &str, command: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        let reason = match tokio::time::timeout(self.timeout(), command(conn)).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        *self.connection.lock().await = None;
        self.fail(what, &reason);
        None
    }

    /// The compression another replica published, if any.
    pub async fn get(&self, key: u128) -> Option<String> {
        let redis_key = self.key(key);
        let found: Option<String> = self
            .call("get", |mut c| async move { c.get(redis_key).await })
            .await
            .flatten();
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Claims the computation of `key` for this replica. The lock and a second look at the
    /// value go in one round trip: a replica that published between this one's miss and its
    /// claim has also released the lock, and its result is taken instead of computed again.
    pub async fn claim(&self, key: u128) -> Claim {
        let (lock, redis_key) = (self.lock_key(key), self.key(key));
        let ms = self.settings.lock_ms;
        let answer: Option<(Option<String>, Option<String>)> = self
            .call("lock", |mut c| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(lock)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .get(redis_key)
                    .query_async(&mut c)
                    .await
            })
            .await;
        match answer {
            Some((_, Some(text))) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Claim::Found(text)
            }
            Some((None, None)) => Claim::Wait,
            // Locked by this replica, or Redis is unavailable: compute here.
            Some((Some(_), None)) | None => Claim::Compute,
        }
    }

    /// Waits (polling) up to the lock's lifetime for another replica's result; the pipeline's
    /// compression deadline bounds the wait from outside.
    pub async fn wait_for(&self, key: u128) -> Option<String> {
        let deadline = Instant::now() + Duration::from_millis(self.settings.lock_ms);
        let redis_key = self.key(key);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let key = redis_key.clone();
            let found: Option<String> = self
                .call("get", |mut c| async move { c.get(key).await })
                .await?;
            if let Some(text) = found {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Some(text);
            }
        }
        None
    }

    /// Publishes a compression for the other replicas and releases its lock.
    pub async fn publish(&self, key: u128, text: &str) {
        let (redis_key, lock) = (self.key(key), self.lock_key(key));
        let ttl = self.settings.ttl_seconds;
        let text = text.to_string();
        let done: Option<()> = self
            .call("publish", |mut c| async move {
                redis::pipe()
                    .set_ex(redis_key, text, ttl)
                    .ignore()
                    .del(lock)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await;
        if done.is_some() {
            self.stats.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}
