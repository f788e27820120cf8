//! The `select` compressor with the real SmolLM2-135M GGUF and the shipped adapter
//! (`adapters/select-smollm2-r8.gguf`): through the real proxy it keeps the question and meets
//! its ratio; its output is a function of its input alone.
#![cfg(feature = "local-model")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod common;

use condenser::compress::select_prompt::WINDOW_TOKENS;
use condenser::compress::{CompressInput, Compressor, Select, Tokenizer};
use condenser::llm::{LocalModel, LocalModelConfig, Vocabulary};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn base() -> PathBuf {
    let path = root().join("adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    path
}

fn adapter() -> PathBuf {
    root().join("adapters/select-smollm2-r8.gguf")
}

fn select() -> Select {
    let model = LocalModel::load(&LocalModelConfig {
        lora: Some((adapter(), 1.0)),
        ..LocalModelConfig::cpu(base(), 2, WINDOW_TOKENS as u32)
    })
    .expect("model and adapter load");
    Select::new(
        Arc::new(model),
        Vocabulary::load(&base()).expect("vocab"),
        WINDOW_TOKENS,
        Duration::from_secs(120),
    )
    .expect("select")
}

#[test]
fn select_is_a_function_of_its_input_and_meets_its_ratio() {
    let (first, second) = (select(), select());
    for (context, question) in common::hotpotqa(2) {
        let before = Tokenizer::O200k.count(&context);
        let input = CompressInput {
            text: &context,
            query: &question,
            target_tokens: before * 35 / 100,
            tokenizer: Tokenizer::O200k,
        };
        let a = first.compress(&input).expect("selects");
        let b = second.compress(&input).expect("selects");
        assert_eq!(a, b, "two instances disagree on `{question}`");
        let ratio = Tokenizer::O200k.count(&a) as f64 / before as f64;
        assert!(
            (0.30..=0.36).contains(&ratio),
            "ratio {ratio:.3} for `{question}`"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_through_the_proxy_keeps_the_question_and_meets_its_ratio() {
    let mock = common::MockUpstream::start().await;
    let compression = "enabled = true\ncompressor = \"select\"\nmin_tokens = 200\ntarget_ratio = 0.35\ntimeout_ms = 120000";
    let config = common::config(&mock.base_url(), "", compression)
        + &format!(
            "\n[compressors.select]\nmodel = \"{}\"\nlora = \"{}\"\ntimeout_ms = 120000\n",
            base().display(),
            adapter().display()
        );
    let proxy = common::Condenser::start(&config);
    let (document, question) = common::hotpotqa(1).remove(0);
    let body = common::document_chat(&document, &question);
    let resp = common::post_chat(&proxy, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-condenser-compressor")
            .and_then(|v| v.to_str().ok()),
        Some("select")
    );
    let sent = mock.last().json();
    assert_eq!(
        sent["messages"][1]["content"],
        question.as_str(),
        "the question is untouched"
    );
    let text = sent["messages"][0]["content"].as_str().expect("text");
    let ratio = Tokenizer::O200k.count(text) as f64 / Tokenizer::O200k.count(&document) as f64;
    assert!((0.30..=0.40).contains(&ratio), "ratio {ratio:.3}");
    assert!(
        document.contains(text.lines().next().unwrap_or_default().trim()),
        "kept text is the document's own"
    );
}
