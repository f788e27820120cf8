//! The `prune` compressor with the real SmolLM2-135M GGUF (fetched by `scripts/fetch-model`).
//! Built with `--features local-model`, which the workspace build turns on (condenser-eval
//! needs it), so `scripts/test` runs it.
#![cfg(feature = "local-model")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use condenser::compress::{CompressInput, Compressor, Prune, Tokenizer};
use condenser::llm::{LlmError, LocalModel, LocalModelConfig};

fn model_path() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-model",
        path.display()
    );
    path
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
    let prune = Prune::new(Arc::new(load(1, 4)), Duration::from_secs(60));
    let before = Tokenizer::O200k.count(CONTEXT);
    let input = CompressInput {
        text: CONTEXT,
        query: "How many visitors did the tower receive in 2022?",
        target_tokens: (before as f64 * 0.5) as usize,
        tokenizer: Tokenizer::O200k,
    };
    let first = prune.compress(&input).expect("prune");
    let second = prune.compress(&input).expect("prune");
    assert_eq!(first, second, "deterministic");
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
