//! Concurrency and rate limits: requests in flight across all clients (`server.max_in_flight`,
//! 503 beyond), and per client key (`[[auth.keys]] max_in_flight`, 503; `requests_per_minute`,
//! a token bucket that allows bursts up to the per-minute limit, 429; `input_tokens_per_minute`,
//! a token bucket of input tokens, 429). Rejections carry `Retry-After`; rate-limited keys'
//! answers carry the `x-ratelimit-*-requests` / `-tokens` headers OpenAI's clients read. A
//! request's places are held until it ends (the access-log context owns them). Counts start
//! afresh when the configuration is reloaded.
//!
//! Input tokens are what is sent upstream, after compression — what the provider bills. They
//! are known only once the request is read and compressed (and, uncompressed, counted off the
//! I/O thread), so admission asks that the key's bucket be positive and **reserves an estimate**
//! (declared body bytes / 4): requests admitted at the same time see each other's reservations,
//! instead of all passing on one full bucket. When the request ends, however it ends (answered,
//! failed, cut by the client, passed through), the reservation is **settled** to the tokens
//! sent upstream when they were counted, or else kept as charged. One large request may still
//! overdraw the bucket; the key then waits until it has refilled.
//!
//! With `[shared_cache]` (and its `rate_limits`, on by default) the rate buckets are shared by
//! every replica through Redis (`shared_limits`): admission stays a local decision on the hot
//! path, and each replica reconciles its buckets with the shared ones in the background.
//! Concurrency limits stay per replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::shared_limits::SharedBucket;
use crate::config::{ClientKey, Config};
use crate::error::{ProxyError, RateUnit};

/// A token bucket refilled continuously at `capacity` per minute.
pub(super) struct Bucket {
    pub(super) capacity: f64,
    tokens: f64,
    last: Instant,
    /// Taken since the bucket was last reconciled with its shared copy.
    unsynced: f64,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        Self {
            capacity: f64::from(per_minute),
            tokens: f64::from(per_minute),
            last: Instant::now(),
            unsynced: 0.0,
        }
    }

    /// What this replica took since the last reconciliation, now handed to the shared bucket.
    pub(super) fn take_unsynced(&mut self) -> f64 {
        std::mem::take(&mut self.unsynced)
    }

    /// Adopts the shared bucket's level (which includes what was handed over), less what was
    /// taken here while the shared bucket was being asked.
    pub(super) fn reconcile(&mut self, shared_tokens: f64) {
        self.tokens = (shared_tokens - self.unsynced).min(self.capacity);
        self.last = Instant::now();
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let per_second = self.capacity / 60.0;
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * per_second)
            .min(self.capacity);
        self.last = now;
    }

    fn state(&self, unit: RateUnit) -> RateState {
        RateState {
            unit,
            limit: self.capacity as u32,
            remaining: self.tokens.max(0.0).floor() as u32,
            reset_s: ((self.capacity - self.tokens) / (self.capacity / 60.0)).ceil() as u64,
        }
    }

    /// Takes `cost` tokens if at least `need` are there; `Err(seconds until they are)`.
    fn admit(&mut self, unit: RateUnit, need: f64, cost: f64) -> Result<RateState, u64> {
        self.refill();
        if self.tokens >= need {
            self.tokens -= cost;
            self.unsynced += cost;
            Ok(self.state(unit))
        } else {
            Err(((need - self.tokens) / (self.capacity / 60.0))
                .ceil()
                .max(1.0) as u64)
        }
    }

    /// One request: takes one token; `Err(seconds until one is available)` when empty.
    fn take(&mut self) -> Result<RateState, u64> {
        self.admit(RateUnit::Requests, 1.0, 1.0)
    }

    /// Takes `n` tokens, going into debt if it must.
    fn charge(&mut self, n: f64) {
        self.refill();
        self.tokens -= n;
        self.unsynced += n;
    }
}

/// A key's rate-limit state after its request was admitted.
#[derive(Debug, Clone, Copy)]
pub struct RateState {
    pub unit: RateUnit,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
}

impl RateState {
    /// The `x-ratelimit-*-requests` (or `-tokens`) response headers.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        let [limit, remaining, reset] = self.unit.header_names();
        [
            (limit, self.limit.to_string()),
            (remaining, self.remaining.to_string()),
            (reset, format!("{}s", self.reset_s)),
        ]
    }
}

struct KeyLimits {
    in_flight: Option<Arc<Semaphore>>,
    requests: Option<Arc<Mutex<Bucket>>>,
    input_tokens: Option<Arc<Mutex<Bucket>>>,
}

/// The limits of one configuration.
pub struct Limits {
    total: Option<Arc<Semaphore>>,
    keys: HashMap<String, KeyLimits>,
}

/// An admitted request's places, released when it is dropped.
pub struct Admission {
    _places: Vec<OwnedSemaphorePermit>,
    /// The request-rate and input-token states after admission.
    pub rates: Vec<RateState>,
    /// The key's input-token bucket, settled when the request ends.
    input_tokens: Option<Arc<Mutex<Bucket>>>,
    /// Input tokens taken from it at admission.
    reserved: f64,
}

impl Admission {
    /// Settles the reservation: the bucket is charged `sent` input tokens (what went upstream)
    /// in all; with no count, the reservation stands as the charge.
    pub fn settle_input_tokens(&self, sent: Option<usize>) {
        let (Some(bucket), Some(sent)) = (&self.input_tokens, sent) else {
            return;
        };
        bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .charge(sent as f64 - self.reserved);
    }
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        let total = (config.server.max_in_flight > 0)
            .then(|| Arc::new(Semaphore::new(config.server.max_in_flight)));
        let keys = config
            .auth
            .iter()
            .flatten()
            .map(|key| {
                let limits = KeyLimits {
                    in_flight: key.max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
                    requests: key
                        .requests_per_minute
                        .map(|n| Arc::new(Mutex::new(Bucket::new(n)))),
                    input_tokens: key
                        .input_tokens_per_minute
                        .map(|n| Arc::new(Mutex::new(Bucket::new(n)))),
                };
                (key.name.clone(), limits)
            })
            .collect::<HashMap<_, _>>();
        if let Some(shared) = config.shared_cache.as_ref().filter(|s| s.rate_limits) {
            let buckets = keys
                .iter()
                .flat_map(|(name, limits)| {
                    [
                        ("requests", &limits.requests),
                        ("input_tokens", &limits.input_tokens),
                    ]
                    .into_iter()
                    .filter_map(move |(unit, bucket)| {
                        bucket.as_ref().map(|b| SharedBucket {
                            key: format!("{}rl:{name}:{unit}", shared.prefix),
                            bucket: Arc::downgrade(b),
                        })
                    })
                })
                .collect::<Vec<_>>();
            if !buckets.is_empty() {
                super::shared_limits::spawn(shared, buckets);
            }
        }
        Self { total, keys }
    }

    /// Admits a request of `client` expected to send about `estimate` input tokens (reserved
    /// from the key's token bucket), or says why not (503 over a concurrency limit, 429 over
    /// the key's rate).
    pub fn admit(
        &self,
        client: Option<&ClientKey>,
        estimate: usize,
    ) -> Result<Admission, ProxyError> {
        let mut places = Vec::new();
        if let Some(total) = &self.total {
            places.push(
                total
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| ProxyError::Overloaded("server"))?,
            );
        }
        let Some(limits) = client.and_then(|c| self.keys.get(&c.name)) else {
            return Ok(Admission {
                _places: places,
                rates: Vec::new(),
                input_tokens: None,
                reserved: 0.0,
            });
        };
        if let Some(in_flight) = &limits.in_flight {
            places.push(
                in_flight
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| ProxyError::Overloaded("this API key"))?,
            );
        }
        let limited = |unit, bucket: &Bucket| {
            let limit = bucket.capacity as u32;
            move |retry_after_s| ProxyError::RateLimited {
                unit,
                limit,
                retry_after_s,
            }
        };
        let mut rates = Vec::new();
        // Tokens first: a request refused for its tokens takes no request from the other bucket.
        if let Some(bucket) = &limits.input_tokens {
            let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
            let unit = RateUnit::Tokens;
            rates.push(
                bucket
                    .admit(unit, 1.0, estimate as f64)
                    .map_err(limited(unit, &bucket))?,
            );
        }
        if let Some(bucket) = &limits.requests {
            let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
            rates.push(
                bucket
                    .take()
                    .map_err(limited(RateUnit::Requests, &bucket))?,
            );
        }
        let reserved = if limits.input_tokens.is_some() {
            estimate as f64
        } else {
            0.0
        };
        Ok(Admission {
            _places: places,
            rates,
            input_tokens: limits.input_tokens.clone(),
            reserved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_when_to_retry() {
        let mut bucket = Bucket::new(2);
        assert_eq!(bucket.take().map(|s| s.remaining).ok(), Some(1));
        assert_eq!(bucket.take().map(|s| s.remaining).ok(), Some(0));
        let retry = bucket.take().expect_err("empty");
        assert!((1..=30).contains(&retry), "{retry}");
    }

    #[test]
    fn an_input_token_bucket_may_be_overdrawn_then_makes_the_key_wait() {
        let mut bucket = Bucket::new(600);
        let state = bucket.admit(RateUnit::Tokens, 1.0, 0.0).expect("full");
        assert_eq!(state.remaining, 600);
        bucket.charge(1500.0);
        // 900 in debt at 10 tokens a second: about 90 s until one is available.
        let retry = bucket
            .admit(RateUnit::Tokens, 1.0, 0.0)
            .expect_err("in debt");
        assert!((89..=91).contains(&retry), "{retry}");
        assert_eq!(bucket.state(RateUnit::Tokens).remaining, 0);
    }

    #[test]
    fn a_reservation_is_seen_at_once_and_settled_to_what_was_sent() {
        let mut bucket = Bucket::new(600);
        // Two requests admitted together: the second sees the first's reservation.
        let first = bucket.admit(RateUnit::Tokens, 1.0, 400.0).expect("full");
        assert_eq!(first.remaining, 200);
        let second = bucket
            .admit(RateUnit::Tokens, 1.0, 400.0)
            .expect("positive");
        assert_eq!(second.remaining, 0);
        assert!(bucket.admit(RateUnit::Tokens, 1.0, 1.0).is_err(), "in debt");
        // The first sent only 100 (compressed): 300 come back.
        bucket.charge(100.0 - 400.0);
        assert!((99..=101).contains(&bucket.state(RateUnit::Tokens).remaining));
    }
}
