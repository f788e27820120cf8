//! The official `openai` and `anthropic` Python SDKs against the real binary (installed into
//! `.venv` by `scripts/setup`; set `CONDENSER_PYTHON` to use another interpreter).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{config, with_native_providers, Condenser, MockUpstream};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CONDENSER_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup (it installs the SDKs these tests use)",
        venv.display()
    );
    venv
}

/// Runs one SDK script against a fresh condenser (with the mock as OpenAI, Anthropic and Gemini
/// upstream) and checks that it printed every expected step.
async fn run_script(script: &str, env_var: &str, base_path: &str, steps: &[&str]) {
    let mock = MockUpstream::start().await;
    let compression =
        "enabled = true\ncompressor = \"extractive\"\nmin_tokens = 200\ntarget_ratio = 0.35";
    let cfg = with_native_providers(&config(&mock.base_url(), "", compression), &mock);
    let proxy = Condenser::start_with_env(
        &cfg,
        &[("MOCK_ANTHROPIC_KEY", "k1"), ("MOCK_GEMINI_KEY", "k2")],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let python = python();
    let base_url = format!("http://{}{base_path}", proxy.addr);
    let env_var = env_var.to_string();
    let (output, _proxy) = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env(env_var, base_url)
            .output()
            .map(|o| (o, proxy))
    })
    .await
    .expect("join")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in steps {
        assert!(stdout.contains(step), "missing `{step}` in:\n{stdout}");
    }
}

#[tokio::test]
async fn openai_python_sdk_works_through_condenser() {
    run_script(
        "openai_client.py",
        "OPENAI_BASE_URL",
        "/v1",
        &[
            "non-streaming ok",
            "streaming ok",
            "tools ok",
            "errors ok",
            "embeddings ok",
            "native providers ok",
            "stream errors ok",
        ],
    )
    .await;
}

#[tokio::test]
async fn anthropic_python_sdk_works_through_the_messages_front_door() {
    run_script(
        "anthropic_client.py",
        "ANTHROPIC_BASE_URL",
        "",
        &["messages ok", "stream ok", "tools ok", "errors ok"],
    )
    .await;
}
