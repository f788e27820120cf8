//! The prompt layout of the `select` compressor, shared by the compressor (llama.cpp) and
//! `condenser-train` (candle) so a trained adapter sees at serving time exactly the token
//! sequence it was trained on: the question first, then one sentence per line. The keep/drop
//! decision for a sentence is read at the newline token that ends it, from the logits of two
//! tokens of the LM head (` yes` / ` no`): one prefill pass, nothing generated.
//!
//! Each piece is tokenized on its own and the pieces are concatenated, so a sentence's tokens
//! never merge with its neighbours' and its marker is always the same token.

use std::ops::Range;

use crate::text::sentences;

/// Put before the text; the question is what the model scores relevance against.
pub fn prefix(question: &str) -> String {
    format!(
        "Question: {}\nMark each line of the context that helps to answer the question.\nContext:\n",
        one_line(question)
    )
}

/// Tokens per prefill window, in training and in serving alike: the adapter is trained on
/// windows of this size and scores in windows of this size. Short windows also keep attention
/// cheap on a CPU (measured: a 2k-token window prefills at half the speed of two 1k ones).
pub const WINDOW_TOKENS: usize = 1024;

/// Ends every sentence; the logits read at this token decide the sentence.
pub const MARKER: &str = "\n";
/// The two LM-head tokens whose logit difference is a sentence's keep score.
pub const KEEP: &str = " yes";
pub const DROP: &str = " no";

/// Token ids of the fixed pieces, from the model's own tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectVocab {
    pub marker: i32,
    pub keep: i32,
    pub drop: i32,
}

impl SelectVocab {
    /// `tokenize(text)` without special tokens; each piece must be one token.
    pub fn new(tokenize: &dyn Fn(&str) -> Vec<i32>) -> Result<Self, String> {
        let single = |piece: &str| match tokenize(piece).as_slice() {
            [one] => Ok(*one),
            other => Err(format!(
                "`{}` is {} tokens in this model's vocabulary; select needs one",
                piece.escape_debug(),
                other.len()
            )),
        };
        Ok(Self {
            marker: single(MARKER)?,
            keep: single(KEEP)?,
            drop: single(DROP)?,
        })
    }
}

/// One prefill window: token ids and, per sentence in it, the position of its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectWindow {
    pub tokens: Vec<i32>,
    pub markers: Vec<usize>,
}

/// The sentences of `text` as the select compressor scores them: byte spans that tile the text.
pub fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    sentences(text)
}

/// A sentence as it is shown to the model: trimmed, on one line.
pub fn one_line(sentence: &str) -> String {
    let mut out = String::with_capacity(sentence.len() + 1);
    out.push(' ');
    for word in sentence.split_whitespace() {
        if out.len() > 1 {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Lays out the prompt windows: the tokenized prefix, then sentences with their markers, a new
/// window (with the prefix again) whenever the next sentence would pass `max_tokens`. A
/// sentence longer than a window is cut to fit (its marker still ends it).
/// `tokenize_prefix` adds the model's special tokens (BOS); `tokenize` adds none.
pub fn windows(
    tokenize_prefix: &dyn Fn(&str) -> Vec<i32>,
    tokenize: &dyn Fn(&str) -> Vec<i32>,
    vocab: &SelectVocab,
    question: &str,
    sentences: &[&str],
    max_tokens: usize,
) -> Vec<SelectWindow> {
    let head = tokenize_prefix(&prefix(question));
    let room = max_tokens.saturating_sub(head.len() + 1).max(8);
    let mut out = Vec::new();
    let mut current = SelectWindow {
        tokens: head.clone(),
        markers: Vec::new(),
    };
    for sentence in sentences {
        let mut tokens = tokenize(&one_line(sentence));
        tokens.truncate(room);
        if current.tokens.len() + tokens.len() + 1 > max_tokens && !current.markers.is_empty() {
            out.push(std::mem::replace(
                &mut current,
                SelectWindow {
                    tokens: head.clone(),
                    markers: Vec::new(),
                },
            ));
        }
        current.tokens.extend(tokens);
        current.markers.push(current.tokens.len());
        current.tokens.push(vocab.marker);
    }
    if !current.markers.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(text: &str) -> Vec<i32> {
        text.chars().map(|c| c as i32).collect()
    }

    #[test]
    fn each_sentence_ends_with_its_marker_and_windows_repeat_the_prefix() {
        let vocab = SelectVocab {
            marker: 10,
            keep: 1,
            drop: 2,
        };
        let head = prefix("q?").chars().count();
        let sentences = ["Alpha  beta.", "Gamma\ndelta.", "Epsilon."];
        let one = windows(&chars, &chars, &vocab, "q?", &sentences, 10_000);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].markers.len(), 3);
        for &m in &one[0].markers {
            assert_eq!(one[0].tokens[m], 10);
        }
        // " Alpha beta." is 12 characters: whitespace collapsed, one leading space.
        assert_eq!(one[0].markers[0], head + 12);
        let small = windows(&chars, &chars, &vocab, "q?", &sentences, head + 16);
        assert_eq!(small.len(), 3, "one sentence per window");
        assert!(small.iter().all(|w| w.tokens.len() <= head + 16));
        assert!(small
            .iter()
            .all(|w| w.tokens[..head] == one[0].tokens[..head]));
    }

    #[test]
    fn the_fixed_pieces_must_be_single_tokens() {
        assert!(SelectVocab::new(&chars).is_err(), "` yes` is 4 characters");
        let one = |t: &str| vec![t.len() as i32];
        assert!(SelectVocab::new(&one).is_ok());
    }
}
