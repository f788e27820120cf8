//! Token counting with the tokenizer the upstream model actually uses: `o200k_base` for the
//! GPT-4o / 4.1 / 5 and o-series families, `cl100k_base` for everything else (an estimate for
//! non-OpenAI models, and documented as one).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use moka::sync::Cache;
use tiktoken_rs::CoreBPE;

/// Texts shorter than this are counted directly: hashing them costs about as much.
const CACHE_MIN_BYTES: usize = 512;
/// Entries in the token-count cache (a key and a count each, ~40 bytes).
const CACHE_ENTRIES: u64 = 200_000;

/// Token counts of recently seen texts. Chat clients resend the whole history every turn, so
/// all but the newest message are usually hits; BPE costs ~100 µs per 4 KiB on this class of CPU.
fn count_cache() -> &'static Cache<u128, u32> {
    static CACHE: OnceLock<Cache<u128, u32>> = OnceLock::new();
    CACHE.get_or_init(|| Cache::new(CACHE_ENTRIES))
}

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

    /// The encoding's name, marked as an estimate unless it is the model's own tokenizer
    /// (OpenAI GPT-3.5/4/4o/4.1/5 and o-series; other providers' counts are approximations).
    pub fn describe_for(self, model: &str) -> String {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let exact = self == Self::O200k || name.starts_with("gpt-4") || name.starts_with("gpt-3.5");
        if exact {
            self.name().to_string()
        } else {
            format!("{}; estimate", self.name())
        }
    }

    pub fn bpe(self) -> &'static CoreBPE {
        let bpe = match self {
            Self::O200k => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        };
        self.loaded_flag().store(true, Ordering::Release);
        bpe
    }

    fn loaded_flag(self) -> &'static AtomicBool {
        static O200K: AtomicBool = AtomicBool::new(false);
        static CL100K: AtomicBool = AtomicBool::new(false);
        match self {
            Self::O200k => &O200K,
            Self::Cl100k => &CL100K,
        }
    }

    /// Whether the encoding is in memory (loading one takes hundreds of milliseconds).
    pub fn is_loaded(self) -> bool {
        self.loaded_flag().load(Ordering::Acquire)
    }

    /// Loads the encoding on the blocking pool if it is not in memory yet, so the first request
    /// of a model family never stalls an I/O thread (and every request behind it).
    pub async fn load_off_thread(self) {
        if !self.is_loaded() {
            let _ = tokio::task::spawn_blocking(move || self.bpe()).await;
        }
    }

    pub fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        if text.len() < CACHE_MIN_BYTES {
            return self.count_uncached(text);
        }
        let key = xxhash_rust::xxh3::xxh3_128_with_seed(text.as_bytes(), self as u64);
        let cached = count_cache().get_with(key, || {
            u32::try_from(self.count_uncached(text)).unwrap_or(u32::MAX)
        });
        cached as usize
    }

    /// The count of a text already in the count cache; `None` for texts not cached (short texts
    /// never are: they are cheap to count).
    pub fn cached_count(self, text: &str) -> Option<usize> {
        if text.is_empty() {
            return Some(0);
        }
        if text.len() < CACHE_MIN_BYTES {
            return None;
        }
        let key = xxhash_rust::xxh3::xxh3_128_with_seed(text.as_bytes(), self as u64);
        count_cache().get(&key).map(|n| n as usize)
    }

    /// Loads `o200k_base` (OpenAI's current models) and the count cache at start-up, so the
    /// first requests do not pay for them. `cl100k_base` (~25 MiB) is loaded on first use, off
    /// the I/O threads (`load_off_thread`): a deployment that never sees such a model never
    /// holds it.
    pub fn warm_up() {
        Self::O200k.count_uncached("warm up");
        count_cache();
    }

    /// Runs the BPE every time (benchmarks, and texts too short to be worth caching).
    pub fn count_uncached(self, text: &str) -> usize {
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
    fn cached_counts_equal_fresh_counts_per_encoding() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
        for tokenizer in [Tokenizer::O200k, Tokenizer::Cl100k] {
            let fresh = tokenizer.count_uncached(&text);
            assert_eq!(tokenizer.count(&text), fresh);
            assert_eq!(
                tokenizer.count(&text),
                fresh,
                "second call served from the cache"
            );
        }
        let unicode = "数据压缩".repeat(300);
        assert_ne!(Tokenizer::O200k.count(&unicode), 0);
        assert_eq!(
            Tokenizer::Cl100k.count(&unicode),
            Tokenizer::Cl100k.count_uncached(&unicode)
        );
    }

    #[test]
    fn counts_match_known_encodings() {
        assert_eq!(Tokenizer::Cl100k.count("hello world"), 2);
        assert_eq!(Tokenizer::O200k.count("hello world"), 2);
        assert_eq!(Tokenizer::O200k.count(""), 0);
    }
}
