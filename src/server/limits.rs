//! Concurrency and rate limits: requests in flight across all clients (`server.max_in_flight`,
//! 503 beyond), and per client key (`[[auth.keys]] max_in_flight`, 503; `requests_per_minute`,
//! a token bucket that allows bursts up to the per-minute limit, 429). Rejections carry
//! `Retry-After`; rate-limited keys' answers carry the `x-ratelimit-*-requests` headers
//! OpenAI's clients read. A request's places are held until it ends (the access-log context
//! owns them). Counts start afresh when the configuration is reloaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{ClientKey, Config};
use crate::error::ProxyError;

/// A token bucket refilled continuously at `capacity` per minute.
struct Bucket {
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        Self {
            capacity: f64::from(per_minute),
            tokens: f64::from(per_minute),
            last: Instant::now(),
        }
    }

    /// Takes one token; `Err(seconds until one is available)` when empty.
    fn take(&mut self) -> Result<RateState, u64> {
        let now = Instant::now();
        let per_second = self.capacity / 60.0;
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * per_second)
            .min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(RateState {
                limit: self.capacity as u32,
                remaining: self.tokens.floor() as u32,
                reset_s: ((self.capacity - self.tokens) / per_second).ceil() as u64,
            })
        } else {
            Err(((1.0 - self.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

/// A key's rate-limit state after its request was admitted.
#[derive(Debug, Clone, Copy)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
}

impl RateState {
    /// The `x-ratelimit-*-requests` response headers.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("x-ratelimit-limit-requests", self.limit.to_string()),
            ("x-ratelimit-remaining-requests", self.remaining.to_string()),
            ("x-ratelimit-reset-requests", format!("{}s", self.reset_s)),
        ]
    }
}

struct KeyLimits {
    in_flight: Option<Arc<Semaphore>>,
    requests: Option<Mutex<Bucket>>,
}

/// The limits of one configuration.
pub struct Limits {
    total: Option<Arc<Semaphore>>,
    keys: HashMap<String, KeyLimits>,
}

/// An admitted request's places, released when it is dropped.
pub struct Admission {
    _places: Vec<OwnedSemaphorePermit>,
    pub rate: Option<RateState>,
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
                    requests: key.requests_per_minute.map(|n| Mutex::new(Bucket::new(n))),
                };
                (key.name.clone(), limits)
            })
            .collect();
        Self { total, keys }
    }

    /// Admits a request of `client`, or says why not (503 over a concurrency limit, 429 over
    /// the key's rate).
    pub fn admit(&self, client: Option<&ClientKey>) -> Result<Admission, ProxyError> {
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
                rate: None,
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
        let rate = match &limits.requests {
            None => None,
            Some(bucket) => {
                let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
                let limit = bucket.capacity as u32;
                Some(
                    bucket
                        .take()
                        .map_err(|retry_after_s| ProxyError::RateLimited {
                            limit,
                            retry_after_s,
                        })?,
                )
            }
        };
        Ok(Admission {
            _places: places,
            rate,
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
}
