//! Fault-injection soak through the real binary: sustained concurrent load, compression and
//! shadowing on, against an upstream that resets, fails, stalls, cuts streams, returns invalid
//! JSON, huge bodies and slow drips (`common::chaos`). Passes when the process never panics,
//! every request ends with the upstream's answer or a clear error (an OpenAI-shaped error body,
//! an error event in a cut stream, an unterminated body for a cut non-stream answer; never a
//! clean `[DONE]` after a cut, never a hang), file descriptors and RSS return to within a bound
//! of the start once the load stops, SIGTERM stores every shadow sample the process took, and
//! the store passes `PRAGMA integrity_check` after a SIGKILL mid-write.
//!
//! `CONDENSER_SOAK_SECONDS` sets the load's duration (default 20, after a warm-up of a fifth of
//! it, at least 10 s, under the same load); SECURITY.md quotes a longer run. The report is printed
//! (`--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::chaos::ChaosUpstream;
use common::Condenser;
use serde_json::{json, Value};

const WORKERS: usize = 16;
/// Longer than the proxy's upstream timeout (1 s).
const STALL: Duration = Duration::from_millis(2500);

fn soak_seconds() -> u64 {
    std::env::var("CONDENSER_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn config(upstream: &str, store: &std::path::Path, sample_rate: f64) -> String {
    format!(
        r#"
[server]
threads = 2
grace_period_seconds = 5

[[upstreams]]
name = "chaos"
kind = "openai"
base_url = "{upstream}"
timeout_ms = 1000
connect_timeout_ms = 1000
max_retries = 1
retry_backoff_ms = 10

[[routes]]
name = "main"
models = ["*"]
upstream = "chaos"

[routes.compression]
enabled = true
compressor = "extractive"
min_tokens = 200
target_ratio = 0.35

[routes.shadow]
sample_rate = {sample_rate}

[shadow]
store = "{store}"
"#,
        store = store.display()
    )
}

/// The process's open file descriptors and resident memory (KiB).
fn usage(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// How one request ended, as the client saw it. `Err` is a failure of the soak.
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    stream: bool,
) -> Result<&'static str, String> {
    let question = format!("{}\n\nWho lit the lamp, and when?", common::long_document());
    let body = json!({"model": "gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": question}]});
    let resp = match client.post(url).json(&body).send().await {
        Ok(resp) => resp,
        Err(e) if e.is_timeout() => {
            return Err(format!("no answer within the client timeout: {e}"))
        }
        Err(e) => return Err(format!("no response at all: {e}")),
    };
    let status = resp.status().as_u16();
    let event_stream = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut bytes = Vec::new();
    let mut cut = false;
    let mut resp = resp;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(format!("body hung: {e}")),
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    if status >= 400 {
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("{status} without a JSON error body: {text:.200}"))?;
        return match value["error"]["message"].as_str() {
            Some(_) if cut => Err(format!("{status} error body cut")),
            Some(_) => Ok(if status == 429 {
                "error 429"
            } else {
                "error 5xx/4xx"
            }),
            None => Err(format!("{status} body is not an OpenAI error: {text:.200}")),
        };
    }
    if event_stream {
        let error_event = text.contains("data: {\"error\"");
        let done = text.contains("data: [DONE]");
        return match (cut, error_event, done) {
            (true, true, false) => Ok("stream cut, error event"),
            (false, false, true) => Ok("stream answered"),
            (true, false, _) => Err(format!("stream cut without an error event: {text:.300}")),
            (_, true, true) => Err(format!("[DONE] after an error event: {text:.300}")),
            (false, _, false) => Err(format!("stream ended cleanly without [DONE]: {text:.300}")),
        };
    }
    if cut {
        return Ok("body cut (unterminated)");
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v["choices"].is_array() => Ok("answered"),
        _ => Ok("upstream's invalid JSON relayed"),
    }
}

struct Load {
    outcomes: BTreeMap<&'static str, u64>,
    failures: Vec<String>,
    requests: u64,
    peak: (usize, u64),
}

async fn run_load(proxy: &Condenser, duration: Duration) -> Load {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = proxy.url("/v1/chat/completions");
    let outcomes = Arc::new(Mutex::new((BTreeMap::new(), Vec::new())));
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (client, url, outcomes) = (client.clone(), url.clone(), outcomes.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < deadline {
                    let result = one_request(&client, &url, (w + n).is_multiple_of(2)).await;
                    n += 1;
                    if let Ok(mut o) = outcomes.lock() {
                        match result {
                            Ok(kind) => *o.0.entry(kind).or_insert(0u64) += 1,
                            Err(failure) => o.1.push(failure),
                        }
                    }
                }
            })
        })
        .collect();
    let pid = proxy.pid();
    let mut peak = usage(pid);
    while workers.iter().any(|w| !w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = usage(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
    }
    drop(client);
    let (outcomes, failures) = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    Load {
        requests: outcomes.values().sum::<u64>() + failures.len() as u64,
        outcomes,
        failures,
        peak,
    }
}

fn stored_rows(store: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(store).expect("open store");
    conn.query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_survives_a_faulty_upstream_under_load() {
    let chaos = ChaosUpstream::start(7, STALL).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("shadow.db");
    let mut proxy = Condenser::start_with_env(
        &config(&chaos.base_url(), &store, 0.3),
        &[("MALLOC_ARENA_MAX", "2")],
    );
    // Warm up under the same faulty load (BPE tables, pools, and the allocator's working set:
    // 8 MB bodies and stream buffers raise glibc's high-water mark once, which is not a leak),
    // then take the baseline. A leak shows as growth over it.
    let warm_up = Duration::from_secs((soak_seconds() / 5).max(10));
    let _ = run_load(&proxy, warm_up).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = usage(proxy.pid());
    let started = Instant::now();
    let load = run_load(&proxy, Duration::from_secs(soak_seconds())).await;
    let elapsed = started.elapsed();
    // Stalled upstream reads end within the timeouts; give idle connections a moment to close.
    let mut end = usage(proxy.pid());
    for _ in 0..40 {
        if end.0 <= start.0 + WORKERS + 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        end = usage(proxy.pid());
    }
    let logs = proxy.logs();
    println!(
        "soak: {} requests in {:.0} s from {WORKERS} clients; upstream saw {} requests, faults {:?}",
        load.requests,
        elapsed.as_secs_f64(),
        chaos.requests.load(std::sync::atomic::Ordering::Relaxed),
        chaos.served()
    );
    println!("outcomes: {:?}", load.outcomes);
    println!(
        "fds start/peak/end {}/{}/{}; RSS MiB start/peak/end {:.1}/{:.1}/{:.1}",
        start.0,
        load.peak.0,
        end.0,
        start.1 as f64 / 1024.0,
        load.peak.1 as f64 / 1024.0,
        end.1 as f64 / 1024.0
    );
    assert!(
        load.failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        load.failures.len(),
        load.requests,
        &load.failures[..load.failures.len().min(5)]
    );
    assert!(!logs.contains("panicked"), "a panic: {logs:.2000}");
    assert!(load.outcomes.get("answered").copied().unwrap_or(0) > 0);
    assert!(
        load.outcomes
            .get("stream cut, error event")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(
        end.0 <= start.0 + WORKERS + 8,
        "file descriptors: {} at the start, {} after the load",
        start.0,
        end.0
    );
    assert!(
        end.1 <= start.1 + 96 * 1024,
        "RSS: {} KiB at the start, {} KiB after the load",
        start.1,
        end.1
    );

    // SIGTERM: every sample taken is stored before exit.
    assert!(proxy.terminate(Duration::from_secs(40)), "exits on SIGTERM");
    let logs = proxy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("shadow samples drained"))
        .unwrap_or_else(|| panic!("no drain line: {logs:.3000}"));
    let stored: i64 = line
        .split("stored=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("stored=N");
    let rows = stored_rows(&store);
    println!("SIGTERM: {stored} samples stored by the process, {rows} rows in the store");
    assert!(stored > 0);
    assert_eq!(rows, stored, "every stored sample is in the file");

    // SIGKILL in the middle of writes: the store stays consistent and keeps what it had.
    let proxy = Condenser::start(&config(&chaos.base_url(), &store, 1.0));
    let killer = {
        let pid = proxy.pid();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        })
    };
    let _ = run_load(&proxy, Duration::from_secs(4)).await;
    killer.await.expect("killer");
    let conn = rusqlite::Connection::open(&store).expect("open store");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    let after = stored_rows(&store);
    println!("SIGKILL mid-write: integrity_check {check}, {after} rows (had {rows})");
    assert_eq!(check, "ok");
    assert!(after >= rows, "rows lost: {rows} → {after}");
}
