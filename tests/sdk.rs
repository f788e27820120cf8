//! The official `openai` Python SDK against the real binary (installed into `.venv` by
//! `scripts/setup`; set `CONDENSER_PYTHON` to use another interpreter).

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
        "{} is missing: run scripts/setup (it installs the openai SDK used by this test)",
        venv.display()
    );
    venv
}

#[tokio::test]
async fn openai_python_sdk_works_through_condenser() {
    let mock = MockUpstream::start().await;
    let compression =
        "enabled = true\ncompressor = \"extractive\"\nmin_tokens = 200\ntarget_ratio = 0.35";
    let cfg = with_native_providers(&config(&mock.base_url(), "", compression), &mock);
    let proxy = Condenser::start_with_env(
        &cfg,
        &[("MOCK_ANTHROPIC_KEY", "k1"), ("MOCK_GEMINI_KEY", "k2")],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_client.py");
    let python = python();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("OPENAI_BASE_URL", format!("http://{}/v1", proxy.addr))
            .output()
            .map(|o| (o, proxy))
    })
    .await
    .expect("join")
    .expect("run python");
    let (output, _proxy) = output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in [
        "non-streaming ok",
        "streaming ok",
        "tools ok",
        "errors ok",
        "embeddings ok",
    ] {
        assert!(stdout.contains(step), "missing `{step}` in:\n{stdout}");
    }
}
