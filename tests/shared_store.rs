//! The shadow store on a real PostgreSQL shared by two replicas: samples recorded by either
//! appear in the other's report and in `condenser report`; with the database down, client
//! traffic is unaffected and sampling pauses (counted).

mod common;

use std::time::{Duration, Instant};

use common::postgres::PostgresServer;
use common::shadow::{admin, ask, question, server_section};
use common::{Condenser, MockUpstream};
use serde_json::Value;

fn replica(mock: &MockUpstream, store: &str, admin: u16) -> String {
    format!(
        r#"
{server}
[[upstreams]]
name = "mock"
kind = "openai"
base_url = "{base}"

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
enabled = true
compressor = "extractive"
min_tokens = 200

[routes.shadow]
sample_rate = 1.0

[shadow]
store = "{store}"
"#,
        server = server_section(admin),
        base = mock.base_url(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// The `main` route's report on this replica's admin API once it shows `samples` samples.
async fn wait_samples(admin_port: u16, samples: u64) -> Value {
    let started = Instant::now();
    loop {
        let report = admin(admin_port).await;
        let main = report["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["route"] == "main"))
            .cloned();
        if main.as_ref().and_then(|m| m["samples"].as_u64()) >= Some(samples) {
            return report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{samples} samples not seen: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_replicas_share_one_shadow_store_and_survive_its_outage() {
    let mut db = PostgresServer::start();
    let mock = MockUpstream::start().await;
    let (admin_a, admin_b) = (free_port(), free_port());
    let config_a = replica(&mock, &db.url(), admin_a);
    let a = Condenser::start(&config_a);
    let b = Condenser::start(&replica(&mock, &db.url(), admin_b));
    for (proxy, n) in [(&a, 3), (&b, 2)] {
        for _ in 0..n {
            let resp = ask(proxy, &question("gpt-4o-mini", false), "sk-client").await;
            assert_eq!(resp.status(), 200);
        }
    }
    // Each replica's report reads the shared store: all five samples, whoever took them.
    let report_a = wait_samples(admin_a, 5).await;
    let report_b = wait_samples(admin_b, 5).await;
    assert_eq!(report_a["routes"], report_b["routes"]);

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
