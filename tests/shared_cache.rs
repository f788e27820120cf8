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
    assert_eq!(common::healthz(&a).await["compression"]["computed"], 1);
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
    let b_health = common::healthz(&b).await;
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
    let health = common::healthz(&proxy).await;
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
    let (ha, hb) = (common::healthz(&a).await, common::healthz(&b).await);
    assert_eq!(
        computed(&ha) + computed(&hb),
        5,
        "one replica computed each text, the other took it from Redis: {ha} {hb}"
    );
}

const TEAM_KEY: &str = "sk-team-shared-limits";

/// A replica whose one client key may send `per_minute` requests a minute, its buckets shared
/// through `redis` (reconciled every 100 ms).
fn limited_replica(mock: &MockUpstream, redis: &RedisServer, per_minute: u32) -> Condenser {
    let cfg = config(&mock.base_url(), "", "enabled = false")
        + &format!(
            "\n[shared_cache]\nurl = \"{}\"\ntimeout_ms = 200\ncool_down_ms = 60000\n\
             rate_limit_sync_ms = 100\n\n[auth]\n[[auth.keys]]\nname = \"team\"\n\
             key_env = \"CONDENSER_TEST_TEAM_KEY\"\nrequests_per_minute = {per_minute}\n",
            redis.url()
        );
    Condenser::start_with_env(&cfg, &[("CONDENSER_TEST_TEAM_KEY", TEAM_KEY)])
}

async fn hello(proxy: &Condenser) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(TEAM_KEY)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send")
        .status()
}

#[tokio::test]
async fn a_keys_rate_limit_holds_across_replicas_and_survives_a_redis_outage() {
    let mut redis = RedisServer::start();
    let mock = MockUpstream::start().await;
    let a = limited_replica(&mock, &redis, 6);
    let b = limited_replica(&mock, &redis, 6);
    // Alternate between the replicas, slower than they reconcile: alone each would admit six,
    // together they admit six.
    let mut admitted = 0;
    let mut limited = 0;
    for i in 0..10 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        match hello(proxy).await.as_u16() {
            200 => admitted += 1,
            429 => limited += 1,
            other => panic!("status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        (admitted, limited),
        (6, 4),
        "one bucket of six for both replicas"
    );

    // Redis goes away: nothing fails that the local buckets admit; each replica goes on
    // enforcing its own bucket (now empty, so still 429, never a 5xx).
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for proxy in [&a, &b, &a, &b] {
        let status = hello(proxy).await.as_u16();
        assert!(status == 200 || status == 429, "status {status}");
    }
    assert!(
        a.logs().contains("shared rate limits unavailable"),
        "{}",
        a.logs()
    );
}
