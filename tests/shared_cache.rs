//! The shared cache tier against a real Redis: a compression one replica computed is served to
//! another from Redis without running the compressor again, and a Redis outage mid-load fails
//! no request and leaves compression working on the local cache.

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{config, Condenser, MockUpstream};
use serde_json::{json, Value};

fn replica_config(mock: &MockUpstream, redis: &RedisServer) -> String {
    config(
        &mock.base_url(),
        "",
        "enabled = true\nmin_tokens = 200\ntarget_ratio = 0.35",
    ) + &format!(
        "\n[shared_cache]\nurl = \"{}\"\ntimeout_ms = 200\ncool_down_ms = 60000\n",
        redis.url()
    )
}

async fn ask(proxy: &Condenser, document: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": format!("{document}\n\nWho lit the lamp?")}]}))
        .send()
        .await
        .expect("send")
}

async fn health(proxy: &Condenser) -> Value {
    reqwest::get(proxy.url("/healthz"))
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json")
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_compression_computed_by_one_replica_is_served_to_another() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    let a = Condenser::start(&replica_config(&mock, &redis));
    let b = Condenser::start(&replica_config(&mock, &redis));
    let document = common::long_document();

    let first = ask(&a, &document).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-condenser-compressor"), "extractive");
    assert_eq!(health(&a).await["compression"]["computed"], 1);
    // A publishes off the request path: wait until Redis has it.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for _ in 0..50 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("condenser:c:*")
            .query_async(&mut conn)
            .await
            .expect("keys");
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = ask(&b, &document).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-condenser-compressor"), "extractive");
    let b_health = health(&b).await;
    assert_eq!(
        b_health["compression"]["shared_cache"]["hits"], 1,
        "{b_health}"
    );
    assert_eq!(
        b_health["compression"]["computed"], 0,
        "B did not run the compressor: {b_health}"
    );
    let received = mock.received();
    let sent = |i: usize| received[i].json()["messages"][0]["content"].clone();
    assert_eq!(
        sent(0),
        sent(received.len() - 1),
        "both replicas sent the same compression"
    );
    assert_eq!(
        header(&first, "x-condenser-tokens-after"),
        header(&second, "x-condenser-tokens-after")
    );
}

#[tokio::test]
async fn a_redis_outage_mid_load_fails_no_request() {
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&replica_config(&mock, &redis));
    let base = common::long_document();
    for i in 0..30 {
        if i == 10 {
            redis.kill();
        }
        // A new text each time: every request misses the local cache and asks Redis.
        let resp = ask(&proxy, &format!("Report {i}.\n\n{base}")).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(header(&resp, "x-condenser-compressor"), "extractive");
        assert_ne!(
            header(&resp, "x-condenser-fail-open"),
            "true",
            "request {i}"
        );
    }
    let health = health(&proxy).await;
    let shared = &health["compression"]["shared_cache"];
    assert!(shared["published"].as_u64().unwrap_or(0) >= 1, "{health}");
    assert_eq!(
        shared["errors"], 1,
        "one failure switched the tier off: {health}"
    );
    assert!(shared["skipped"].as_u64().unwrap_or(0) >= 19, "{health}");
    assert_eq!(health["compression"]["computed"], 30);
    assert_eq!(health["compression"]["fail_open"], 0);
}

#[tokio::test]
async fn concurrent_misses_on_two_replicas_are_computed_once() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    let a = Condenser::start(&replica_config(&mock, &redis));
    let b = Condenser::start(&replica_config(&mock, &redis));
    for round in 0..5 {
        let document = format!("Round {round}.\n\n{}", common::long_document());
        let (left, right) = tokio::join!(ask(&a, &document), ask(&b, &document));
        assert_eq!(
            (left.status().as_u16(), right.status().as_u16()),
            (200, 200)
        );
        assert_eq!(
            header(&left, "x-condenser-tokens-after"),
            header(&right, "x-condenser-tokens-after")
        );
    }
    let computed = |h: &Value| h["compression"]["computed"].as_u64().unwrap_or(99);
    let (ha, hb) = (health(&a).await, health(&b).await);
    assert_eq!(
        computed(&ha) + computed(&hb),
        5,
        "one replica computed each text, the other took it from Redis: {ha} {hb}"
    );
}
