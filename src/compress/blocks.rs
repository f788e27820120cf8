//! What a text block keeps verbatim when it is compressed, by kind: a user block its question
//! sentences and final paragraph, a system or developer block its instructions (first
//! paragraph, headings, list items, tag lines, sentences that tell the model what to do), a tool
//! result its structure (JSON whole, wrapper tag lines). The rest of the block is what a
//! compressor may shorten. `policy` decides which blocks are compressed; this file how each is
//! cut into kept and compressible pieces.

use crate::text::{final_paragraph_start, sentences, split_code_fences};

/// One span of a message's text after planning.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub compress: bool,
}

/// What kind of text a block is, for what it keeps verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    /// The last user turn's question block: its question, whole, and its question sentences.
    Question,
    /// An earlier user block: its final paragraph when short (`kept_tail_start`), and its
    /// question sentences.
    User,
    /// A system or developer block: its instructions ([`is_instruction`]).
    Instructions,
    /// Anything else (tool results): all of it may be compressed.
    Reference,
}

/// A compressible block cut into pieces: fenced code kept unless the compressor handles code;
/// in a user block, the final paragraph (the question, or the last thing said) and every
/// question sentence kept verbatim.
pub(super) fn pieces_of(text: &str, kind: Block, handles_code: bool) -> Vec<Piece> {
    if kind == Block::Reference && is_json(text) {
        // A JSON tool result must stay JSON: sentence selection would break its structure.
        return vec![Piece {
            text: text.to_string(),
            compress: false,
        }];
    }
    let (body, tail) = match kind {
        Block::Question => text.split_at(question_start(text)),
        Block::User => text.split_at(kept_tail_start(text)),
        Block::Instructions | Block::Reference => (text, ""),
    };
    // An instruction block's first paragraph says what the model is: kept whole.
    let first_paragraph_end = match kind {
        Block::Instructions => first_paragraph_end(body),
        _ => 0,
    };
    let mut pieces = Vec::new();
    for block in split_code_fences(body) {
        let span = &body[block.span];
        if block.is_code {
            pieces.push(Piece {
                text: span.to_string(),
                compress: handles_code,
            });
        } else {
            let offset = span.as_ptr() as usize - body.as_ptr() as usize;
            push_sentences(span, &mut pieces, |start, sentence| match kind {
                Block::Question | Block::User => is_question(sentence),
                Block::Instructions => {
                    let at = offset + start;
                    at < first_paragraph_end
                        || is_structural(line_at(body, at))
                        || is_instruction(sentence)
                }
                // A wrapper's tag lines stay, so what is kept of it stays balanced.
                Block::Reference => line_at(body, offset + start).trim_start().starts_with('<'),
            });
        }
    }
    if !tail.is_empty() {
        pieces.push(Piece {
            text: tail.to_string(),
            compress: false,
        });
    }
    pieces
}

/// Whether a block is one JSON object or array.
fn is_json(text: &str) -> bool {
    let trimmed = text.trim();
    (trimmed.starts_with('{') || trimmed.starts_with('['))
        && serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok()
}

/// A question: a sentence ending in `?`.
fn is_question(sentence: &str) -> bool {
    sentence.trim_end().ends_with('?')
}

/// Words that make a sentence of a system prompt an instruction rather than reference material:
/// who the model is and what it must, may or may not do.
const INSTRUCTION_WORDS: &[&str] = &[
    "you",
    "your",
    "you're",
    "yourself",
    "must",
    "never",
    "always",
    "don't",
    "do not",
    "only",
    "should",
    "avoid",
    "ensure",
    "make sure",
    "important",
    "required",
    "forbidden",
    "prohibited",
    "rules",
    "instructions",
    "please",
    "refuse",
];

/// The line of `text` holding byte `at`.
fn line_at(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    &text[start..end]
}

/// Whether a line is structure a prompt's author wrote for the model: a heading, a list item
/// (rule lists), or an XML-like tag.
fn is_structural(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with('#')
        || line.starts_with('<')
        || line.starts_with("- ")
        || line.starts_with("* ")
        || line.starts_with('•')
        || line.split_once(['.', ')']).is_some_and(|(n, _)| {
            !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Whether a sentence of a system or developer block is an instruction: one that says who the
/// model is or what it must, may or may not do ([`INSTRUCTION_WORDS`]).
pub(super) fn is_instruction(sentence: &str) -> bool {
    let line = sentence.trim();
    if line.is_empty() {
        return false;
    }
    let lower = line.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    INSTRUCTION_WORDS.iter().any(|marker| {
        if marker.contains(' ') {
            lower.contains(marker)
        } else {
            words.contains(marker)
        }
    })
}

/// Byte offset where a block's first paragraph ends (the whole block when it has one); a
/// paragraph over [`MAX_KEPT_TAIL_BYTES`] (a document without paragraph breaks) ends, for this
/// purpose, with its first sentence.
fn first_paragraph_end(text: &str) -> usize {
    let start = text.len() - text.trim_start().len();
    let end = text[start..]
        .find("\n\n")
        .map_or(text.len(), |end| start + end);
    if end - start <= MAX_KEPT_TAIL_BYTES {
        return end;
    }
    sentences(&text[start..end])
        .first()
        .map_or(end, |s| start + s.end)
}

/// Longest final paragraph of a user block kept whole; a longer one (a document pasted last, or
/// one without paragraph breaks) keeps only its last sentence.
const MAX_KEPT_TAIL_BYTES: usize = 1024;

/// Where the verbatim tail of a user block starts: its question ([`question_start`]) when that
/// is short, else its last sentence.
fn kept_tail_start(text: &str) -> usize {
    let start = question_start(text);
    if text.len() - start <= MAX_KEPT_TAIL_BYTES {
        return start;
    }
    sentences(text.trim_end()).last().map_or(start, |s| s.start)
}

/// Pushes `text` as pieces by sentence, those `keep(start, sentence)` chooses kept verbatim and
/// the runs between them compressible; adjacent runs of one kind are merged.
fn push_sentences(text: &str, pieces: &mut Vec<Piece>, keep: impl Fn(usize, &str) -> bool) {
    for span in sentences(text) {
        let start = span.start;
        let sentence = &text[span];
        let keep = keep(start, sentence);
        match pieces.last_mut() {
            Some(last) if last.compress != keep => last.text.push_str(sentence),
            _ => pieces.push(Piece {
                text: sentence.to_string(),
                compress: !keep,
            }),
        }
    }
}

/// Byte offset where the question at the end of a long user message starts.
pub(super) fn question_start(text: &str) -> usize {
    let paragraph = final_paragraph_start(text);
    if paragraph > 0 {
        return paragraph;
    }
    let body = text.trim_end();
    if let Some(newline) = body.rfind('\n') {
        return newline + 1;
    }
    sentences(body).last().map_or(0, |s| s.start)
}
