//! The scale-out layout on loopback with the real servers: nginx running the shipped
//! `deploy/scale/nginx.conf` in front of two condenser replicas that share Redis (compression
//! cache) and PostgreSQL (shadow store). Clients see one endpoint; a compression computed by one
//! replica is served by the other, samples taken by either are in both reports, streams pass
//! through the balancer, and a replica going away fails no request.

mod common;

use std::time::Duration;

use common::nginx::Nginx;
use common::postgres::PostgresServer;
use common::redis::RedisServer;
use common::shadow::{question, replica_config, wait_samples};
use common::{Condenser, MockUpstream};
use serde_json::Value;

/// A replica sharing the compression cache on `redis` and the shadow store `store`.
fn replica(mock: &MockUpstream, redis: &RedisServer, store: &str, admin: u16) -> Condenser {
    Condenser::start(
        &(replica_config(mock, store, admin)
            + &format!(
                "\n[shared_cache]\nurl = \"{}\"\ntimeout_ms = 200\n",
                redis.url()
            )),
    )
}

async fn through(nginx: &Nginx, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(nginx.url("/v1/chat/completions"))
        .json(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("send through nginx")
}

/// Samples of route `main` in a replica's report, once it shows at least `n`.
async fn samples(admin_port: u16, n: u64) -> u64 {
    wait_samples(admin_port, n).await["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "main"))
        .and_then(|m| m["samples"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_nginx_share_cache_and_store_and_survive_losing_one() {
    let redis = RedisServer::start();
    let db = PostgresServer::start();
    let mock = MockUpstream::start().await;
    let (admin_a, admin_b) = (common::free_port(), common::free_port());
    let a = replica(&mock, &redis, &db.url(), admin_a);
    let b = replica(&mock, &redis, &db.url(), admin_b);
    let nginx = Nginx::start([a.addr, b.addr]);

    // One document asked six times through the balancer: both replicas answer, and it is
    // compressed once in all (the other replica takes it from Redis).
    let body = question("gpt-4o-mini", false);
    for _ in 0..6 {
        let resp = through(&nginx, &body).await;
        assert_eq!(resp.status(), 200, "{}", nginx.errors());
        assert_eq!(
            resp.headers()
                .get("x-condenser-compressor")
                .and_then(|v| v.to_str().ok()),
            Some("extractive")
        );
        // Publishing to Redis happens off the request path.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ha, hb) = (common::healthz(&a).await, common::healthz(&b).await);
    let compressed = |h: &Value| {
        h["compression"]["requests_compressed"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        compressed(&ha) > 0 && compressed(&hb) > 0,
        "both replicas served: {ha} {hb}"
    );
    let computed = |h: &Value| h["compression"]["computed"].as_u64().unwrap_or(0);
    assert_eq!(computed(&ha) + computed(&hb), 1, "{ha} {hb}");

    // A stream passes through the balancer event by event.
    let resp = through(&nginx, &question("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("stream");
    assert!(
        text.matches("data: ").count() > 2 && text.contains("data: [DONE]"),
        "{text}"
    );

    // Every sample, whichever replica took it, is in both replicas' reports.
    let seen_a = samples(admin_a, 7).await;
    let seen_b = samples(admin_b, 7).await;
    assert_eq!((seen_a, seen_b), (7, 7));

    // Replica A goes away: the balancer sends everything to B and no request fails.
    drop(a);
    for _ in 0..4 {
        let resp = through(&nginx, &body).await;
        assert_eq!(resp.status(), 200, "{}", nginx.errors());
    }
}
