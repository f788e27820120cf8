//! The shadow store on a real PostgreSQL shared by two replicas: samples recorded by either
//! appear in the other's report and in `condenser report`; with the database down, client
//! traffic is unaffected and sampling pauses (counted); an auto-rollout decision one replica
//! takes is followed by the other.

mod common;

use std::time::{Duration, Instant};

use common::postgres::PostgresServer;
use common::shadow::{admin, ask, question, replica_config, wait_scored, Setup};
use common::{Condenser, MockUpstream};
use serde_json::Value;

#[tokio::test]
async fn two_replicas_share_one_shadow_store_and_survive_its_outage() {
    let mut db = PostgresServer::start();
    let mock = MockUpstream::start().await;
    let (admin_a, admin_b) = (common::free_port(), common::free_port());
    let config_a = replica_config(&mock, &db.url(), admin_a);
    let a = Condenser::start(&config_a);
    let b = Condenser::start(&replica_config(&mock, &db.url(), admin_b));
    for (proxy, n) in [(&a, 3), (&b, 2)] {
        for _ in 0..n {
            let resp = ask(proxy, &question("gpt-4o-mini", false), "sk-client").await;
            assert_eq!(resp.status(), 200);
        }
    }
    // Each replica's report reads the shared store: all five samples, whoever took them.
    // A sample is stored before its scores are, so wait for all five to be scored (which
    // implies stored) before comparing the two reports.
    let main_a = wait_scored(admin_a, 5).await;
    let main_b = wait_scored(admin_b, 5).await;
    assert_eq!(main_a, main_b);

    // `condenser report` reads the same store from the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, &config_a).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["report", "--json", "--config"])
        .arg(&path)
        .output()
        .expect("report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("json");
    let samples = |v: &Value| {
        v.as_array()
            .or_else(|| v["routes"].as_array())
            .and_then(|r| r.iter().find(|r| r["route"] == "main"))
            .and_then(|m| m["samples"].as_u64())
    };
    assert_eq!(samples(&cli), Some(5), "{cli}");

    // The database goes down: clients see nothing of it; sampling pauses after the first
    // sample that cannot be stored.
    db.stop();
    for _ in 0..6 {
        let resp = ask(&a, &question("gpt-4o-mini", false), "sk-client").await;
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let stats = admin_stats(admin_a).await;
    assert!(stats["store_errors"].as_u64() >= Some(1), "{stats}");
    assert!(stats["paused"].as_u64() >= Some(1), "{stats}");
}

/// The shadow runtime's counters, which the admin API shows with the store down too.
async fn admin_stats(admin_port: u16) -> Value {
    let report = admin(admin_port).await;
    assert!(report["store_error"].is_string(), "{report}");
    report["stats"].clone()
}

/// Whether the proxy compressed this request (its token headers differ).
fn compressed(resp: &reqwest::Response) -> bool {
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    header("x-condenser-tokens-after") != header("x-condenser-tokens-before")
}

#[tokio::test]
async fn a_rollout_decision_taken_by_one_replica_is_followed_by_the_other() {
    let db = PostgresServer::start();
    let s = Setup::new().await;
    let (admin_a, admin_b) = (s.admin_port(), s.admin_port());
    let rollout = "rollout = \"auto\"\nmin_samples = 3\nmin_pass_rate = 0.9";
    let replica = |admin: u16, sample_rate: &str| {
        s.config(admin, rollout, sample_rate, "rollout_sync_ms = 200")
            .replace(
                &format!("store = \"{}\"", s.store().display()),
                &format!("store = \"{}\"", db.url()),
            )
    };
    let a = Condenser::start(&replica(admin_a, "sample_rate = 1.0"));
    // B takes no samples: whatever it serves, it learned from the store.
    let b = Condenser::start(&replica(admin_b, "sample_rate = 0.0"));
    let resp = ask(&b, &question("stable", false), "k").await;
    assert!(!compressed(&resp), "no decision yet: originals");
    for i in 1..=3 {
        let resp = ask(&a, &question("stable", false), "k").await;
        assert_eq!(resp.status(), 200);
        wait_scored(admin_a, i).await;
    }
    // A decided from its three passing samples ...
    let resp = ask(&a, &question("stable", false), "k").await;
    assert!(compressed(&resp), "A serves compressed requests");
    // ... and B follows within a sync period or two.
    let started = Instant::now();
    loop {
        let resp = ask(&b, &question("stable", false), "k").await;
        assert_eq!(resp.status(), 200);
        if compressed(&resp) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B never followed A's decision: {}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b
        .logs()
        .contains("following the decision another replica stored"));
}
