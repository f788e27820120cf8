//! The deployable stack, checked without a container engine (there is none on the machines this
//! is built on): the compose file's services, ports, volumes, healthcheck and grace period; every
//! file it mounts exists; the images run unprivileged with the local-model build; the stack's
//! condenser config validates; Prometheus scrapes the admin listener; and every metric the
//! Grafana dashboard queries is one a real condenser's `/metrics` serves.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{config, Condenser, MockUpstream};
use serde_yaml::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `condenser check` accepts the file (with the client and admin keys it names set): the
/// exposure rule holds for both of its listeners.
fn assert_valid_config(path: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_condenser"))
        .args(["check", "--config"])
        .arg(Path::new(ROOT).join(path))
        .env("CONDENSER_CLIENT_KEY", "sk-client")
        .env("CONDENSER_ADMIN_KEY", "sk-admin")
        .output()
        .expect("condenser check");
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The compose file with its `<<:` merge keys applied, as compose applies them.
fn compose() -> Value {
    let mut compose: Value =
        serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    compose.apply_merge().expect("merge keys");
    compose
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_compose_stack_is_complete_and_mounts_only_files_that_exist() {
    let compose = compose();
    let services = &compose["services"];
    for name in [
        "condenser",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(services[name].is_mapping(), "service {name}");
    }
    let condenser = &services["condenser"];
    // A healthcheck that needs no shell: the binary probes itself.
    let check = strings(&condenser["healthcheck"]["test"]);
    assert_eq!(check[..2], ["CMD".to_string(), "condenser".to_string()]);
    assert!(check.contains(&"probe".to_string()), "{check:?}");
    // Longer than condenser's drain: grace period plus up to 30 s for shadow samples.
    let grace: u64 = condenser["stop_grace_period"]
        .as_str()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .expect("stop_grace_period in seconds");
    assert!(grace > 5 + 30, "{grace}");
    let ports = strings(&condenser["ports"]);
    assert!(
        ports.contains(&"127.0.0.1:9787:9787".to_string()),
        "admin on loopback only: {ports:?}"
    );
    let volumes = strings(&condenser["volumes"]);
    assert!(
        volumes
            .iter()
            .any(|v| v == "condenser-state:/var/lib/condenser"),
        "state in a named volume: {volumes:?}"
    );
    let declared = compose["volumes"].as_mapping().expect("top-level volumes");
    assert!(
        declared.contains_key(Value::from("condenser-state")),
        "the state volume is declared"
    );
    // Every bind mount of every service names a file or folder of this repository.
    for (name, service) in services.as_mapping().expect("services") {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap_or_default();
            if let Some(relative) = source.strip_prefix("./") {
                assert!(
                    Path::new(ROOT).join(relative).exists(),
                    "{name:?} mounts missing {source}"
                );
            }
        }
    }
    for dockerfile in ["Dockerfile", "Dockerfile.cuda"] {
        let text = read(dockerfile);
        assert!(
            text.contains("\nUSER condenser\n"),
            "{dockerfile} runs unprivileged"
        );
        assert!(text.contains("scripts/fetch-model") && text.contains("scripts/fetch-embedder"));
        assert!(text.contains("HEALTHCHECK") && text.contains("condenser\", \"probe"));
    }
    assert!(read("Dockerfile").contains("--features local-model"));
    assert!(read("Dockerfile.cuda").contains("--features cuda"));
}

#[test]
fn the_scale_profile_balances_two_replicas_that_share_their_state() {
    let compose = compose();
    let services = &compose["services"];
    for name in [
        "condenser-a",
        "condenser-b",
        "load-balancer",
        "redis",
        "postgres",
        "model-server",
    ] {
        assert_eq!(
            strings(&services[name]["profiles"]),
            ["scale"],
            "{name} is in the scale profile only"
        );
    }
    for replica in ["condenser-a", "condenser-b"] {
        let volumes = strings(&services[replica]["volumes"]);
        assert!(
            volumes.contains(&"./deploy/scale/condenser.toml:/etc/condenser/proxy.toml:ro".into()),
            "{replica}: {volumes:?}"
        );
    }
    let server = strings(&services["model-server"]["entrypoint"]);
    assert_eq!(
        server[..2],
        ["condenser".to_string(), "serve-model".to_string()]
    );
    assert!(server.contains(&"0.0.0.0:8090".to_string()), "{server:?}");
    let nginx = read("deploy/scale/nginx.conf");
    for needed in [
        "server condenser-a:8787",
        "server condenser-b:8787",
        "proxy_buffering off",
        "proxy_next_upstream error;",
    ] {
        assert!(nginx.contains(needed), "nginx.conf lacks {needed}");
    }
    assert_valid_config("deploy/scale/condenser.toml");
    let toml = read("deploy/scale/condenser.toml");
    for shared in [
        "url = \"redis://redis:6379\"",
        "store = \"postgres://condenser@postgres:5432/condenser\"",
        "base_url = \"http://model-server:8090/v1\"",
    ] {
        assert!(toml.contains(shared), "{shared}");
    }
}

#[test]
fn the_stack_config_validates_and_its_parts_point_at_each_other() {
    assert_valid_config("deploy/condenser.toml");
    let toml = read("deploy/condenser.toml");
    assert!(toml.contains("admin_listen = \"0.0.0.0:9787\""));
    assert!(toml.contains("otlp_endpoint = \"http://otel-collector:4318\""));
    let prometheus: Value = serde_yaml::from_str(&read("deploy/prometheus.yml")).expect("yaml");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        strings(&job["static_configs"][0]["targets"]),
        ["condenser:9787"]
    );
    let collector: Value = serde_yaml::from_str(&read("deploy/otel-collector.yaml")).expect("yaml");
    assert_eq!(
        collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].as_str(),
        Some("0.0.0.0:4318")
    );
    assert_eq!(
        collector["exporters"]["otlp/jaeger"]["endpoint"].as_str(),
        Some("jaeger:4317")
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served() {
    let mock = MockUpstream::start().await;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let proxy = Condenser::start(&config(
        &mock.base_url(),
        &format!("admin_listen = \"127.0.0.1:{admin}\""),
        "enabled = true",
    ));
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    drop(proxy);
    let served: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/condenser.json")).expect("json");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("condenser_") {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| word.strip_suffix(suffix))
                        .unwrap_or(word);
                    queried.insert(family.to_string());
                }
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<_> = queried
        .iter()
        .filter(|m| !served.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not served: {missing:?}\n{text}"
    );
}
