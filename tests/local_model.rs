//! The `prune` compressor with the real SmolLM2-135M GGUF (fetched by `scripts/fetch-model`).
//! Built with `--features local-model`, which the workspace build turns on (condenser-eval
//! needs it), so `scripts/test` runs it.
#![cfg(feature = "local-model")]

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod common;

use condenser::compress::{CompressInput, Compressor, Extractive, Prune, Rewrite, Tokenizer};
use condenser::llm::{ChatTurn, LlmError, LocalModel, LocalModelConfig, ModelBackend};
use condenser::lora::{write_lora, LoraPair};

fn model_path() -> PathBuf {
    common::smollm2()
}

fn load(workers: usize, queue: usize) -> LocalModel {
    LocalModel::load(&LocalModelConfig {
        workers,
        queue,
        ..LocalModelConfig::cpu(model_path(), 2, 2048)
    })
    .expect("model loads")
}

const CONTEXT: &str = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. \
It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. \
Locally nicknamed \"La dame de fer\", it was constructed as the centrepiece of the 1889 World's Fair, and to crown \
the centennial anniversary of the French Revolution. Although initially criticised by some of France's leading \
artists and intellectuals for its design, it has since become a global cultural icon of France and one of the most \
recognisable structures in the world. The tower received 5,889,000 visitors in 2022. It is 330 metres tall, about \
the same height as an 81-storey building, and the tallest structure in Paris.";

#[test]
fn prune_hits_its_ratio_keeps_numbers_and_is_deterministic() {
    let model = Arc::new(load(1, 4));
    let prune = Prune::new(model.clone(), Duration::from_secs(60));
    let before = Tokenizer::O200k.count(CONTEXT);
    let input = CompressInput {
        text: CONTEXT,
        query: "How many visitors did the tower receive in 2022?",
        target_tokens: (before as f64 * 0.5) as usize,
        tokenizer: Tokenizer::O200k,
    };
    let first = prune.compress(&input).expect("prune");
    // A second instance has an empty memo, so this is a second scoring pass by the model.
    let second = Prune::new(model.clone(), Duration::from_secs(60))
        .compress(&input)
        .expect("prune");
    assert_eq!(first, second, "deterministic");
    let scorings = model.stats.served.load(Ordering::Relaxed);
    assert_eq!(scorings, 2);
    // Another budget for the same text and question reuses the memoised scoring.
    let tighter = prune
        .compress(&CompressInput {
            target_tokens: (before as f64 * 0.35) as usize,
            ..input
        })
        .expect("prune");
    assert_eq!(model.stats.served.load(Ordering::Relaxed), scorings);
    assert!(Tokenizer::O200k.count(&tighter) < Tokenizer::O200k.count(&first));
    let ratio = Tokenizer::O200k.count(&first) as f64 / before as f64;
    assert!((ratio - 0.5).abs() <= 0.05, "ratio {ratio:.3}: {first}");
    assert!(
        first.contains("5,889,000"),
        "numbers are protected: {first}"
    );
    assert!(first.contains("2022"), "{first}");
}

#[test]
fn surprisal_covers_every_token_and_full_queue_or_deadline_fail() {
    let model = load(1, 1);
    let scored = model
        .surprisal("Question: x\n\nContext: ", CONTEXT, Duration::from_secs(60))
        .expect("scores");
    let joined: Vec<u8> = scored.iter().flat_map(|t| t.bytes.clone()).collect();
    assert_eq!(joined, CONTEXT.as_bytes(), "pieces reproduce the text");
    assert!(scored.iter().all(|t| t.bits.is_finite() && t.bits >= 0.0));

    let model = Arc::new(model);
    let long = CONTEXT.repeat(4);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let model = model.clone();
            let long = long.clone();
            std::thread::spawn(move || model.surprisal("", &long, Duration::from_secs(60)))
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(LlmError::QueueFull))),
        "one worker, queue of one: some are refused"
    );
    assert!(
        results.iter().any(Result::is_ok),
        "and the others are served"
    );
    assert!(matches!(
        model.surprisal("", &long, Duration::from_millis(1)),
        Err(LlmError::Deadline)
    ));
}

/// SmolLM2-135M's query projections: 30 layers of 576 × 576.
const LAYERS: usize = 30;
const HIDDEN: usize = 576;

/// A rank-4 adapter of random factors on every layer's query projection, large enough to move
/// greedy decoding.
fn random_adapter(path: &std::path::Path) {
    let mut rng = fastrand::Rng::with_seed(7);
    let rank = 4;
    let mut values = |n: usize| {
        (0..n)
            .map(|_| (rng.f32() - 0.5) * 0.8)
            .collect::<Vec<f32>>()
    };
    let pairs: Vec<LoraPair> = (0..LAYERS)
        .map(|layer| LoraPair {
            weight: format!("blk.{layer}.attn_q.weight"),
            n_in: HIDDEN,
            n_out: HIDDEN,
            rank,
            a: values(HIDDEN * rank),
            b: values(rank * HIDDEN),
        })
        .collect();
    write_lora(path, "llama", 4.0, &pairs).expect("adapter written");
}

fn chat() -> Vec<ChatTurn> {
    vec![
        ChatTurn::new("system", "Summarise the user's text in one sentence."),
        ChatTurn::new("user", CONTEXT),
    ]
}

#[test]
fn generation_is_deterministic_and_a_lora_adapter_changes_it() {
    let base = load(1, 2);
    let first = base
        .generate(&chat(), 24, Duration::from_secs(120))
        .expect("generates");
    let second = base
        .generate(&chat(), 24, Duration::from_secs(120))
        .expect("generates");
    assert_eq!(first, second, "greedy decoding is deterministic");
    assert!(!first.text.is_empty());

    let dir = tempfile::tempdir().expect("tmp");
    let adapter = dir.path().join("random.gguf");
    random_adapter(&adapter);
    let adapted = LocalModel::load(&LocalModelConfig {
        lora: Some((adapter.clone(), 1.0)),
        ..LocalModelConfig::cpu(model_path(), 2, 2048)
    })
    .expect("llama.cpp accepts the adapter");
    let changed = adapted
        .generate(&chat(), 24, Duration::from_secs(120))
        .expect("generates");
    assert_ne!(changed.text, first.text, "the adapter changes the output");
    // Scale 0 switches the adapter off: the base model's output again.
    let off = LocalModel::load(&LocalModelConfig {
        lora: Some((adapter, 0.0)),
        ..LocalModelConfig::cpu(model_path(), 2, 2048)
    })
    .expect("loads");
    assert_eq!(
        off.generate(&chat(), 24, Duration::from_secs(120))
            .expect("generates"),
        first
    );
}

/// `chat()`'s system prompt and document, then a question: shares a long prefix with it.
fn question_chat() -> Vec<ChatTurn> {
    vec![
        ChatTurn::new("system", "Summarise the user's text in one sentence."),
        ChatTurn::new("user", format!("{CONTEXT}\n\nWho designed the tower?")),
    ]
}

#[test]
fn a_shared_prompt_prefix_is_prefilled_once_when_reuse_is_on() {
    let warm = LocalModel::load(&LocalModelConfig {
        reuse_prompt_prefix: true,
        ..LocalModelConfig::cpu(model_path(), 2, 2048)
    })
    .expect("model loads");
    let first = warm
        .generate(&chat(), 24, Duration::from_secs(120))
        .expect("generates");
    assert_eq!(
        first.reused_prompt_tokens, 0,
        "a new worker has nothing cached"
    );
    let again = warm
        .generate(&chat(), 24, Duration::from_secs(120))
        .expect("generates");
    assert_eq!(
        again.reused_prompt_tokens,
        again.prompt_tokens - 1,
        "all but the last prompt token come from the cache"
    );
    assert_eq!(again.text, first.text);

    // Same system prompt and document, another question: only the tail is prefilled.
    let question = question_chat();
    let answer = warm
        .generate(&question, 24, Duration::from_secs(120))
        .expect("generates");
    assert!(
        answer.reused_prompt_tokens > first.prompt_tokens / 2
            && answer.reused_prompt_tokens < answer.prompt_tokens - 1,
        "reused {} of {}",
        answer.reused_prompt_tokens,
        answer.prompt_tokens
    );
    assert!(!answer.text.is_empty());

    // Scoring overwrites the KV cache, so the next chat starts from nothing and answers as a
    // fresh worker does.
    warm.surprisal("Eiffel", CONTEXT, Duration::from_secs(120))
        .expect("scores");
    let after_scoring = warm
        .generate(&chat(), 24, Duration::from_secs(120))
        .expect("generates");
    assert_eq!(after_scoring.reused_prompt_tokens, 0);
    assert_eq!(after_scoring.text, first.text);
}

#[test]
fn without_prefix_reuse_an_answer_does_not_depend_on_the_previous_request() {
    let model = load(1, 2);
    let question = question_chat();
    let cold = model
        .generate(&question, 24, Duration::from_secs(120))
        .expect("generates");
    model
        .generate(&chat(), 24, Duration::from_secs(120))
        .expect("generates");
    let after_other = model
        .generate(&question, 24, Duration::from_secs(120))
        .expect("generates");
    assert_eq!(after_other.reused_prompt_tokens, 0);
    assert_eq!(after_other, cold);
}

#[test]
fn rewrite_is_deterministic_within_budget_or_falls_back() {
    let model = Arc::new(load(1, 2));
    let before = Tokenizer::O200k.count(CONTEXT);
    let input = CompressInput {
        text: CONTEXT,
        query: "How tall is the tower?",
        target_tokens: before / 2,
        tokenizer: Tokenizer::O200k,
    };
    let with_fallback = Rewrite::new(
        model.clone(),
        Duration::from_secs(120),
        Some(Arc::new(Extractive::default())),
    );
    let first = with_fallback.compress(&input).expect("rewrite or fallback");
    let second = with_fallback.compress(&input).expect("rewrite or fallback");
    assert_eq!(first, second, "deterministic");
    let tokens = Tokenizer::O200k.count(&first);
    assert!(
        tokens <= (input.target_tokens as f64 * 1.15).ceil() as usize,
        "{tokens} tokens for a budget of {}: {first}",
        input.target_tokens
    );
    // A budget no rewrite can meet: without a fallback the compressor fails (the proxy fails
    // open); with one, the fallback's output comes back.
    let tiny = CompressInput {
        target_tokens: 1,
        ..input
    };
    let strict = Rewrite::new(model, Duration::from_secs(120), None);
    assert!(strict.compress(&tiny).is_err());
    assert_eq!(
        with_fallback.compress(&tiny).expect("fallback"),
        Extractive::default().compress(&tiny).expect("extractive")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_prune_never_makes_the_client_wait() {
    let mock = common::MockUpstream::start().await;
    let compression = "enabled = true\ncompressor = \"prune\"\nmin_tokens = 200\ntarget_ratio = 0.5\nmode = \"background\"";
    let config = common::config(&mock.base_url(), "", compression)
        + &format!(
            "\n[compressors.prune]\nmodel = \"{}\"\ncontext = 4096\ntimeout_ms = 120000\n",
            model_path().display()
        );
    let proxy = common::Condenser::start(&config);
    let document = common::long_document();
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": document},
        {"role": "user", "content": "Who lit the lighthouse lamp first?"}]});
    let client = reqwest::Client::new();
    let send = || async {
        let started = std::time::Instant::now();
        let resp = client
            .post(proxy.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .expect("send");
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let compressed = header("x-condenser-tokens-after") != header("x-condenser-tokens-before");
        assert_eq!(resp.status(), 200);
        (started.elapsed(), compressed)
    };
    // Pruning this document takes the model seconds on a CPU; the client does not wait for it.
    let (first, compressed) = send().await;
    assert!(!compressed);
    assert!(
        first < Duration::from_millis(1500),
        "first request took {first:?}"
    );
    let started = std::time::Instant::now();
    loop {
        let (elapsed, compressed) = send().await;
        assert!(
            elapsed < Duration::from_millis(1500),
            "a request waited {elapsed:?}"
        );
        if compressed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never compressed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sent = mock.last().json();
    let text = sent["messages"][0]["content"].as_str().expect("text");
    assert!(
        text.len() < document.len() * 7 / 10,
        "the repeat carries the pruned text"
    );
    assert_eq!(
        sent["messages"][1]["content"], "Who lit the lighthouse lamp first?",
        "the question is never compressed"
    );
}

#[test]
fn prune_meets_its_ratio_on_hotpotqa_contexts() {
    let prune = Prune::new(Arc::new(load(1, 2)), Duration::from_secs(120));
    for (context, question) in common::hotpotqa(3) {
        let before = Tokenizer::O200k.count(&context);
        let input = CompressInput {
            text: &context,
            query: &question,
            target_tokens: before / 2,
            tokenizer: Tokenizer::O200k,
        };
        let out = prune.compress(&input).expect("prunes");
        let ratio = Tokenizer::O200k.count(&out) as f64 / before as f64;
        assert!(
            (ratio - 0.5).abs() <= 0.05,
            "ratio {ratio:.3} for `{question}`"
        );
    }
}
