//! Operating condenser through the real binary: Prometheus metrics on the admin listener, the
//! admin API that changes a route live (authenticated, validated, persisted across restarts),
//! reloads from the file (`POST /admin/reload` and `SIGHUP`) under load, route environment
//! overrides by name, and JSON logs.

mod common;

use std::time::Duration;

use common::{config, long_document, Condenser, MockUpstream};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "sk-admin-test-0123";

/// A condenser with an admin listener and key, its overrides kept in `dir`.
fn start(mock: &MockUpstream, dir: &std::path::Path, admin: u16) -> Condenser {
    start_with(
        mock,
        admin,
        &format!(
            "overrides_file = \"{}\"",
            dir.join("overrides.json").display()
        ),
    )
}

/// A condenser with an admin listener and key, and `overrides` in its `[server]` table.
fn start_with(mock: &MockUpstream, admin: u16, overrides: &str) -> Condenser {
    let server = format!(
        "admin_listen = \"127.0.0.1:{admin}\"\nadmin_key_env = \"CONDENSER_TEST_ADMIN_KEY\"\n\
         {overrides}"
    );
    let compression =
        "enabled = true\ncompressor = \"extractive\"\nmin_tokens = 100\ntarget_ratio = 0.35";
    Condenser::start_with_env(
        &config(&mock.base_url(), &server, compression),
        &[("CONDENSER_TEST_ADMIN_KEY", ADMIN_KEY)],
    )
}

/// The mock upstream, a condenser with an admin listener in front of it, and a client.
struct Ops {
    mock: MockUpstream,
    dir: tempfile::TempDir,
    admin: u16,
    proxy: Condenser,
    client: reqwest::Client,
}

impl Ops {
    async fn start() -> Self {
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = common::free_port();
        let proxy = start(&mock, dir.path(), admin);
        Self {
            mock,
            dir,
            admin,
            proxy,
            client: reqwest::Client::new(),
        }
    }
}

fn chat_body() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": format!("{}\n\nWho lit the lighthouse lamp first?", long_document())}
    ]})
}

/// Sends one chat request; returns its status and the compressor header.
async fn ask(client: &reqwest::Client, proxy: &Condenser) -> (u16, String) {
    let resp = client
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat_body())
        .send()
        .await
        .expect("send");
    status_and_compressor(&resp)
}

/// A response's status and `x-condenser-compressor`.
fn status_and_compressor(resp: &reqwest::Response) -> (u16, String) {
    let compressor = resp
        .headers()
        .get("x-condenser-compressor")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (resp.status().as_u16(), compressor)
}

fn admin_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Asserts an OpenAI-shaped error whose message names `key`.
async fn assert_error_names(resp: reqwest::Response, key: &str) {
    let error: Value = resp.json().await.expect("json");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(key)),
        "{error}"
    );
}

/// The value of one sample line of a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_and_tokens_saved_per_route() {
    let ops = Ops::start().await;
    let (admin, proxy, client) = (ops.admin, &ops.proxy, &ops.client);
    for _ in 0..3 {
        assert_eq!(ask(client, proxy).await, (200, "extractive".into()));
    }
    let text = client
        .get(admin_url(admin, "/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sample(
            &text,
            "condenser_requests_total{route=\"main\",status=\"200\",upstream=\"mock\"}"
        ),
        Some(3.0),
        "{text}"
    );
    let before = sample(
        &text,
        "condenser_input_tokens_total{route=\"main\",stage=\"before\"}",
    )
    .expect("tokens before");
    let after = sample(
        &text,
        "condenser_input_tokens_total{route=\"main\",stage=\"after\"}",
    )
    .expect("tokens after");
    let saved = sample(
        &text,
        "condenser_tokens_saved_total{compressor=\"extractive\",route=\"main\"}",
    )
    .expect("saved");
    assert!(after < before * 0.6, "{before} → {after}");
    assert_eq!(saved, before - after);
    assert_eq!(
        sample(
            &text,
            "condenser_compression_ratio_count{compressor=\"extractive\",route=\"main\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "condenser_upstream_seconds_count{upstream=\"mock\"}"),
        Some(3.0)
    );
    assert!(text.contains("# TYPE condenser_compression_cache_hits_total counter"));
    // Not on the public listener, and no key needed on the admin one (scrapers).
    let public = client.get(proxy.url("/metrics")).send().await.expect("get");
    assert_eq!(public.status(), 404);
    let ready: Value = client
        .get(proxy.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn a_route_is_switched_off_and_on_live_and_the_change_survives_a_restart() {
    let Ops {
        mock,
        dir,
        admin,
        proxy,
        client,
    } = Ops::start().await;
    let routes = admin_url(admin, "/admin/routes");

    // The admin API needs the key; a wrong one is refused the same way.
    for auth in [None, Some("Bearer nope")] {
        let mut req = client.get(&routes);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.expect("get");
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_admin_key");
    }
    // Never on the public listener.
    let public = client
        .get(proxy.url("/admin/routes"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("get");
    assert_eq!(public.status(), 404);

    let patch = |body: Value| {
        client
            .patch(admin_url(admin, "/admin/routes/main"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let off = patch(json!({"compression": {"enabled": false}}))
        .await
        .expect("patch");
    assert_eq!(off.status(), 200);
    let route: Value = off.json().await.expect("json");
    assert_eq!(route["compression"]["enabled"], false);
    assert_eq!(route["source"]["compression.enabled"], "override");
    assert_eq!(ask(&client, &proxy).await, (200, "off".into()));

    // Validated like the file: the key is named.
    let bad = patch(json!({"compression": {"target_ratio": 1.5}}))
        .await
        .expect("patch");
    assert_eq!(bad.status(), 400);
    assert_error_names(bad, "compression.target_ratio").await;
    let fixed = patch(json!({"compression": {"mode": "background"}}))
        .await
        .expect("patch");
    assert_eq!(fixed.status(), 400);
    let missing = client
        .patch(admin_url(admin, "/admin/routes/nope"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"compression": {"enabled": true}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(missing.status(), 404);

    // Persisted: a new process on the same files starts with the route off.
    drop(proxy);
    let proxy = start(&mock, dir.path(), admin);
    assert_eq!(ask(&client, &proxy).await, (200, "off".into()));
    let listed: Value = client
        .get(&routes)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["routes"][0]["source"]["compression.enabled"],
        "override"
    );
    // `null` clears the override: back to the file's setting.
    let on = patch(json!({"compression": {"enabled": null}}))
        .await
        .expect("patch");
    assert_eq!(on.status(), 200);
    assert_eq!(ask(&client, &proxy).await, (200, "extractive".into()));
    // `condenser routes` reads the same files.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["routes", "--json", "--config"])
        .arg(proxy.config_path())
        .output()
        .expect("condenser routes");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(printed["routes"][0]["compression"]["enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_flip_compression_under_load_without_a_failed_request() {
    let ops = Ops::start().await;
    let (admin, proxy, client) = (ops.admin, &ops.proxy, &ops.client);
    let original = std::fs::read_to_string(proxy.config_path()).expect("config");
    let disabled = original.replace("enabled = true", "enabled = false");

    let load = {
        let (client, url) = (client.clone(), proxy.url("/v1/chat/completions"));
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < deadline {
                let batch: Vec<_> = (0..4)
                    .map(|_| client.post(&url).json(&chat_body()).send())
                    .collect();
                for resp in futures_util::future::join_all(batch).await {
                    let resp = resp.expect("no connection fails");
                    seen.push(status_and_compressor(&resp));
                }
            }
            seen
        })
    };
    let reload = || {
        client
            .post(admin_url(admin, "/admin/reload"))
            .bearer_auth(ADMIN_KEY)
            .send()
    };
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let text = if i % 2 == 0 { &disabled } else { &original };
        std::fs::write(proxy.config_path(), text).expect("write");
        let resp = reload().await.expect("reload");
        assert_eq!(resp.status(), 200);
    }
    let seen = load.await.expect("load");
    assert!(seen.len() > 20, "{} requests", seen.len());
    assert!(seen.iter().all(|(status, _)| *status == 200), "{seen:?}");
    let compressed = seen.iter().filter(|(_, c)| c == "extractive").count();
    assert!(
        compressed > 0 && compressed < seen.len(),
        "both settings served: {seen:?}"
    );

    // A file that does not validate is refused, naming the key, and the running config stays.
    std::fs::write(
        proxy.config_path(),
        original.replace("target_ratio = 0.35", "target_ratio = 7"),
    )
    .expect("write");
    let refused = reload().await.expect("reload");
    assert_eq!(refused.status(), 400);
    assert_error_names(refused, "routes[0].compression.target_ratio").await;
    assert_eq!(ask(client, proxy).await, (200, "extractive".into()));

    // SIGHUP reloads too.
    std::fs::write(proxy.config_path(), &disabled).expect("write");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut switched = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if ask(client, proxy).await == (200, "off".into()) {
            switched = true;
            break;
        }
    }
    assert!(switched, "SIGHUP applied the file: {}", proxy.logs());
}

#[tokio::test]
async fn route_environment_overrides_address_routes_by_name() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock.base_url(), "", "enabled = true\nmin_tokens = 100");
    let proxy = Condenser::start_with_env(
        &cfg,
        &[("CONDENSER__ROUTES__MAIN__COMPRESSION__ENABLED", "false")],
    );
    let client = reqwest::Client::new();
    assert_eq!(ask(&client, &proxy).await, (200, "off".into()));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, &cfg).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["check", "--config"])
        .arg(&path)
        .env("CONDENSER__ROUTES__0__COMPRESSION__ENABLED", "false")
        .output()
        .expect("check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CONDENSER__ROUTES__0__COMPRESSION__ENABLED") && stderr.contains("MAIN"),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let mock = MockUpstream::start().await;
    let proxy = Condenser::start(&config(
        &mock.base_url(),
        "log_format = \"json\"",
        "enabled = true\nmin_tokens = 100",
    ));
    let client = reqwest::Client::new();
    assert_eq!(ask(&client, &proxy).await.0, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = proxy.logs();
    let access: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["message"] == "request")
        .collect();
    assert_eq!(access.len(), 1, "{logs}");
    assert_eq!(access[0]["route"], "main");
    assert_eq!(access[0]["compressor"], "extractive");
    assert!(access[0]["tokens_before"].as_u64() > access[0]["tokens_after"].as_u64());
}

#[tokio::test]
async fn a_route_changed_on_one_replica_is_followed_by_the_other() {
    let db = common::postgres::PostgresServer::start();
    let mock = MockUpstream::start().await;
    let shared = format!(
        "overrides_store = \"{}\"\noverrides_sync_ms = 200",
        db.url()
    );
    let (admin_a, admin_b) = (common::free_port(), common::free_port());
    let a = start_with(&mock, admin_a, &shared);
    let b = start_with(&mock, admin_b, &shared);
    let client = reqwest::Client::new();
    assert_eq!(ask(&client, &b).await, (200, "extractive".into()));
    let off = client
        .patch(admin_url(admin_a, "/admin/routes/main"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"compression": {"enabled": false}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(off.status(), 200);
    assert_eq!(
        ask(&client, &a).await.1,
        "off",
        "applied at once where it was made"
    );
    // The other replica follows within a sync period or two.
    let started = std::time::Instant::now();
    while ask(&client, &b).await.1 != "off" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "B never followed: {}",
            b.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let routes: Value = client
        .get(admin_url(admin_b, "/admin/routes"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("routes")
        .json()
        .await
        .expect("json");
    assert_eq!(
        routes["routes"][0]["source"]["compression.enabled"], "override",
        "{routes}"
    );
    // A replica started later begins from the shared overrides.
    drop(a);
    let c = start_with(&mock, common::free_port(), &shared);
    assert_eq!(ask(&client, &c).await.1, "off");
}
