//! The training pipeline against llama.cpp: the candle forward equals llama.cpp's on the same
//! GGUF; training lowers the loss; the exported adapter loads through the proxy's `select`
//! compressor and changes its scores, and a `rewrite` adapter through the `rewrite` compressor
//! changes what it writes; the merged GGUF scores like base + adapter; adapters
//! that do not fit the base are refused naming the file. Needs `scripts/fetch-model`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::quantized::GgmlDType;
use candle_core::D;

use condenser::compress::{CompressInput, Compressor, Rewrite, Select, Tokenizer};
use condenser::llm::{LocalModel, LocalModelConfig, ModelBackend, Vocabulary};
use condenser_train::data::Example;
use condenser_train::lora::{train, TrainConfig};
use condenser_train::model::{Model, Pass};
use condenser_train::{data, export, tiny};

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn local(path: &Path, lora: Option<&Path>) -> Arc<LocalModel> {
    Arc::new(
        LocalModel::load(&LocalModelConfig {
            lora: lora.map(|p| (p.to_path_buf(), 1.0)),
            ..LocalModelConfig::cpu(path, 2, 1024)
        })
        .expect("llama.cpp loads the model"),
    )
}

fn select(path: &Path, lora: Option<&Path>) -> Select {
    Select::new(
        local(path, lora),
        Vocabulary::load(path).expect("vocab"),
        1024,
        Duration::from_secs(120),
    )
    .expect("select")
}

#[test]
fn candle_forward_matches_llama_cpp_on_a_tiny_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("tiny.gguf");
    tiny::write(&path, Some(&base()), 11).expect("tiny model with the real vocabulary");
    let (prefix, text) = (
        "Question: who?\n",
        " Ada Lovelace wrote the first program in 1843.",
    );
    let llama = local(&path, None)
        .surprisal(prefix, text, Duration::from_secs(60))
        .expect("llama.cpp scores");
    let vocab = Vocabulary::load(&path).expect("vocab");
    let mut tokens = vocab.tokenize(prefix, true);
    let first = tokens.len() - 1;
    tokens.extend(vocab.tokenize(text, false));
    let model = Model::load(&path).expect("candle loads the model");
    let x = model
        .blocks(
            &model.embed(&tokens).expect("embed"),
            0..tiny::LAYERS,
            Pass::Infer,
        )
        .expect("fwd");
    let all: Vec<i32> = (0..model.hp.n_vocab as i32).collect();
    let positions: Vec<usize> = (first..tokens.len() - 1).collect();
    let logits = model
        .head_logits(&x, &positions, &all, false)
        .expect("logits");
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).expect("log_softmax");
    let logp: Vec<Vec<f32>> = logp.to_vec2().expect("vec");
    assert_eq!(llama.len(), positions.len());
    for (k, (row, scored)) in logp.iter().zip(&llama).enumerate() {
        let bits = -row[tokens[positions[k] + 1] as usize] / std::f32::consts::LN_2;
        assert!(
            (bits - scored.bits).abs() < 0.02,
            "token {k}: candle {bits} vs llama.cpp {}",
            scored.bits
        );
    }
}

fn example(id: &str, question: &str, sentences: &[(&str, u8)]) -> Example {
    Example {
        id: id.into(),
        source: "test".into(),
        question: question.into(),
        answer: String::new(),
        sentences: sentences.iter().map(|(s, _)| format!("{s} ")).collect(),
        labels: sentences.iter().map(|(_, l)| *l).collect(),
    }
}

fn fixed_batch() -> Vec<Example> {
    vec![
        example(
            "a",
            "Where was Marie Curie born?",
            &[
                ("Marie Curie was born in Warsaw in 1867.", 1),
                ("Bananas are rich in potassium.", 0),
                ("The Pacific is the largest ocean.", 0),
                ("She later moved to Paris to study physics.", 0),
            ],
        ),
        example(
            "b",
            "What language did Guido van Rossum create?",
            &[
                ("Mount Everest is in the Himalayas.", 0),
                ("Guido van Rossum created the Python language.", 1),
                ("Tea is popular in England.", 0),
            ],
        ),
        example(
            "c",
            "When did the Berlin Wall fall?",
            &[
                ("Owls hunt at night.", 0),
                ("Copper conducts electricity well.", 0),
                ("The Berlin Wall fell in November 1989.", 1),
            ],
        ),
    ]
}

/// A short run's settings on `fixed_batch`, written to `dir/data`.
fn fixed_run(dir: &Path, objective: &str) -> TrainConfig {
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).expect("mkdir");
    data::write(&data_dir.join("train.jsonl"), &fixed_batch()).expect("write");
    data::write(&data_dir.join("val.jsonl"), &fixed_batch()).expect("write");
    TrainConfig {
        base: base(),
        data: data_dir,
        objective: objective.into(),
        rank: 4,
        alpha: 8.0,
        layers: 2,
        targets: vec!["attn_q".into(), "attn_v".into(), "ffn_down".into()],
        dropout: 0.0,
        lr: 1e-2,
        weight_decay: 0.0,
        warmup: 1,
        epochs: 12,
        batch: 3,
        max_tokens: 256,
        limit: None,
        val_limit: 3,
        val_every: 1,
        patience: 20,
        positive_weight: 2.0,
        seed: 3,
        keep_activations: false,
    }
}

/// Trains and checks that the validation loss (on the training batch itself) fell by 10 %.
fn train_lowers_the_loss(cfg: TrainConfig, run: &Path) {
    let state = train(cfg, run, false).expect("trains");
    let first = state.history.first().expect("validated").2;
    let best = state
        .history
        .iter()
        .map(|h| h.2)
        .fold(f64::INFINITY, f64::min);
    assert!(
        best < first * 0.9,
        "loss on the fixed batch: first {first}, best {best}"
    );
}

#[test]
fn a_trained_adapter_loads_in_llama_cpp_changes_select_and_merges() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = dir.path().join("run");
    train_lowers_the_loss(fixed_run(dir.path(), "select"), &run);

    let adapter = dir.path().join("select-test.gguf");
    let manifest = dir.path().join("manifest.toml");
    let entry =
        export::export(&run, export::Checkpoint::Last, &adapter, Some(&manifest)).expect("exports");
    assert_eq!(entry.rank, 4);
    assert!(std::fs::read_to_string(&manifest)
        .expect("manifest")
        .contains("select-test.gguf"));

    let sentences = [
        "Marie Curie was born in Warsaw in 1867. ",
        "Bananas are rich in potassium. ",
    ];
    let question = "Where was Marie Curie born?";
    let plain = select(&base(), None)
        .scores(question, &sentences)
        .expect("base scores");
    let adapted = select(&base(), Some(&adapter))
        .scores(question, &sentences)
        .expect("adapted");
    assert!(
        plain
            .iter()
            .zip(&adapted)
            .any(|(a, b)| (a - b).abs() > 0.05),
        "the adapter changed nothing: {plain:?} vs {adapted:?}"
    );

    let merged = dir.path().join("merged.gguf");
    let n = export::merge(&base(), &adapter, 1.0, &merged, GgmlDType::F16).expect("merges");
    assert_eq!(n, 2 * 3, "two blocks, three targets");
    let folded = select(&merged, None)
        .scores(question, &sentences)
        .expect("merged scores");
    for (a, b) in adapted.iter().zip(&folded) {
        assert!(
            (a - b).abs() < 0.1 + 0.05 * a.abs(),
            "merged {folded:?} vs base + adapter {adapted:?}"
        );
    }

    // An adapter made for another model is refused, naming its file.
    let tiny_base = dir.path().join("tiny.gguf");
    tiny::write(&tiny_base, None, 5).expect("tiny");
    let error = export::merge(
        &tiny_base,
        &adapter,
        1.0,
        &dir.path().join("x.gguf"),
        GgmlDType::F16,
    )
    .expect_err("shapes differ");
    assert!(
        format!("{error:#}").contains("select-test.gguf"),
        "{error:#}"
    );
}

#[test]
fn a_rewrite_adapter_trains_on_the_compressors_prompt_and_changes_its_rewrite() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = dir.path().join("run");
    let cfg = TrainConfig {
        max_tokens: 512,
        epochs: 8,
        ..fixed_run(dir.path(), "rewrite")
    };

    // Each trained position predicts the next token of the reply, which ends the turn.
    let vocab = Vocabulary::load(&base()).expect("vocab");
    let seq = condenser_train::rewrite::sequence(&vocab, &fixed_batch()[0], 512)
        .expect("the model has a chat template")
        .expect("fits");
    for (&at, &label) in seq.markers.iter().zip(&seq.labels) {
        assert_eq!(seq.tokens[at + 1] as u32, label);
    }
    assert_eq!(*seq.tokens.last().expect("tokens"), vocab.end_of_reply());

    train_lowers_the_loss(cfg, &run);
    let adapter = dir.path().join("rewrite-test.gguf");
    export::export(&run, export::Checkpoint::Last, &adapter, None).expect("exports");

    let example = &fixed_batch()[0];
    let text = example.text();
    let input = CompressInput {
        text: &text,
        query: &example.question,
        target_tokens: 14,
        tokenizer: Tokenizer::O200k,
    };
    let rewrite = |lora: Option<&Path>| {
        Rewrite::new(local(&base(), lora), Duration::from_secs(120), None)
            .compress(&input)
            .map_err(|e| e.to_string())
    };
    let (plain, adapted) = (rewrite(None), rewrite(Some(&adapter)));
    assert_ne!(plain, adapted, "the adapter changed nothing");
    let adapted = adapted.expect("the adapted rewrite passes the guards");
    assert!(adapted.contains("Warsaw"), "{adapted}");
}

#[test]
fn an_adapter_that_does_not_fit_the_base_is_refused_by_llama_cpp_naming_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let wrong = dir.path().join("wrong-rank.gguf");
    let pair = condenser::lora::LoraPair {
        weight: "blk.0.attn_q.weight".into(),
        n_in: 7,
        n_out: 5,
        rank: 2,
        a: vec![0.1; 14],
        b: vec![0.1; 10],
    };
    condenser::lora::write_lora(&wrong, "llama", 2.0, &[pair]).expect("write");
    let error = LocalModel::load(&LocalModelConfig {
        lora: Some((wrong.clone(), 1.0)),
        ..LocalModelConfig::cpu(base(), 1, 512)
    })
    .err()
    .expect("refused");
    assert!(error.to_string().contains("wrong-rank.gguf"), "{error}");
}
