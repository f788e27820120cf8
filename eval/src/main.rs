//! `condenser-eval`: offline measurements of condenser's compressors.

mod hotpotqa;
mod loaders;
mod metrics;
mod ratio;
mod recall;
mod record;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

use condenser::compress::{build, kind_from_name, Compressor, Extractive, Tokenizer};
use condenser::config::CompressorKind;

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
    },
}

/// Records from an official file, or from a file `prepare` wrote.
fn records(benchmark: &str, input: &std::path::Path) -> anyhow::Result<Vec<record::Record>> {
    if benchmark == "prepared" {
        record::read_jsonl(input)
    } else {
        loaders::load(benchmark, input)
    }
}

fn compressor_for(name: &str, extractive: &Extractive) -> anyhow::Result<Arc<dyn Compressor>> {
    let kind = kind_from_name(name).with_context(|| format!("unknown compressor `{name}`"))?;
    match kind {
        CompressorKind::Extractive => Ok(Arc::new(extractive.clone())),
        other => build(other).with_context(|| {
            format!("`{name}` needs a local model; condenser-eval does not load one yet")
        }),
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Prepare {
            benchmark,
            input,
            output,
            limit,
            seed,
        } => {
            let all = loaders::load(&benchmark, &input)?;
            let total = all.len();
            let chosen = record::sample(all, limit, seed);
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
                let compressor = compressor_for(name, &Extractive::default())?;
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
        } => {
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
                let compressor = compressor_for(name, &extractive)?;
                let ratios: &[f64] = if name == "identity" { &[1.0] } else { &ratios };
                for &ratio in ratios {
                    rows.push(recall::run(
                        &examples,
                        compressor.as_ref(),
                        ratio,
                        tokenizer,
                    )?);
                }
            }
            print!("{}", recall::markdown(&rows, examples.len()));
        }
    }
    Ok(())
}
