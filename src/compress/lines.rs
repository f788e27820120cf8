//! Line-structured text — numbered file reads (`cat -n`, `N\t…`, `N→…`), logs and option listings
//! (`--help`) — compressed by
//! whole lines, never by sentences: a sentence splitter joins two numbered lines into one, or
//! cuts one in half and loses its number, and an agent reading the result can no longer cite or
//! edit the file by line. Kept lines stay byte for byte; every run of dropped lines becomes one
//! marker line that says what was dropped (`… lines 41–97 omitted …` with the file's own
//! numbers). In a log, error lines and the lines around them rank first: they are what a
//! question about a log is usually about.

use std::ops::Range;

/// A text's line structure, when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Most lines start with a line number.
    Numbered,
    /// Most lines start with a timestamp or a log level.
    Log,
    /// A command's help or a similar listing: many lines are options (`-x`, `--long`).
    Listing,
}

/// Lines needed before a text counts as line-structured.
const MIN_LINES: usize = 8;

/// Lines per scoring window: the "paragraph" a line's neighbours make.
pub const WINDOW: usize = 12;

/// Lines on each side of an error line that share its priority.
const ERROR_CONTEXT: usize = 2;

/// The shape of `text`, when at least 70 % of its non-empty lines have it.
pub fn shape(text: &str) -> Option<Shape> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() < MIN_LINES {
        return None;
    }
    let share = |test: fn(&str) -> bool| {
        lines.iter().filter(|l| test(l)).count() as f64 / lines.len() as f64
    };
    if share(|l| line_number(l).is_some()) >= 0.7 {
        Some(Shape::Numbered)
    } else if share(is_log_line) >= 0.7 {
        Some(Shape::Log)
    } else if share(|l| l.trim_start().starts_with('-')) >= 0.25 {
        Some(Shape::Listing)
    } else {
        None
    }
}

/// The number a numbered line starts with (`  12\t`, `12→`, `12:`, `12|`).
fn line_number(line: &str) -> Option<u64> {
    let rest = line.trim_start();
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 9 {
        return None;
    }
    let after = &rest[digits..];
    let separated = after.starts_with(['\t', ':', '|', ' ']) || after.starts_with('→');
    separated.then(|| rest[..digits].parse().ok()).flatten()
}

fn is_log_line(line: &str) -> bool {
    let head: String = line.trim_start().chars().take(40).collect();
    let upper = head.to_ascii_uppercase();
    let timestamp = head.len() >= 10
        && head.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && matches!(head.as_bytes()[4], b'-' | b'/');
    timestamp
        || ["ERROR", "WARN", "INFO", "DEBUG", "TRACE", "FATAL"]
            .iter()
            .any(|level| upper.contains(level))
}

/// Whether a log line reports a failure.
fn is_error_line(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    [
        "error",
        "panic",
        "exception",
        "fatal",
        "failed",
        "traceback",
    ]
    .iter()
    .any(|word| lower.contains(word))
}

/// Each line's span, its newline included: the units lines are selected by.
pub fn spans(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        out.push(start..start + line.len());
        start += line.len();
    }
    out
}

/// Raises the scores of a numbered read's framing — the lines without a number: a wrapper's
/// tags (`<file>` … `</file>`), an end-of-file note — above every numbered line, so a wrapper
/// stays balanced and the note stays said.
pub(super) fn keep_frame(text: &str, lines: &[Range<usize>], scores: &mut [f64]) {
    let top = scores.iter().cloned().fold(0.0, f64::max) + 1.0;
    for (line, score) in lines.iter().zip(scores.iter_mut()) {
        let body = &text[line.clone()];
        if !body.trim().is_empty() && line_number(body).is_none() {
            *score += 3.0 * top;
        }
    }
}

/// Raises the scores of a log's error lines and their neighbours above every other line.
pub(super) fn prioritise_errors(text: &str, lines: &[Range<usize>], scores: &mut [f64]) {
    let top = scores.iter().cloned().fold(0.0, f64::max) + 1.0;
    let errors: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_error_line(&text[(*l).clone()]))
        .map(|(i, _)| i)
        .collect();
    for &i in &errors {
        let from = i.saturating_sub(ERROR_CONTEXT);
        let to = (i + ERROR_CONTEXT).min(lines.len().saturating_sub(1));
        for (j, score) in scores.iter_mut().enumerate().take(to + 1).skip(from) {
            // The error line itself first, then its context.
            *score += if j == i { 2.0 * top } else { top };
        }
    }
}

/// The kept lines, whole and in order, with one marker line per run of dropped lines.
pub(super) fn render(text: &str, lines: &[Range<usize>], kept: &[usize], shape: Shape) -> String {
    let mut out = String::with_capacity(text.len() / 2);
    let mut next = 0;
    let marker = |out: &mut String, from: usize, to: usize| {
        let first = &text[lines[from].clone()];
        let last = &text[lines[to].clone()];
        let numbers = (line_number(first), line_number(last));
        let said = match (shape, numbers) {
            (Shape::Numbered, (Some(a), Some(b))) if a != b => format!("… lines {a}–{b} omitted …"),
            (Shape::Numbered, (Some(a), Some(_))) => format!("… line {a} omitted …"),
            _ => format!("… {} lines omitted …", to - from + 1),
        };
        out.push_str(&said);
        out.push('\n');
    };
    for &i in kept {
        if i > next {
            marker(&mut out, next, i - 1);
        }
        out.push_str(&text[lines[i].clone()]);
        next = i + 1;
    }
    if next < lines.len() {
        marker(&mut out, next, lines.len() - 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Tokenizer;

    #[test]
    fn numbered_reads_and_logs_are_recognised() {
        let numbered: String = (1..=20)
            .map(|i| format!("{i:>6}\tlet x{i} = {i};\n"))
            .collect();
        assert_eq!(shape(&numbered), Some(Shape::Numbered));
        let arrows: String = (1..=20).map(|i| format!("{i}→fn f{i}() {{}}\n")).collect();
        assert_eq!(shape(&arrows), Some(Shape::Numbered));
        let log: String = (0..20)
            .map(|i| format!("2026-12-03T10:00:{i:02}Z INFO request {i} served\n"))
            .collect();
        assert_eq!(shape(&log), Some(Shape::Log));
        assert_eq!(shape("A paragraph of prose. Another sentence.\n"), None);
        let help: String = (0..20)
            .map(|i| format!("  --option-{i}  Sets option {i}. Default: off.\n"))
            .collect();
        assert_eq!(
            shape(&format!("Usage: tool [OPTIONS]\n\nOptions:\n{help}")),
            Some(Shape::Listing)
        );
    }

    #[test]
    fn a_numbered_read_keeps_whole_lines_its_frame_and_the_relevant_line() {
        use crate::compress::{CompressInput, Compressor, Extractive};
        let mut text = String::from("<file>\n");
        for i in 1..=200 {
            let body = if i == 137 {
                "let retry_budget = compute_retry_budget(deadline);".to_string()
            } else {
                format!("let value_{i} = helper_{i}(input_{i});")
            };
            text.push_str(&format!("{i:05}| {body}\n"));
        }
        text.push_str("\n(End of file - total 200 lines)\n</file>\n");
        let tokens = Tokenizer::O200k.count(&text);
        let out = Extractive::default()
            .compress(&CompressInput {
                text: &text,
                query: "Where is the retry budget computed?",
                target_tokens: tokens * 35 / 100,
                tokenizer: Tokenizer::O200k,
            })
            .expect("compresses");
        assert!(Tokenizer::O200k.count(&out) < tokens / 2);
        assert!(out.contains("00137| let retry_budget = compute_retry_budget(deadline);\n"));
        for frame in ["<file>\n", "(End of file - total 200 lines)\n", "</file>\n"] {
            assert!(out.contains(frame), "{frame:?} dropped");
        }
        // Every line is an original line, whole, or a marker.
        let original: std::collections::HashSet<&str> = text.lines().collect();
        for line in out.lines() {
            assert!(
                original.contains(line) || (line.starts_with("… ") && line.ends_with(" omitted …")),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_logs_error_lines_and_their_context_are_kept() {
        use crate::compress::{CompressInput, Compressor, Extractive};
        let mut text = String::new();
        for i in 0..300 {
            let line = if i == 211 {
                "2026-12-03T10:03:31Z ERROR pool exhausted: 64 of 64 connections busy".to_string()
            } else {
                format!(
                    "2026-12-03T10:0{}:{:02}Z INFO request {i} served in 12 ms",
                    i / 60,
                    i % 60
                )
            };
            text.push_str(&line);
            text.push('\n');
        }
        let tokens = Tokenizer::O200k.count(&text);
        let out = Extractive::default()
            .compress(&CompressInput {
                text: &text,
                query: "Why did requests fail?",
                target_tokens: tokens / 5,
                tokenizer: Tokenizer::O200k,
            })
            .expect("compresses");
        assert!(out.contains("ERROR pool exhausted: 64 of 64 connections busy\n"));
        assert!(out.contains("INFO request 210 served") && out.contains("INFO request 212 served"));
        assert!(out.contains(" lines omitted …"));
    }

    #[test]
    fn dropped_runs_become_markers_with_the_files_numbers() {
        let text: String = (1..=10).map(|i| format!("{i:>4}\tline {i}\n")).collect();
        let out = render(&text, &spans(&text), &[0, 4, 5], Shape::Numbered);
        assert_eq!(
            out,
            "   1\tline 1\n… lines 2–4 omitted …\n   5\tline 5\n   6\tline 6\n… lines 7–10 omitted …\n"
        );
    }
}
