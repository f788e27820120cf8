//! Speed and memory of the local-model compressors on this CPU: `prune` and `select` (one
//! prefill pass each) and `rewrite` (prefill + greedy generation) on HotPotQA contexts, next to
//! `extractive`. `select` runs with the adapter given as the third argument (else the base).
//! Reports tokens per second (model tokens processed), milliseconds per 1k input tokens (o200k),
//! and the process RSS with the model loaded. With a fourth argument, the API root of a running
//! `condenser serve-model` on the same GGUF (e.g. `http://127.0.0.1:8090/v1`), `prune` also runs
//! through the remote backend, in the same run.
//! `cargo run --release --features local-model --example local_model_bench -- [N] [THREADS] [SELECT_ADAPTER|-] [REMOTE_URL]`

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use condenser::compress::{
    CompressInput, Compressor, Extractive, Prune, Rewrite, Select, Tokenizer,
};
use condenser::llm::{LocalModel, LocalModelConfig, RemoteModel, RemoteModelConfig, Vocabulary};
use serde_json::Value;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// (context, question) of the first `n` HotPotQA dev examples.
fn examples(n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let file = std::fs::File::open("../shared/data/hotpotqa-dev-500.jsonl")
        .context("../shared/data/hotpotqa-dev-500.jsonl")?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines().take(n) {
        let v: Value = serde_json::from_str(&line?)?;
        let context = v["context"]
            .as_array()
            .map(|paras| {
                paras
                    .iter()
                    .map(|p| {
                        let sentences: Vec<&str> = p[1]
                            .as_array()
                            .map(|s| s.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        format!(
                            "{}\n{}",
                            p[0].as_str().unwrap_or_default(),
                            sentences.concat()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n")
            })
            .unwrap_or_default();
        out.push((
            context,
            v["question"].as_str().unwrap_or_default().to_string(),
        ));
    }
    Ok(out)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(10), |v| v.parse())?;
    let threads: i32 = std::env::args().nth(2).map_or(Ok(2), |v| v.parse())?;
    let adapter = std::env::args()
        .nth(3)
        .filter(|a| a != "-")
        .map(std::path::PathBuf::from);
    let remote = std::env::args().nth(4);
    let base = "adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf";
    let rss_before = rss_mib();
    let model = Arc::new(LocalModel::load(&LocalModelConfig::cpu(
        base, threads, 8192,
    ))?);
    let rss_loaded = rss_mib();
    println!("RSS: {rss_before:.0} MiB before the model, {rss_loaded:.0} MiB with it loaded ({threads} threads)");
    let timeout = Duration::from_secs(600);
    let selector = Arc::new(LocalModel::load(&LocalModelConfig {
        lora: adapter.map(|path| (path, 1.0)),
        ..LocalModelConfig::cpu(base, threads, 8192)
    })?);
    let select = Select::new(
        selector,
        Vocabulary::load(base.as_ref())?,
        condenser::compress::select_prompt::WINDOW_TOKENS,
        timeout,
    )
    .map_err(anyhow::Error::msg)?;
    let mut compressors: Vec<(String, Arc<dyn Compressor>)> = vec![
        ("extractive".into(), Arc::new(Extractive::default())),
        ("select".into(), Arc::new(select)),
        ("prune".into(), Arc::new(Prune::new(model.clone(), timeout))),
        (
            "rewrite".into(),
            Arc::new(Rewrite::new(model, timeout, None)),
        ),
    ];
    if let Some(base_url) = remote {
        let server = RemoteModel::new(RemoteModelConfig {
            base_url,
            model: "smollm2".into(),
            api_key: None,
            max_in_flight: 4,
            context: 8192,
        });
        compressors.insert(
            3,
            (
                "prune (remote)".into(),
                Arc::new(Prune::new(Arc::new(server), timeout)),
            ),
        );
    }
    let data = examples(n)?;
    println!("| compressor | examples | ms per 1k input tokens (p50) | input tokens/s | ratio | failed |");
    println!("|---|---|---|---|---|---|");
    for (label, compressor) in &compressors {
        let (mut speeds, mut tokens_in, mut tokens_out, mut secs, mut failed) =
            (Vec::new(), 0usize, 0usize, 0.0, 0);
        for (context, question) in &data {
            let before = Tokenizer::O200k.count(context);
            let input = CompressInput {
                text: context,
                query: question,
                target_tokens: before * 35 / 100,
                tokenizer: Tokenizer::O200k,
            };
            let started = Instant::now();
            let result = compressor.compress(&input);
            let elapsed = started.elapsed().as_secs_f64();
            match result {
                Ok(out) => {
                    tokens_out += Tokenizer::O200k.count(&out);
                    tokens_in += before;
                    secs += elapsed;
                    speeds.push(elapsed * 1000.0 / (before as f64 / 1000.0));
                }
                Err(_) => failed += 1,
            }
        }
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.3} | {failed} |",
            label,
            data.len(),
            median(speeds),
            tokens_in as f64 / secs.max(1e-9),
            tokens_out as f64 / tokens_in.max(1) as f64
        );
    }
    println!("RSS after the runs: {:.0} MiB", rss_mib());
    Ok(())
}
