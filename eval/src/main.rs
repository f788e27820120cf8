//! `condenser-eval`: offline measurements of condenser's compressors.

mod hotpotqa;
mod metrics;
mod recall;

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
    /// Token ratio, gold-answer recall, supporting-sentence recall and speed on HotPotQA.
    Recall {
        #[arg(long, default_value = "../shared/data/hotpotqa-dev-500.jsonl")]
        input: PathBuf,
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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Recall {
            input,
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
            let examples = hotpotqa::load(&input, limit)?;
            eprintln!(
                "loaded {} examples from {}",
                examples.len(),
                input.display()
            );
            let mut rows = Vec::new();
            for name in &compressors {
                let kind =
                    kind_from_name(name).with_context(|| format!("unknown compressor `{name}`"))?;
                let compressor: Arc<dyn Compressor> = match kind {
                    CompressorKind::Extractive => Arc::new(extractive.clone()),
                    other => build(other),
                };
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
