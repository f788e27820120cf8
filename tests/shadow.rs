//! Shadow A/B end to end: the real binary, the recording mock upstream (scripted answers that
//! change when compression drops the answer), the real SQLite store, the real MiniLM embedding
//! gate, and the judge gate served by the mock.

mod common;

use std::time::{Duration, Instant};

use common::shadow::{admin, ask, chat_requests, question, wait_scored, Setup};
use common::{Condenser, SLOW_LEG};
use serde_json::Value;

#[tokio::test]
async fn both_legs_go_upstream_and_a_changed_answer_fails_the_gates() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0\nserve = \"original\"",
        "",
    ));
    let resp = ask(&proxy, &question("sensitive", false), "sk-client-secret-1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-condenser-shadow")
            .and_then(|v| v.to_str().ok()),
        Some("original")
    );
    let answer: Value = resp.json().await.expect("json");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("1896"),
        "the client gets the original leg's answer: {answer}"
    );
    let route = wait_scored(admin_port, 1).await;
    let legs = chat_requests(&s.mock);
    assert_eq!(legs.len(), 2, "original and compressed both sent");
    let sizes: Vec<usize> = legs.iter().map(|b| b.to_string().len()).collect();
    assert!(sizes[0] != sizes[1], "one leg is compressed: {sizes:?}");
    assert_eq!(route["pass_rate"], 0.0);
    let gates = route["gate_failure_rates"].as_object().expect("gates");
    for gate in ["facts", "judge"] {
        assert_eq!(
            gates.get(gate).and_then(Value::as_f64),
            Some(1.0),
            "{gate}: {route}"
        );
    }
    // The worst example is named, but its prompt and answers need the admin key, and this
    // admin listener has none.
    let worst = &route["worst"][0];
    assert!(!worst["failed_gates"].as_array().is_none_or(Vec::is_empty));
    for field in ["request", "reference", "candidate"] {
        assert_eq!(worst[field], "", "{field}: {route}");
    }
    // Not on the public listener.
    let public = reqwest::get(proxy.url("/admin/shadow")).await.expect("get");
    assert_eq!(public.status(), 404);
    // The store holds prompts and answers: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.store())
        .expect("store")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // No key in the database, whatever the client sent.
    drop(proxy);
    // Compression is off on this route and the client got the original, but the sample
    // measured `extractive` (its other leg): it is filed under that compressor, not `off`.
    let compressor: String = rusqlite::Connection::open(s.store())
        .expect("open")
        .query_row("SELECT compressor FROM samples", [], |r| r.get(0))
        .expect("compressor");
    assert_eq!(compressor, "extractive");
    // `condenser report` reads the same store.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["report", "--store"])
        .arg(s.store())
        .output()
        .expect("condenser report");
    let table = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(table.contains("| main | 1 (1 scored) | 0.0% |"), "{table}");
    assert!(
        table.contains("failed facts") || table.contains("facts, judge"),
        "{table}"
    );
    let bytes = std::fs::read(s.store()).expect("db");
    let wal = std::fs::read(s.store().with_extension("db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(!String::from_utf8_lossy(file).contains("sk-client-secret"));
    }
}

#[tokio::test]
async fn streamed_requests_are_shadowed_and_equal_answers_pass_every_gate() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0\nserve = \"compressed\"\nnoise_floor = true",
        "",
    ));
    let resp = ask(&proxy, &question("stable", true), "sk-test").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(text.contains("data: [DONE]"));
    let route = wait_scored(admin_port, 1).await;
    // The client's streamed leg, the original (non-streamed) and the noise floor's second original.
    let legs = chat_requests(&s.mock);
    assert_eq!(legs.len(), 3, "{legs:?}");
    assert_eq!(legs.iter().filter(|b| b["stream"] == false).count(), 2);
    assert_eq!(route["pass_rate"], 1.0, "{route}");
    let started = Instant::now();
    let report = loop {
        let r = admin(admin_port).await;
        if r["routes"][0]["noise_samples"].as_u64() == Some(1)
            || started.elapsed() > Duration::from_secs(10)
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["routes"][0]["noise_pass_rate"], 1.0, "{report}");
    assert!(report["routes"][0]["input_tokens_saved"].as_u64() > Some(0));
}

#[tokio::test]
async fn the_daily_spend_cap_stops_shadowing() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    // One leg of this request is estimated at ~$0.02; the cap leaves room for none.
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0\nmax_daily_usd = 0.001",
        "[shadow.prices]\nstable = { input = 1.0, output = 30.0 }\njudge = { input = 1.0, output = 1.0 }",
    ));
    for _ in 0..3 {
        assert_eq!(
            ask(&proxy, &question("stable", false), "k").await.status(),
            200
        );
    }
    let report = admin(admin_port).await;
    assert_eq!(chat_requests(&s.mock).len(), 3, "no shadow leg was sent");
    assert_eq!(report["stats"]["over_budget"], 3, "{report}");
    // A model without a price would count as $0 against the budget: it is not sampled at all.
    assert_eq!(
        ask(&proxy, &question("sensitive", false), "k")
            .await
            .status(),
        200
    );
    let report = admin(admin_port).await;
    assert_eq!(chat_requests(&s.mock).len(), 4, "no shadow leg was sent");
    assert_eq!(report["stats"]["unpriced"], 1, "{report}");
}

#[tokio::test]
async fn auto_rollout_turns_compression_on_and_off_and_remembers() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let config = s.config(
        admin_port,
        "rollout = \"auto\"\nmin_samples = 3\nmin_pass_rate = 0.9",
        "sample_rate = 1.0",
        "",
    );
    let served = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-condenser-shadow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    {
        let proxy = Condenser::start(&config);
        for i in 1..=3 {
            let resp = ask(&proxy, &question("stable", false), "k").await;
            assert_eq!(served(&resp).as_deref(), Some("original"));
            wait_scored(admin_port, i).await;
        }
        // Three passing samples: the route now serves compressed requests.
        let resp = ask(&proxy, &question("stable", false), "k").await;
        assert_eq!(served(&resp).as_deref(), Some("compressed"));
        wait_scored(admin_port, 4).await;
    }
    // The decision survives a restart.
    let proxy = Condenser::start(&config);
    let resp = ask(&proxy, &question("sensitive", false), "k").await;
    assert_eq!(served(&resp).as_deref(), Some("compressed"));
    wait_scored(admin_port, 5).await;
    // Failing samples pull the pass rate under the bar: back to originals.
    let mut last = None;
    for i in 6..=8 {
        let resp = ask(&proxy, &question("sensitive", false), "k").await;
        last = served(&resp);
        wait_scored(admin_port, i).await;
    }
    assert!(last.is_some());
    let resp = ask(&proxy, &question("sensitive", false), "k").await;
    assert_eq!(served(&resp).as_deref(), Some("original"));
}

// Multi-threaded: the mock must keep answering while this thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_samples_still_in_flight() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    let mut proxy = Condenser::start(&s.config(admin_port, "", "sample_rate = 1.0", ""));
    // The client streams at once; the background leg takes `SLOW_LEG` and nobody waits for it.
    let started = Instant::now();
    let resp = ask(&proxy, &question("slowleg", true), "k").await;
    assert!(resp.text().await.expect("body").contains("[DONE]"));
    let client_wait = started.elapsed();
    assert!(
        client_wait < SLOW_LEG * 3 / 5,
        "the client waited {client_wait:?} for a {SLOW_LEG:?} shadow leg"
    );
    assert!(
        proxy.terminate(Duration::from_secs(20)),
        "exits after SIGTERM"
    );
    let conn = rusqlite::Connection::open(s.store()).expect("open");
    let (rows, scored): (i64, i64) = conn
        .query_row("SELECT COUNT(*), COUNT(passed) FROM samples", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count");
    assert_eq!(
        (rows, scored),
        (1, 1),
        "the in-flight sample was stored and scored: {}",
        proxy.logs()
    );
    let scores: String = conn
        .query_row("SELECT scores FROM samples", [], |r| r.get(0))
        .expect("scores");
    let scores: Value = serde_json::from_str(&scores).expect("json");
    // Identical answers: the MiniLM embedding gate ran and scored them as the same text.
    let gate = |name: &str| scores["scores"][name].as_f64();
    assert!(gate("embedding").is_some_and(|e| e > 0.99), "{scores}");
    assert_eq!(gate("facts"), Some(1.0));
    assert_eq!(gate("judge").map(|j| (j * 100.0).round()), Some(95.0));
}

#[tokio::test]
async fn the_judge_call_is_priced_into_the_shadowing_spend() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    // Only the judge has a price, so all this route spends is its judge call: the mock reports
    // 10 prompt and 2 completion tokens, i.e. (10 × 1000 + 2 × 10000) / 1e6 = $0.03.
    let proxy = Condenser::start(&s.config(
        admin_port,
        "",
        "sample_rate = 1.0",
        "[shadow.prices]\njudge = { input = 1000.0, output = 10000.0 }",
    ));
    assert_eq!(
        ask(&proxy, &question("stable", false), "k").await.status(),
        200
    );
    let route = wait_scored(admin_port, 1).await;
    let spent = route["usd_spent_shadowing"].as_f64().expect("spend");
    assert!((spent - 0.03).abs() < 1e-9, "{route}");
}

#[tokio::test]
async fn samples_are_scored_concurrently() {
    let s = Setup::new().await;
    let admin_port = s.admin_port();
    // This judge answers only when two of its calls are in flight at once (else it fails after
    // 5 s): both samples pass only if the second is scored while the first waits for its judge.
    let config = s
        .config(admin_port, "", "sample_rate = 1.0", "scorers = 2")
        .replace("judge_model = \"judge\"", "judge_model = \"pairjudge\"");
    let proxy = Condenser::start(&config);
    for _ in 0..2 {
        let resp = ask(&proxy, &question("stable", false), "k").await;
        assert_eq!(resp.status(), 200);
    }
    let route = wait_scored(admin_port, 2).await;
    assert_eq!(route["pass_rate"], 1.0, "{route}");
}
