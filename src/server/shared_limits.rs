//! Client keys' rate-limit buckets shared by replicas through Redis (`[shared_cache]
//! rate_limits`). Admission never waits on Redis: each replica decides from its local bucket,
//! and a background thread reconciles every bucket with its shared copy every
//! `rate_limit_sync_ms` — it hands over what this replica took since the last round and adopts
//! the shared level, which includes what every other replica took. A key limited to N a
//! minute is so held to about N across all replicas; the overshoot is bounded by what the
//! replicas together admit within one sync period.
//!
//! The shared bucket refills by Redis's own clock (`TIME` inside the script), so replicas'
//! clocks need not agree. Redis being down or slow costs nothing on the request path: the
//! round is abandoned, what was taken in it is not handed over (an outage must not arrive as
//! one large debt), each replica enforces its own bucket, and the thread tries again after
//! `cool_down_ms`. The thread ends when the configuration that owns the buckets is replaced.

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use super::limits::Bucket;
use crate::compress::shared::SharedCacheSettings;

/// One local bucket and its key in Redis.
pub(super) struct SharedBucket {
    pub key: String,
    pub bucket: Weak<Mutex<Bucket>>,
}

/// Refills the shared bucket by Redis's clock, takes what the replica hands over, and answers
/// the level. Buckets idle for two minutes are full again and expire.
const RECONCILE: &str = r"
local capacity = tonumber(ARGV[1])
local consumed = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1]) or capacity
local last = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - last) * capacity / 60000) - consumed
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
return tostring(tokens)
";

/// Starts the reconciling thread for these buckets.
pub(super) fn spawn(settings: &SharedCacheSettings, buckets: Vec<SharedBucket>) {
    let client = match redis::Client::open(settings.url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "shared rate limits: not a Redis URL; limits stay local");
            return;
        }
    };
    let every = Duration::from_millis(settings.rate_limit_sync_ms);
    let timeout = Duration::from_millis(settings.timeout_ms.max(1));
    let cool_down = Duration::from_millis(settings.cool_down_ms);
    let spawned = std::thread::Builder::new()
        .name("rate-limit-sync".into())
        .spawn(move || run(&client, &buckets, every, timeout, cool_down));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "shared rate limits: cannot start; limits stay local");
    }
}

fn run(
    client: &redis::Client,
    buckets: &[SharedBucket],
    every: Duration,
    timeout: Duration,
    cool_down: Duration,
) {
    let script = redis::Script::new(RECONCILE);
    let mut connection: Option<redis::Connection> = None;
    let mut down_until: Option<Instant> = None;
    loop {
        std::thread::sleep(every);
        if buckets.iter().all(|b| b.bucket.strong_count() == 0) {
            return;
        }
        if down_until.is_some_and(|until| Instant::now() < until) {
            // Local-only meanwhile: what is taken now is not handed over later.
            for shared in buckets {
                if let Some(bucket) = shared.bucket.upgrade() {
                    lock(&bucket).take_unsynced();
                }
            }
            continue;
        }
        if let Err(reason) = round(client, &script, &mut connection, buckets, timeout) {
            connection = None;
            down_until = Some(Instant::now() + cool_down);
            tracing::warn!(
                reason,
                cool_down_ms = cool_down.as_millis() as u64,
                "shared rate limits unavailable; each replica enforces its own buckets"
            );
        }
    }
}

/// Reconciles every live bucket once.
fn round(
    client: &redis::Client,
    script: &redis::Script,
    connection: &mut Option<redis::Connection>,
    buckets: &[SharedBucket],
    timeout: Duration,
) -> Result<(), String> {
    if connection.is_none() {
        let conn = client
            .get_connection_with_timeout(timeout)
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(timeout))
            .and_then(|()| conn.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        *connection = Some(conn);
    }
    let Some(conn) = connection.as_mut() else {
        return Err("no connection".into());
    };
    for shared in buckets {
        let Some(bucket) = shared.bucket.upgrade() else {
            continue;
        };
        let (consumed, capacity) = {
            let mut bucket = lock(&bucket);
            (bucket.take_unsynced(), bucket.capacity)
        };
        let level: String = script
            .key(&shared.key)
            .arg(capacity)
            .arg(consumed)
            .invoke(conn)
            .map_err(|e| e.to_string())?;
        let level: f64 = level
            .parse()
            .map_err(|_| format!("unexpected bucket level `{level}`"))?;
        lock(&bucket).reconcile(level);
    }
    Ok(())
}

fn lock(bucket: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    bucket.lock().unwrap_or_else(|e| e.into_inner())
}
