//! `truncate`: keeps the first and last tokens of a text within the budget, half each. The
//! baseline every smarter compressor must beat.

use super::{CompressError, CompressInput, Compressor};

pub struct Truncate;

/// Marks the cut so the model knows text was removed.
const ELISION: &str = "\n…\n";

impl Compressor for Truncate {
    fn name(&self) -> &'static str {
        "truncate"
    }

    fn compress(&self, input: &CompressInput<'_>) -> Result<String, CompressError> {
        let bpe = input.tokenizer.bpe();
        let tokens = bpe.encode_ordinary(input.text);
        if tokens.len() <= input.target_tokens {
            return Ok(input.text.to_string());
        }
        let budget = input.target_tokens.saturating_sub(2);
        let head_len = budget.div_ceil(2);
        let tail_len = budget - head_len;
        let head = bpe
            .decode_bytes(&tokens[..head_len])
            .map_err(|e| failed(e.to_string()))?;
        let tail = bpe
            .decode_bytes(&tokens[tokens.len() - tail_len..])
            .map_err(|e| failed(e.to_string()))?;
        let mut out = valid_prefix(&head).trim_end().to_string();
        out.push_str(ELISION);
        out.push_str(valid_suffix(&tail).trim_start());
        Ok(out)
    }
}

fn failed(reason: String) -> CompressError {
    CompressError::Failed {
        compressor: "truncate",
        reason,
    }
}

/// A token cut can split a multi-byte character: keep the longest valid UTF-8 prefix.
fn valid_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// Skips continuation bytes at the front of a tail cut.
fn valid_suffix(bytes: &[u8]) -> &str {
    let mut start = 0;
    while start < bytes.len() && (bytes[start] & 0b1100_0000) == 0b1000_0000 {
        start += 1;
    }
    valid_prefix(&bytes[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Tokenizer;

    #[test]
    fn keeps_head_and_tail_within_budget() {
        let text: String = (0..400).map(|i| format!("word{i} ")).collect();
        let input = CompressInput {
            text: &text,
            query: "",
            target_tokens: 100,
            tokenizer: Tokenizer::O200k,
        };
        let out = Truncate.compress(&input).expect("compress");
        assert!(out.starts_with("word0 word1"));
        assert!(out.trim_end().ends_with("word399"));
        assert!(Tokenizer::O200k.count(&out) <= 100);
    }

    #[test]
    fn short_text_is_untouched_and_multibyte_cuts_stay_valid() {
        let input = CompressInput {
            text: "short",
            query: "",
            target_tokens: 10,
            tokenizer: Tokenizer::Cl100k,
        };
        assert_eq!(Truncate.compress(&input).expect("compress"), "short");
        let text = "日本語のテキスト。".repeat(200);
        let input = CompressInput {
            text: &text,
            query: "",
            target_tokens: 51,
            tokenizer: Tokenizer::Cl100k,
        };
        let out = Truncate.compress(&input).expect("compress");
        assert!(out.contains('…'));
        assert!(!out.contains('\u{FFFD}'));
    }
}
