//! A request's token accounting and the `x-condenser-*` response headers that report it. An
//! uncompressed request whose texts are not in the count cache is counted on the blocking pool
//! while it is in flight: BPE costs ~100 µs per 4 KiB, and the I/O thread is not the place for
//! it. The count is awaited only when the response headers are written.

use tokio::task::JoinHandle;

use crate::compress::{CompressionOutcome, Tokenizer};
use crate::config::Leg;
use crate::openai::headers;

/// Tokens before and after compression, or a count still running.
pub enum TokenCount {
    Known {
        before: usize,
        after: usize,
    },
    /// An uncompressed request's count (before = after) on the blocking pool.
    Pending(JoinHandle<usize>),
}

/// What the response headers and the access log say about a request's tokens.
pub struct Accounting {
    pub tokens: TokenCount,
    pub compressor: &'static str,
    pub failed_open: bool,
    pub route: String,
    /// The encoding's name as the header reports it (`; estimate` for non-OpenAI models).
    pub tokenizer: String,
    /// Which version a shadowed request's client got.
    pub shadow: Option<Leg>,
}

impl Accounting {
    pub fn new(
        outcome: &CompressionOutcome,
        pending: Option<JoinHandle<usize>>,
        route: &str,
        tokenizer: Tokenizer,
        model: &str,
    ) -> Self {
        let tokens = match pending {
            Some(count) => TokenCount::Pending(count),
            None => TokenCount::Known {
                before: outcome.tokens_before,
                after: outcome.tokens_after,
            },
        };
        Self {
            tokens,
            compressor: outcome.compressor,
            failed_open: outcome.failed_open,
            route: route.to_string(),
            tokenizer: tokenizer.describe_for(model),
            shadow: None,
        }
    }

    /// Tokens before and after, waiting for a pending count. A count that panicked reports 0.
    pub async fn resolve(&mut self) -> (usize, usize) {
        if let TokenCount::Pending(count) = &mut self.tokens {
            let tokens = count.await.unwrap_or(0);
            self.tokens = TokenCount::Known {
                before: tokens,
                after: tokens,
            };
        }
        match self.tokens {
            TokenCount::Known { before, after } => (before, after),
            TokenCount::Pending(_) => (0, 0),
        }
    }

    /// The `x-condenser-*` response headers.
    pub async fn headers(&mut self) -> Vec<(&'static str, String)> {
        let (before, after) = self.resolve().await;
        let mut list = vec![
            (headers::TOKENS_BEFORE, before.to_string()),
            (headers::TOKENS_AFTER, after.to_string()),
            (headers::COMPRESSOR, self.compressor.to_string()),
            (headers::ROUTE, self.route.clone()),
            (headers::TOKENIZER, self.tokenizer.clone()),
        ];
        if self.failed_open {
            list.push((headers::FAIL_OPEN, "true".to_string()));
        }
        if let Some(served) = self.shadow {
            list.push((headers::SHADOW, served.as_str().to_string()));
        }
        list
    }
}
