//! Token counting with the tokenizer the upstream model actually uses: `o200k_base` for the
//! GPT-4o / 4.1 / 5 and o-series families, `cl100k_base` for everything else (an estimate for
//! non-OpenAI models, and documented as one).

use tiktoken_rs::CoreBPE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tokenizer {
    O200k,
    Cl100k,
}

impl Tokenizer {
    /// Picks the encoding for a model name, ignoring a provider prefix such as `openai/`.
    pub fn for_model(model: &str) -> Self {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let o200k_families = [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "chatgpt-4o",
            "gpt-oss",
        ];
        let o_series = name.len() > 1
            && name.starts_with('o')
            && name[1..].starts_with(|c: char| c.is_ascii_digit());
        if o_series || o200k_families.iter().any(|f| name.starts_with(f)) {
            Self::O200k
        } else {
            Self::Cl100k
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::O200k => "o200k_base",
            Self::Cl100k => "cl100k_base",
        }
    }

    pub fn bpe(self) -> &'static CoreBPE {
        match self {
            Self::O200k => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    pub fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        self.bpe().encode_ordinary(text).len()
    }
}

#[cfg(test)]
mod tests {
    use super::Tokenizer;

    #[test]
    fn model_families_pick_their_encoding() {
        for model in [
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-5-nano",
            "o3-mini",
            "o1",
            "openai/gpt-4o",
        ] {
            assert_eq!(Tokenizer::for_model(model), Tokenizer::O200k, "{model}");
        }
        for model in [
            "gpt-4",
            "gpt-3.5-turbo",
            "claude-3-5-sonnet",
            "omni-model",
            "llama-3",
        ] {
            assert_eq!(Tokenizer::for_model(model), Tokenizer::Cl100k, "{model}");
        }
    }

    #[test]
    fn counts_match_known_encodings() {
        assert_eq!(Tokenizer::Cl100k.count("hello world"), 2);
        assert_eq!(Tokenizer::O200k.count("hello world"), 2);
        assert_eq!(Tokenizer::O200k.count(""), 0);
    }
}
