//! `condenser check`: exit 0 on a valid file (the shipped proxy.toml included); otherwise a
//! non-zero exit and a message naming the offending key, environment overrides included.

use std::process::{Command, Output};

fn check(config: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_condenser"));
    cmd.args(["check", "--config"]).arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run condenser check")
}

fn shipped() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).expect("proxy.toml")
}

#[test]
fn shipped_config_is_valid() {
    let out = check(&shipped(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            shipped().replace("target_ratio = 0.35", "target_ratio = 1.5"),
            "routes[0].compression.target_ratio",
        ),
        (
            shipped().replace("min_tokens = 512", "min_tokens = \"many\""),
            "routes[0].compression.min_tokens",
        ),
        (
            shipped().replace("compressor = \"extractive\"", "compressor = \"zip\""),
            "routes[0].compression.compressor",
        ),
        (
            shipped().replace("upstream = \"openai\"", "upstream = \"missing\""),
            "routes[0].upstream",
        ),
        (
            shipped().replace("[server]", "[server]\nlisten_port = 1"),
            "server.listen_port",
        ),
        (
            shipped().replace("compressor = \"extractive\"", "compressor = \"prune\""),
            "routes[0].compression.compressor",
        ),
        (
            shipped().replace("https://api.openai.com/v1", "api.openai.com"),
            "upstreams[0].base_url",
        ),
        (
            shipped().replace(
                "timeout_ms = 600000",
                "timeout_ms = 600000\nca_file = \"/nonexistent/ca.pem\"",
            ),
            "upstreams[0].ca_file",
        ),
        (
            shipped().replace(
                "[server]",
                "[server]\ntls = { cert = \"Cargo.toml\", key = \"Cargo.toml\" }",
            ),
            "server.tls.cert",
        ),
        (
            shipped().replace("timeout_ms = 250", "timeout_ms = 250\nrollout = \"auto\""),
            "routes[0].compression.rollout",
        ),
        (
            shipped().replace(
                "timeout_ms = 250",
                "timeout_ms = 250\n[routes.shadow]\nsample_rate = 0.1",
            ),
            "routes[0].shadow",
        ),
        (
            shipped().replace(
                "timeout_ms = 250",
                "timeout_ms = 250\n[routes.shadow]\nsample_rate = 2.0",
            ) + "\n[shadow]\n",
            "routes[0].shadow.sample_rate",
        ),
        (
            shipped() + "\n[shadow]\nthresholds = { facts = 1.5 }\n",
            "shadow.thresholds.facts",
        ),
        (shipped() + "\n[shadow]\nscorers = 0\n", "shadow.scorers"),
    ];
    for (config, key) in cases {
        let out = check(&config, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "accepted a config that should fail on {key}"
        );
        assert!(stderr.contains(key), "`{stderr}` does not name {key}");
    }
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let out = check(
        &shipped(),
        &[("CONDENSER__SERVER__LISTEN", "not-an-address")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
    let out = check(&shipped(), &[("CONDENSER__SERVER__MAX_BODY_BYTES", "1024")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An adapter that does not fit its base model is refused with its file named, before
/// llama.cpp ever sees it.
#[cfg(feature = "local-model")]
#[test]
fn a_mismatched_adapter_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    let wrong = dir.path().join("wrong-rank.gguf");
    let pair = condenser::lora::LoraPair {
        weight: "blk.0.attn_q.weight".into(),
        n_in: 100,
        n_out: 576,
        rank: 4,
        a: vec![0.0; 400],
        b: vec![0.0; 4 * 576],
    };
    condenser::lora::write_lora(&wrong, "llama", 8.0, &[pair]).expect("write");
    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF but not really").expect("write");
    for adapter in [&wrong, &corrupt] {
        // The temporary folder is allowed as a model folder: the adapter's content is on test.
        let server = format!(
            "[server]\nmodel_dirs = [\"adapters\", \"{}\"]\n",
            dir.path().display()
        );
        let config = format!(
            "{}\n[compressors.select]\nmodel = \"{base}\"\nlora = \"{}\"\n",
            shipped().replacen("[server]\n", &server, 1),
            adapter.display()
        );
        let out = check(&config, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted {}", adapter.display());
        let name = adapter
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(stderr.contains(name), "{stderr}");
        assert!(stderr.contains("compressors.select.lora"), "{stderr}");
    }
}

#[test]
fn compressors_and_gates_are_listed_by_name() {
    let out = check(&shipped(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "compressors: identity, truncate, extractive, prune (needs [compressors.prune])"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("equivalence gates: facts, embedding, judge"),
        "{stdout}"
    );
    let stderr = |config: String| String::from_utf8_lossy(&check(&config, &[]).stderr).to_string();
    let unknown = stderr(shipped().replace("compressor = \"extractive\"", "compressor = \"zip\""));
    assert!(
        unknown.contains("registered: identity, truncate, extractive, prune, rewrite, select"),
        "{unknown}"
    );
    let section = stderr(shipped() + "\n[compressors.extractive]\nmodel = \"m.gguf\"\n");
    assert!(
        section.contains("compressors.extractive")
            && section.contains("registered: prune, rewrite, select"),
        "{section}"
    );
    let gate = stderr(
        shipped().replace(
            "timeout_ms = 250",
            "timeout_ms = 250\n[routes.shadow]\nsample_rate = 0.1",
        ) + "\n[shadow]\n[shadow.thresholds]\nvibes = 0.5\n",
    );
    assert!(
        gate.contains("shadow.thresholds.vibes")
            && gate.contains("registered: facts, embedding, judge"),
        "{gate}"
    );
}

#[test]
fn model_files_outside_the_model_dirs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("all-MiniLM-L6-v2");
    std::fs::create_dir(&outside).expect("mkdir");
    let config = format!(
        "{}\n[shadow]\nembedding_model = \"{}\"\n",
        shipped(),
        outside.display()
    );
    let out = check(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("shadow.embedding_model") && stderr.contains("outside server.model_dirs"),
        "{stderr}"
    );
    let climbing = format!(
        "{}\n[shadow]\nembedding_model = \"models/../../../etc\"\n",
        shipped()
    );
    assert!(
        !check(&climbing, &[]).status.success(),
        "`..` out of a model folder"
    );
    let allowed = config.replacen(
        "[server]\n",
        &format!("[server]\nmodel_dirs = [\"{}\"]\n", dir.path().display()),
        1,
    );
    let out = check(&allowed, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_remote_model_needs_a_server_url_and_no_local_files() {
    let remote = |extra: &str| {
        shipped().replace("compressor = \"extractive\"", "compressor = \"prune\"")
            + "\n[compressors.prune]\nbackend = \"remote\"\nmodel = \"smollm2\"\n"
            + extra
    };
    // Valid in every build: the proxy needs no llama.cpp for a remote model, and the model id
    // is no file under model_dirs.
    let out = check(&remote("base_url = \"http://gpu-host:8090/v1\"\n"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases = [
        (remote(""), "compressors.prune.base_url"),
        (
            remote("base_url = \"gpu-host:8090\"\n"),
            "compressors.prune.base_url",
        ),
        (
            remote("base_url = \"http://user:secret@gpu-host:8090/v1\"\n"),
            "compressors.prune.base_url",
        ),
        (
            remote("base_url = \"http://gpu-host:8090/v1\"\nlora = \"adapters/a.gguf\"\n"),
            "compressors.prune.lora",
        ),
        (
            remote("base_url = \"http://gpu-host:8090/v1\"\n").replace("\"remote\"", "\"cloud\""),
            "compressors.prune.backend",
        ),
        (
            shipped().replace("compressor = \"extractive\"", "compressor = \"select\"")
                + "\n[compressors.select]\nbackend = \"remote\"\nmodel = \"m\"\n\
                   base_url = \"http://gpu-host:8090/v1\"\n",
            "compressors.select.backend",
        ),
    ];
    for (config, key) in cases {
        let out = check(&config, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {config}");
        assert!(stderr.contains(key), "{key}: {stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
}
