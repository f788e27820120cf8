//! Compression quality on agent-shaped contexts, built from real text on this machine:
//! - **file reads**: Rust source files from the local cargo registry, numbered as Claude Code's
//!   Read tool numbers them (`{n:>6}→{line}`), asked where a given function is defined;
//! - **help**: `--help` pages of installed commands, asked what a given option does;
//! - **logs**: 400 lines of service log with one injected error, asked why requests failed.
//!
//! Each context is the tool result of a three-message agent turn (question, tool call, tool
//! result) sent through the compression pipeline exactly as the proxy sends it. A case counts as
//! recalled when its answer line is still in the tool result, whole. Prints, per shape and
//! compressor at each ratio, answer-line recall and the share of tool-result tokens saved.
//!
//! `cargo run --release --example agent_bench -- [CASES_PER_SHAPE] [RATIOS]`
//! (defaults: 40 and `0.35,0.5`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use condenser::compress::{
    build_plain, CompressionMode, CompressorKind, Pipeline, PipelineSettings, Role, Tokenizer,
};
use serde_json::{json, Value};

/// One agent turn: the user's question, the tool result, and the line that answers it.
struct Case {
    shape: &'static str,
    question: String,
    result: String,
    answer_line: String,
}

/// Rust files of the local cargo registry, in a fixed order (sorted paths).
fn registry_files(limit: usize) -> Vec<PathBuf> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let mut files = Vec::new();
    let mut stack = vec![home.join("registry").join("src")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries.into_iter().rev() {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    // Every n-th file: many crates, not the first crate's every file.
    let step = (files.len() / (limit * 4)).max(1);
    files.into_iter().step_by(step).collect()
}

/// A file read: a numbered file whose question names a function defined once in it.
fn file_case(path: &Path) -> Option<Case> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    if !(150..=1500).contains(&lines.len()) {
        return None;
    }
    let mut definitions: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let rest = l
                .trim_start()
                .strip_prefix("pub fn ")
                .or(l.trim_start().strip_prefix("fn "))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (name.len() >= 6).then_some((i, name))
        })
        .collect();
    definitions.retain(|(_, name)| text.matches(&format!("fn {name}")).count() == 1);
    let (index, name) = definitions.get(definitions.len() / 2)?.clone();
    let numbered: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{:>6}→{l}\n", i + 1))
        .collect();
    Some(Case {
        shape: "file read",
        question: format!("On which line is the function `{name}` defined, and what does it take?"),
        answer_line: format!("{:>6}→{}", index + 1, lines[index]),
        result: numbered,
    })
}

/// A help page: a question about one long option it documents.
fn help_case(command: &str) -> Option<Case> {
    let out = Command::new(command).arg("--help").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 40 {
        return None;
    }
    let options: Vec<(&str, String)> = lines
        .iter()
        .filter_map(|l| {
            let at = l.find("--")?;
            let flag: String = l[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '=' | ',' | ']' | ')' | '['))
                .collect();
            (flag.len() > 4 && l.trim().len() > flag.len() + 10).then_some((*l, flag))
        })
        .collect();
    let (line, flag) = options.get(options.len() * 2 / 3)?;
    Some(Case {
        shape: "help",
        question: format!("What does the `{flag}` option of {command} do?"),
        answer_line: line.to_string(),
        result: text.clone(),
    })
}

/// A log: 400 lines of routine requests with one error at a position that varies by case.
fn log_case(seed: usize) -> Case {
    let failing = 40 + (seed * 97) % 320;
    let mut text = String::new();
    let mut answer_line = String::new();
    for i in 0..400 {
        let line = if i == failing {
            format!(
                "2026-12-03T10:{:02}:{:02}Z ERROR upstream pool exhausted: {} of {} connections busy (shard {})",
                i / 60,
                i % 60,
                64 + seed % 7,
                64 + seed % 7,
                seed % 5
            )
        } else {
            format!(
                "2026-12-03T10:{:02}:{:02}Z INFO request {} GET /v1/items/{} served in {} ms",
                i / 60,
                i % 60,
                1000 + i,
                (i * 31 + seed) % 997,
                5 + (i * 7 + seed) % 40
            )
        };
        if i == failing {
            answer_line.clone_from(&line);
        }
        text.push_str(&line);
        text.push('\n');
    }
    Case {
        shape: "log",
        question: "Why did some requests fail?".into(),
        result: text,
        answer_line,
    }
}

fn cases(per_shape: usize) -> Vec<Case> {
    let mut all: Vec<Case> = registry_files(per_shape)
        .iter()
        .filter_map(|p| file_case(p))
        .take(per_shape)
        .collect();
    let commands = [
        "cargo", "git", "curl", "tar", "grep", "ls", "sort", "python3", "node", "npm", "rustc",
        "find", "sed", "ssh", "date", "du", "cp", "rsync", "wget", "gzip", "ps", "df", "awk",
    ];
    all.extend(commands.iter().filter_map(|c| help_case(c)).take(per_shape));
    all.extend((0..per_shape).map(log_case));
    all
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let per_shape: usize = args.next().map_or(Ok(40), |n| n.parse())?;
    let ratios: Vec<f64> = args
        .next()
        .unwrap_or_else(|| "0.35,0.5".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let kinds = [
        CompressorKind::named("truncate"),
        CompressorKind::named("extractive"),
    ];
    let mut compressors = HashMap::new();
    for kind in kinds.iter().flatten() {
        let compressor =
            build_plain(*kind).ok_or_else(|| anyhow::anyhow!("{} is not plain", kind.name()))?;
        compressors.insert(*kind, compressor);
    }
    let pipeline = Pipeline::new(64 << 20, compressors);
    let cases = cases(per_shape);
    let tokenizer = Tokenizer::O200k;
    let roles = [Role::Tool];
    println!(
        "| shape | cases | compressor | ratio | answer-line recall | tool-result tokens saved |"
    );
    println!("|---|---|---|---|---|---|");
    for shape in ["file read", "help", "log"] {
        let shaped: Vec<&Case> = cases.iter().filter(|c| c.shape == shape).collect();
        for kind in kinds.iter().flatten() {
            for &ratio in &ratios {
                let settings = PipelineSettings {
                    roles: &roles,
                    min_tokens: 256,
                    target_ratio: ratio,
                    timeout_ms: 60_000,
                    mode: CompressionMode::Inline,
                    scope: "",
                };
                let (mut recalled, mut before, mut after) = (0, 0, 0);
                for case in &shaped {
                    let mut messages: Vec<Value> = vec![
                        json!({"role": "user", "content": case.question}),
                        json!({"role": "assistant", "content": null, "tool_calls": [
                            {"id": "t1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]}),
                        json!({"role": "tool", "tool_call_id": "t1", "content": case.result}),
                    ];
                    pipeline
                        .apply(&mut messages, *kind, settings, tokenizer)
                        .await;
                    let kept = messages[2]["content"].as_str().unwrap_or_default();
                    before += tokenizer.count(&case.result);
                    after += tokenizer.count(kept);
                    if kept.lines().any(|l| l == case.answer_line) {
                        recalled += 1;
                    } else if std::env::var_os("AGENT_BENCH_MISSES").is_some() {
                        eprintln!(
                            "miss ({shape}, {}, {ratio}): {:?} — {:?}",
                            kind.name(),
                            case.question,
                            case.answer_line
                        );
                    }
                }
                println!(
                    "| {shape} | {} | {} | {ratio} | {:.3} | {:.1} % |",
                    shaped.len(),
                    kind.name(),
                    recalled as f64 / shaped.len().max(1) as f64,
                    100.0 * (1.0 - after as f64 / before.max(1) as f64)
                );
            }
        }
    }
    Ok(())
}
