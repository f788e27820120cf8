//! One deployment of an upstream at runtime (a base URL and its key): its address, resolved
//! asynchronously and cached (`HttpPeer::new` with a hostname does a blocking lookup and panics
//! on failure), its key (read from the environment once, never logged), its circuit breaker and
//! its count of requests in flight — and the choice between an upstream's deployments: the one
//! with the fewest requests in flight among those not ejected, preferring one this request has
//! not tried yet, ties broken at random so that idle deployments share the load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::DeploymentSettings;
use crate::error::ProxyError;

/// How long a DNS answer is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

pub struct Deployment {
    pub settings: DeploymentSettings,
    pub(super) api_key: Option<String>,
    resolved: Mutex<Option<(Instant, SocketAddr)>>,
    /// Consecutive failed attempts, and until when the deployment is ejected.
    breaker: Mutex<(u32, Option<Instant>)>,
    in_flight: AtomicUsize,
}

/// Counts a request in flight on a deployment until dropped.
pub struct InFlight<'d>(&'d AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deployment {
    /// Reads the key from `api_key_env` once. When that variable is unset, the client's own
    /// `Authorization` is forwarded instead (with a start-up warning), so a developer can run the
    /// shipped `proxy.toml` with their SDK's key.
    pub fn new(upstream: &str, settings: DeploymentSettings) -> Self {
        let api_key = settings
            .api_key_env
            .as_deref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| !k.is_empty());
        if let (Some(var), None) = (&settings.api_key_env, &api_key) {
            tracing::warn!(
                upstream,
                variable = %var,
                "API key variable not set; forwarding the client's Authorization header"
            );
        }
        Self {
            settings,
            api_key,
            resolved: Mutex::new(None),
            breaker: Mutex::new((0, None)),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// `host:port`, as the access log names the deployment.
    pub fn label(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Whether the deployment is ejected now (it failed `eject_after` attempts in a row, less
    /// than `eject_for_ms` ago). Once the time is up one request probes it again.
    pub fn ejected(&self) -> bool {
        let breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        breaker.1.is_some_and(|until| Instant::now() < until)
    }

    /// Records an attempt's outcome in the circuit breaker.
    pub(super) fn record_attempt(
        &self,
        upstream: &str,
        failed: bool,
        eject_after: u32,
        eject_for_ms: u64,
    ) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            *breaker = (0, None);
            return;
        }
        breaker.0 = breaker.0.saturating_add(1);
        if eject_after > 0 && breaker.0 >= eject_after {
            breaker.1 = Some(Instant::now() + Duration::from_millis(eject_for_ms));
            tracing::warn!(
                upstream,
                deployment = %self.label(),
                failures = breaker.0,
                cool_down_ms = eject_for_ms,
                "deployment ejected"
            );
        }
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let s = &self.settings;
        let default_port = if s.tls { 443 } else { 80 };
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        if s.port == default_port {
            host
        } else {
            format!("{host}:{}", s.port)
        }
    }

    pub async fn address(&self, upstream: &str) -> Result<SocketAddr, ProxyError> {
        if let Ok(ip) = self.settings.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.settings.port));
        }
        if let Ok(guard) = self.resolved.lock() {
            if let Some((at, addr)) = *guard {
                if at.elapsed() < DNS_TTL {
                    return Ok(addr);
                }
            }
        }
        let unreachable = |reason: String| ProxyError::UpstreamUnreachable {
            upstream: upstream.to_string(),
            reason,
        };
        let addr = tokio::net::lookup_host((self.settings.host.as_str(), self.settings.port))
            .await
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.settings.host)))?
            .next()
            .ok_or_else(|| unreachable(format!("{} has no address", self.settings.host)))?;
        if let Ok(mut guard) = self.resolved.lock() {
            *guard = Some((Instant::now(), addr));
        }
        Ok(addr)
    }
}

/// The deployment to send to: fewest in flight among those not ejected (all, when every one is),
/// preferring those not in `tried`; ties broken at random.
pub fn pick(deployments: &[Deployment], tried: &[usize]) -> usize {
    let n = deployments.len();
    if n <= 1 {
        return 0;
    }
    let all_ejected = deployments.iter().all(Deployment::ejected);
    let start = fastrand::usize(..n);
    (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| all_ejected || !deployments[i].ejected())
        .min_by_key(|&i| (tried.contains(&i), deployments[i].in_flight()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(port: u16) -> Deployment {
        Deployment::new(
            "up",
            DeploymentSettings {
                tls: false,
                host: "127.0.0.1".into(),
                port,
                base_path: "/v1".into(),
                api_key_env: None,
            },
        )
    }

    #[test]
    fn the_least_busy_deployment_is_chosen() {
        let all = [deployment(1), deployment(2), deployment(3)];
        let _a = all[0].start();
        let _b = all[0].start();
        let _c = all[2].start();
        for _ in 0..20 {
            assert_eq!(pick(&all, &[]), 1);
        }
        drop(_c);
        let _d = all[1].start();
        for _ in 0..20 {
            assert_eq!(pick(&all, &[]), 2, "in-flight counts follow the guards");
        }
    }

    #[test]
    fn a_retry_goes_elsewhere_and_ejected_deployments_are_skipped() {
        let all = [deployment(1), deployment(2)];
        for _ in 0..20 {
            assert_eq!(pick(&all, &[0]), 1);
        }
        all[1].record_attempt("up", true, 1, 60_000);
        for _ in 0..20 {
            assert_eq!(pick(&all, &[0]), 0, "an ejected deployment is left out");
        }
        all[0].record_attempt("up", true, 1, 60_000);
        let both: std::collections::HashSet<usize> = (0..64).map(|_| pick(&all, &[])).collect();
        assert_eq!(both.len(), 2, "all ejected: all are candidates again");
    }

    #[test]
    fn idle_deployments_share_the_load() {
        let all = [deployment(1), deployment(2), deployment(3)];
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[pick(&all, &[])] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    }
}
