//! `condenser-eval`: offline measurements of condenser's compressors.

mod downstream;
mod equivalence;
mod hotpotqa;
mod loaders;
mod metrics;
mod ratio;
mod recall;
mod record;
mod report;
mod task_model;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use condenser::compress::registry::{self, Builder, ModelHandle, ModelParts};
use condenser::compress::{
    Compressor, CompressorKind, Extractive, ModelSettings, Select, Tokenizer,
};
use condenser::llm::{LocalModel, Vocabulary};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "condenser-eval",
    about = "Offline measurements of condenser's compressors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Converts an official benchmark file into normalised records (JSONL).
    Prepare {
        /// hotpotqa | qasper | nq | ds1000
        #[arg(long)]
        benchmark: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long)]
        limit: Option<usize>,
        /// Shuffle with this seed before `--limit` (deterministic).
        #[arg(long)]
        seed: Option<u64>,
        /// Sample whole documents (records sharing a context, e.g. a Qasper paper) and keep at
        /// most this many questions of each, back to back: a local task model then prefills
        /// each document once.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        per_document: Option<u64>,
    },
    /// Token ratio per compressor and target, in o200k and cl100k, on prepared records.
    Ratio {
        #[arg(long)]
        input: PathBuf,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "identity,truncate,extractive"
        )]
        compressors: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "0.35,0.5")]
        ratios: Vec<f64>,
    },
    /// Token ratio, gold-answer recall, evidence recall and speed.
    Recall {
        #[arg(long, default_value = "../shared/data/hotpotqa-dev-500.jsonl")]
        input: PathBuf,
        /// Format of `--input`: hotpotqa | qasper | nq | ds1000 (official files) or prepared.
        #[arg(long, default_value = "hotpotqa")]
        benchmark: String,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "identity,truncate,extractive"
        )]
        compressors: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "0.35,0.5")]
        ratios: Vec<f64>,
        #[arg(long)]
        limit: Option<usize>,
        /// Tokenizer: o200k or cl100k.
        #[arg(long, default_value = "o200k")]
        tokenizer: String,
        /// Extractive tuning: weight of the paragraph's relevance.
        #[arg(long)]
        paragraph_weight: Option<f64>,
        /// Extractive tuning: weight of second-hop terms.
        #[arg(long)]
        expansion_weight: Option<f64>,
        /// Extractive tuning: bonus of a paragraph's first sentence.
        #[arg(long)]
        lead_bonus: Option<f64>,
        /// GGUF model of the `prune` compressor.
        #[arg(long, default_value = DEFAULT_COMPRESSOR_MODEL)]
        compressor_model: PathBuf,
        /// GGUF LoRA adapter applied to the compressor model (e.g. a trained `select` adapter).
        #[arg(long)]
        compressor_lora: Option<PathBuf>,
        /// `select`: weight of extractive's ranking blended with the model's.
        #[arg(long, default_value_t = condenser::compress::DEFAULT_BLEND)]
        select_blend: f64,
        /// Writes a ratio-vs-recall plot (SVG).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Answers every example with a task model, full context vs each compressed context.
    Downstream {
        /// Records written by `prepare`.
        #[arg(long)]
        input: PathBuf,
        /// Answers, one JSON line each (appended to with --resume).
        #[arg(long)]
        output: PathBuf,
        /// `local:PATH.gguf`, or `URL#MODEL` for an OpenAI-compatible endpoint (e.g. condenser).
        #[arg(long)]
        task_model: String,
        #[arg(long, value_delimiter = ',', default_value = "truncate,extractive")]
        compressors: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "0.35,0.5")]
        ratios: Vec<f64>,
        #[arg(long)]
        limit: Option<usize>,
        /// Continue an existing output file, skipping answers already in it.
        #[arg(long)]
        resume: bool,
        /// Stop before the estimated spend (this run plus the resumed file) passes this many USD.
        #[arg(long)]
        max_cost: Option<f64>,
        /// Task-model price, USD per million input tokens (remote models).
        #[arg(long, default_value_t = 0.0)]
        price_input: f64,
        /// Task-model price, USD per million output tokens (remote models).
        #[arg(long, default_value_t = 0.0)]
        price_output: f64,
        /// Answers in flight at once (local models: one llama.cpp context each).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// CPU threads per local task-model context.
        #[arg(long, default_value_t = 2)]
        threads: i32,
        /// Context window of the local task model, in tokens.
        #[arg(long, default_value_t = 8192)]
        context: u32,
        /// GGUF model of the `prune` compressor.
        #[arg(long, default_value = DEFAULT_COMPRESSOR_MODEL)]
        compressor_model: PathBuf,
        /// GGUF LoRA adapter applied to the compressor model (e.g. a trained `select` adapter).
        #[arg(long)]
        compressor_lora: Option<PathBuf>,
        /// `select`: weight of extractive's ranking blended with the model's.
        #[arg(long, default_value_t = condenser::compress::DEFAULT_BLEND)]
        select_blend: f64,
    },
    /// Tables (Compressed EM, ΔEM, Compressed F1, ΔF1, Ratio, Cost) and a ratio-vs-ΔF1 plot from
    /// downstream answer files.
    Report {
        /// Answer files written by `downstream` (any number, any task models).
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Where to write the ratio-vs-ΔF1 SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        #[arg(long, default_value = "ratio vs ΔF1")]
        title: String,
    },
    /// The shadow scorer's gates over answer pairs: offline runs and/or a live shadow store.
    Equivalence {
        /// Answer files written by `downstream`.
        #[arg(long, num_args = 0..)]
        pairs: Vec<PathBuf>,
        /// A shadow store (`condenser-shadow.db`, or a postgres:// URL) whose compression
        /// samples are scored too.
        #[arg(long)]
        shadow: Option<String>,
        /// Only these task models (substring match); all when absent.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// all-MiniLM-L6-v2 directory for the embedding gate.
        #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
        embedding_model: PathBuf,
        /// Judge gate model: `local:PATH.gguf` or `URL#MODEL`; no judge gate when absent.
        #[arg(long)]
        judge: Option<String>,
    },
}

const DEFAULT_COMPRESSOR_MODEL: &str = "adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Records from an official file, or from a file `prepare` wrote.
fn records(benchmark: &str, input: &std::path::Path) -> anyhow::Result<Vec<record::Record>> {
    if benchmark == "prepared" {
        record::read_jsonl(input)
    } else {
        loaders::load(benchmark, input)
    }
}

/// The local model of the model-backed compressors (`prune`, `rewrite`, `select`): settings as a
/// `[compressors.NAME]` section would give them, loaded once, on first use, and shared.
struct CompressorModel {
    settings: ModelSettings,
    loaded: Option<Arc<LocalModel>>,
    /// One `select` whose scorings every blend shares (`select@W` on the command line).
    select: Option<Select>,
}

impl CompressorModel {
    fn new(path: PathBuf, lora: Option<PathBuf>, select_blend: f64) -> Self {
        let settings = ModelSettings {
            model: path,
            remote: None,
            threads: 2,
            context: 8192,
            workers: 1,
            queue: 64,
            // Offline there is no request deadline: the model may take as long as it needs.
            timeout_ms: 600_000,
            gpu_layers: 0,
            lora: lora.map(|path| (path, 1.0)),
            // No fallback: measure the model's own rewrites (rejected ones count as failed open).
            fallback: None,
            blend: Some(select_blend),
        };
        Self {
            settings,
            loaded: None,
            select: None,
        }
    }

    /// `select` blended with weight `blend`; all blends share one memo of every scoring, so
    /// each text is scored by the model once however many blends are measured.
    fn select(&mut self, blend: f64) -> anyhow::Result<Select> {
        if self.select.is_none() {
            let select = Select::new(
                self.get()?,
                Vocabulary::load(&self.settings.model)?,
                condenser::compress::select_prompt::WINDOW_TOKENS,
                Duration::from_millis(self.settings.timeout_ms),
            )
            .map_err(anyhow::Error::msg)?
            .with_memo_capacity(100_000);
            self.select = Some(select);
        }
        Ok(self
            .select
            .clone()
            .context("select is loaded")?
            .with_blend(blend))
    }

    fn get(&mut self) -> anyhow::Result<Arc<LocalModel>> {
        if let Some(model) = &self.loaded {
            return Ok(model.clone());
        }
        let model = registry::load_model("eval", &self.settings).map_err(anyhow::Error::msg)?;
        self.loaded = Some(model.clone());
        Ok(model)
    }
}

/// A compressor by name, built by the proxy's registry, except two offline conveniences:
/// `extractive` with the command line's tuning, and `select`/`select@BLEND` sharing one memo.
fn compressor_for(
    name: &str,
    extractive: &Extractive,
    local: &mut CompressorModel,
) -> anyhow::Result<Arc<dyn Compressor>> {
    if let Some(blend) = name.strip_prefix("select@") {
        let blend: f64 = blend
            .parse()
            .with_context(|| format!("`{name}`: select@BLEND takes a weight from 0 to 1"))?;
        return Ok(Arc::new(local.select(blend)?));
    }
    let kind = CompressorKind::named(name).with_context(|| {
        format!(
            "unknown compressor `{name}`; registered: {}",
            registry::names().join(", ")
        )
    })?;
    match (kind.name(), kind.spec().map(|s| &s.build)) {
        ("extractive", _) => Ok(Arc::new(extractive.clone())),
        ("select", _) => {
            let blend = local
                .settings
                .blend
                .unwrap_or(condenser::compress::DEFAULT_BLEND);
            Ok(Arc::new(local.select(blend)?))
        }
        (_, Some(Builder::Plain(build))) => Ok(build()),
        (_, Some(Builder::Model(build))) => {
            let model = local.get()?;
            let parts = ModelParts {
                model: ModelHandle::Local(model),
                settings: &local.settings,
            };
            build(&parts).map_err(anyhow::Error::msg)
        }
        (_, None) => anyhow::bail!("`{name}` is not registered"),
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Report { input, plot, title } => {
            let mut rows = Vec::new();
            for path in &input {
                rows.extend(downstream::read_rows(path)?);
            }
            let table = report::summarise(&rows);
            print!("{}", report::markdown(&table));
            if let Some(by_kind) = report::markdown_by_answer_type(&rows, &table) {
                print!("\nCompressed F1 by answer kind, `F1 (ΔF1, n)`:\n\n{by_kind}");
            }
            if let Some(path) = plot {
                report::plot(&table, &path, &title)?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Equivalence {
            pairs,
            shadow,
            models,
            embedding_model,
            judge,
        } => {
            let mut all = Vec::new();
            for path in &pairs {
                all.extend(equivalence::pairs_from_runs(
                    &downstream::read_rows(path)?,
                    &models,
                ));
            }
            if let Some(store) = &shadow {
                all.extend(equivalence::pairs_from_shadow(store)?);
            }
            anyhow::ensure!(
                !all.is_empty(),
                "no answer pairs: pass --pairs and/or --shadow"
            );
            let embedder = condenser::equivalence::Embedder::load(&embedding_model)
                .with_context(|| "run scripts/fetch-embedder")?;
            let judged = judge.is_some();
            let judge: Option<Arc<dyn condenser::equivalence::JudgeClient>> = match judge {
                Some(spec) => Some(Arc::new(equivalence::TaskModelJudge(Arc::new(
                    task_model::TaskModel::open(&spec, 2, 8192, 1)?,
                )))),
                None => None,
            };
            let parts = condenser::equivalence::GateParts {
                embedder: Some(Arc::new(embedder)),
                judge,
            };
            let scorer = condenser::equivalence::Scorer::new(
                &parts,
                condenser::equivalence::Thresholds::default(),
            );
            eprintln!("scoring {} pairs", all.len());
            let runtime = tokio::runtime::Runtime::new()?;
            let table = runtime.block_on(equivalence::run(&all, &scorer));
            print!("{}", equivalence::markdown(&table, judged));
        }
        Command::Prepare {
            benchmark,
            input,
            output,
            limit,
            seed,
            per_document,
        } => {
            let all = loaders::load(&benchmark, &input)?;
            let total = all.len();
            let chosen = match per_document {
                Some(k) => record::sample_by_document(all, limit, seed, k as usize),
                None => record::sample(all, limit, seed),
            };
            record::write_jsonl(&output, &chosen)?;
            eprintln!(
                "{benchmark}: wrote {} of {total} records to {}",
                chosen.len(),
                output.display()
            );
        }
        Command::Ratio {
            input,
            compressors,
            ratios,
        } => {
            let records = record::read_jsonl(&input)?;
            let mut rows = Vec::new();
            for name in &compressors {
                let compressor = compressor_for(
                    name,
                    &Extractive::default(),
                    &mut CompressorModel::new(
                        DEFAULT_COMPRESSOR_MODEL.into(),
                        None,
                        condenser::compress::DEFAULT_BLEND,
                    ),
                )?;
                let targets: &[f64] = if name == "identity" { &[1.0] } else { &ratios };
                for &target in targets {
                    eprintln!("  {name} @ {target}");
                    rows.push(ratio::run(&records, compressor.as_ref(), target)?);
                }
            }
            print!("{}", ratio::markdown(&rows));
        }
        Command::Recall {
            input,
            benchmark,
            compressors,
            ratios,
            limit,
            tokenizer,
            paragraph_weight,
            expansion_weight,
            lead_bonus,
            compressor_model,
            compressor_lora,
            select_blend,
            plot,
        } => {
            let mut local = CompressorModel::new(compressor_model, compressor_lora, select_blend);
            let defaults = Extractive::default();
            let extractive = Extractive {
                paragraph_weight: paragraph_weight.unwrap_or(defaults.paragraph_weight),
                expansion_weight: expansion_weight.unwrap_or(defaults.expansion_weight),
                lead_bonus: lead_bonus.unwrap_or(defaults.lead_bonus),
            };
            let tokenizer = match tokenizer.as_str() {
                "o200k" => Tokenizer::O200k,
                "cl100k" => Tokenizer::Cl100k,
                other => anyhow::bail!("unknown tokenizer `{other}` (o200k | cl100k)"),
            };
            let examples = record::sample(records(&benchmark, &input)?, limit, None);
            eprintln!(
                "loaded {} examples from {}",
                examples.len(),
                input.display()
            );
            let mut rows = Vec::new();
            for name in &compressors {
                let compressor = compressor_for(name, &extractive, &mut local)?;
                let ratios: &[f64] = if name == "identity" { &[1.0] } else { &ratios };
                rows.extend(recall::run(
                    &examples,
                    name,
                    compressor.as_ref(),
                    ratios,
                    tokenizer,
                )?);
            }
            print!("{}", recall::markdown(&rows, examples.len()));
            if let Some(path) = plot {
                recall::plot(&rows, &path, &format!("{benchmark}: ratio vs recall"))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Downstream {
            input,
            output,
            task_model,
            compressors,
            ratios,
            limit,
            resume,
            max_cost,
            price_input,
            price_output,
            concurrency,
            threads,
            context,
            compressor_model,
            compressor_lora,
            select_blend,
        } => {
            let records = record::sample(record::read_jsonl(&input)?, limit, None);
            let mut local = CompressorModel::new(compressor_model, compressor_lora, select_blend);
            let compressors = compressors
                .iter()
                .map(|name| {
                    Ok((
                        name.clone(),
                        compressor_for(name, &Extractive::default(), &mut local)?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let model = task_model::TaskModel::open(&task_model, threads, context, concurrency)?;
            eprintln!("task model {} on {} records", model.name(), records.len());
            let summary = downstream::run(
                &records,
                &model,
                &downstream::Settings {
                    compressors,
                    ratios,
                    output: &output,
                    resume,
                    max_cost,
                    price: task_model::Price {
                        input: price_input,
                        output: price_output,
                    },
                    concurrency,
                },
            )?;
            eprintln!(
                "answered {}, already done {}, failed {}, spent ${:.4}{}",
                summary.answered,
                summary.skipped,
                summary.failed,
                summary.spent_usd,
                if summary.stopped_by_cap {
                    " — stopped at --max-cost"
                } else {
                    ""
                }
            );
            // Scripts and CI must be able to tell a run whose answers failed.
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} answers failed (see the errors above); rerun with --resume to retry them",
                    summary.failed
                );
            }
        }
    }
    Ok(())
}
