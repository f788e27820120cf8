//! Applies compression to a chat request's messages: plan (policy), compress each prose piece
//! through the cache within the route's deadline, write the results back. Any error or a missed
//! deadline fails open: the messages are left as they were, and the event is counted and logged.
//! In background mode (`compression.mode = "background"`) a request never waits for a
//! compressor: pieces already in the cache are used, the others are forwarded as they came and
//! compressed on the blocking pool behind a bounded queue, ready for the next request that
//! carries them (chat clients resend the history every turn; system prompts and RAG documents
//! repeat).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use super::cache::{cache_key, CompressionCache};
use super::offload;
use super::policy::{plan, text_slots, Piece, Plan};
use super::settings::{CompressionMode, CompressorKind, PipelineSettings};
use super::{CompressError, CompressInput, Compressor, Tokenizer};

/// Pieces smaller than this are not worth a compressor call.
const MIN_PIECE_TOKENS: usize = 24;
/// Texts larger than this are compressed on the blocking pool so they cannot stall the
/// proxy's I/O threads, and so the deadline can be enforced.
const INLINE_LIMIT_BYTES: usize = 8 * 1024;

#[derive(Debug, Default)]
pub struct PipelineStats {
    pub requests_compressed: AtomicU64,
    pub fail_open: AtomicU64,
    /// Background mode: texts queued for compression, and texts not queued because the queue
    /// was full (they are tried again on their next appearance).
    pub background_queued: AtomicU64,
    pub background_queue_full: AtomicU64,
    /// Background mode: texts served compressed from the cache / forwarded as they came.
    pub background_hits: AtomicU64,
    pub background_misses: AtomicU64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompressionOutcome {
    pub changed: bool,
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// Compressor name, or `off` when compression did not apply.
    pub compressor: &'static str,
    pub failed_open: bool,
}

pub struct Pipeline {
    compressors: HashMap<CompressorKind, Arc<dyn Compressor>>,
    cache: CompressionCache,
    /// Bounds background compressions in flight (queued or running).
    background: Arc<Semaphore>,
    background_capacity: usize,
    pub stats: Arc<PipelineStats>,
    /// Keys every cache key (`with_shared`); none without a shared tier, whose keys never leave
    /// the process.
    key_secret: Option<[u8; 32]>,
}

/// Background compressions in flight at most; more texts are skipped until a slot frees.
const BACKGROUND_QUEUE: usize = 64;

/// The compression plan (which counts every text's tokens): inline for a small request, on the
/// blocking pool (`offload`) for a large one, so the I/O thread never spends milliseconds on it.
async fn plan_off_thread(
    messages: &[Value],
    settings: &PipelineSettings<'_>,
    handles_code: bool,
    tokenizer: Tokenizer,
) -> Plan {
    let min_tokens = settings.min_tokens;
    let bytes: usize = messages
        .iter()
        .flat_map(|m| text_slots(m).into_iter().map(|(_, t)| t.len()))
        .sum();
    if bytes <= offload::INLINE_BYTES {
        return plan(
            messages,
            settings.roles,
            min_tokens,
            handles_code,
            tokenizer,
        );
    }
    let (messages, roles) = (messages.to_vec(), settings.roles.to_vec());
    offload::run(move || plan(&messages, &roles, min_tokens, handles_code, tokenizer))
        .await
        .unwrap_or_default()
}

/// What one request's compression needs besides its texts.
#[derive(Clone)]
struct Job<'a> {
    compressor: Arc<dyn Compressor>,
    ratio: f64,
    tokenizer: Tokenizer,
    background: bool,
    /// Who may share the cache entries (`PipelineSettings::scope`).
    scope: &'a str,
}

/// Lowest ratio a piece is compressed to when the block's kept text leaves little room.
const MIN_PIECE_RATIO: f64 = 0.1;

/// The job for one block: its compressible pieces compressed harder by what its verbatim pieces
/// (questions, instructions, structure) keep, so the block as a whole meets the route's ratio
/// where it can.
fn job_for_block<'a>(job: &Job<'a>, pieces: &[Piece], counts: &[usize]) -> Job<'a> {
    let (mut kept, mut compressible) = (0usize, 0usize);
    for (piece, &tokens) in pieces.iter().zip(counts) {
        if piece.compress && tokens >= MIN_PIECE_TOKENS {
            compressible += tokens;
        } else {
            kept += tokens;
        }
    }
    let mut block = job.clone();
    if compressible > 0 {
        let room = job.ratio * (kept + compressible) as f64 - kept as f64;
        block.ratio = (room / compressible as f64).clamp(MIN_PIECE_RATIO.min(job.ratio), job.ratio);
    }
    block
}

impl Pipeline {
    /// A pipeline running `compressors` (`registry::build_all` builds them from configuration).
    pub fn new(
        cache_bytes: u64,
        compressors: HashMap<CompressorKind, Arc<dyn Compressor>>,
    ) -> Self {
        Self {
            compressors,
            cache: CompressionCache::new(cache_bytes),
            background: Arc::new(Semaphore::new(BACKGROUND_QUEUE)),
            background_capacity: BACKGROUND_QUEUE,
            stats: Arc::default(),
            key_secret: None,
        }
    }

    /// Puts a shared cache tier (Redis) behind the pipeline's cache; `key_secret` (from
    /// `shared_cache.key_secret_env`) keys every cache key.
    pub fn with_shared(
        mut self,
        shared: Arc<super::shared::SharedTier>,
        key_secret: Option<[u8; 32]>,
    ) -> Self {
        self.cache = self.cache.with_shared(shared);
        self.key_secret = key_secret;
        self
    }

    /// Whether this pipeline can run `kind` (model-backed compressors load at start-up).
    pub fn has(&self, kind: CompressorKind) -> bool {
        self.compressors.contains_key(&kind)
    }

    /// The compressors this pipeline can run, by name, sorted.
    pub fn compressor_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.compressors.keys().map(|k| k.name()).collect();
        names.sort_unstable();
        names
    }

    pub fn cache(&self) -> &CompressionCache {
        &self.cache
    }

    /// Background compressions queued or running now.
    pub fn background_depth(&self) -> usize {
        self.background_capacity - self.background.available_permits()
    }

    /// Token count of all message text, for requests that are not compressed.
    pub fn count_only(messages: &[Value], tokenizer: Tokenizer) -> CompressionOutcome {
        let tokens: usize = messages
            .iter()
            .flat_map(|m| text_slots(m).into_iter().map(|(_, t)| tokenizer.count(t)))
            .sum();
        CompressionOutcome {
            changed: false,
            tokens_before: tokens,
            tokens_after: tokens,
            compressor: "off",
            failed_open: false,
        }
    }

    pub async fn apply(
        &self,
        messages: &mut [Value],
        kind: CompressorKind,
        settings: PipelineSettings<'_>,
        tokenizer: Tokenizer,
    ) -> CompressionOutcome {
        let Some(compressor) = self.compressors.get(&kind).cloned() else {
            return Self::count_only(messages, tokenizer);
        };
        let plan = plan_off_thread(messages, &settings, compressor.handles_code(), tokenizer).await;
        let mut outcome = CompressionOutcome {
            changed: false,
            tokens_before: plan.tokens_before,
            tokens_after: plan.tokens_before,
            compressor: compressor.name(),
            failed_open: false,
        };
        if plan.targets.is_empty() {
            return outcome;
        }
        let deadline = Duration::from_millis(settings.timeout_ms);
        let background = settings.mode == CompressionMode::Background;
        let job = Job {
            compressor: compressor.clone(),
            ratio: settings.target_ratio,
            tokenizer,
            background,
            scope: settings.scope,
        };
        let work = self.compress_plan(&plan, &job);
        let result = match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(CompressError::Timeout(settings.timeout_ms)),
        };
        match result {
            Ok((texts, saved)) => {
                for (target, text) in plan.targets.iter().zip(texts) {
                    write_back(&mut messages[target.message], target.part, text);
                }
                outcome.changed = saved > 0;
                outcome.tokens_after = plan.tokens_before.saturating_sub(saved);
                self.stats
                    .requests_compressed
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats.fail_open.fetch_add(1, Ordering::Relaxed);
                let cause = match error {
                    CompressError::Timeout(_) => "timeout",
                    CompressError::Failed { .. } => "error",
                };
                if let Some(m) = crate::metrics::recording() {
                    m.fail_open
                        .with_label_values(&[compressor.name(), cause])
                        .inc();
                }
                tracing::warn!(compressor = compressor.name(), %error, "compression failed open; forwarding the original");
                outcome.failed_open = true;
            }
        }
        outcome
    }

    /// Returns each target's new text and the tokens saved overall.
    async fn compress_plan(
        &self,
        plan: &Plan,
        job: &Job<'_>,
    ) -> Result<(Vec<String>, usize), CompressError> {
        let tokenizer = job.tokenizer;
        let mut saved = 0;
        let mut texts = Vec::with_capacity(plan.targets.len());
        for target in &plan.targets {
            let mut text = String::new();
            let counts: Vec<usize> = target
                .pieces
                .iter()
                .map(|p| tokenizer.count(&p.text))
                .collect();
            let job = &job_for_block(job, &target.pieces, &counts);
            for (piece, &tokens) in target.pieces.iter().zip(&counts) {
                if !piece.compress || tokens < MIN_PIECE_TOKENS {
                    text.push_str(&piece.text);
                    continue;
                }
                let compressed = self
                    .compress_piece(&piece.text, &plan.query, tokens, job)
                    .await?;
                let after = tokenizer.count(&compressed);
                if after < tokens {
                    saved += tokens - after;
                    // Keep the piece's own trailing whitespace, so the next piece (a code block,
                    // the question) still starts on its own line or paragraph.
                    text.push_str(compressed.trim_end());
                    text.push_str(&piece.text[piece.text.trim_end().len()..]);
                } else {
                    text.push_str(&piece.text);
                }
            }
            texts.push(text);
        }
        Ok((texts, saved))
    }

    /// One piece's compressed text. In background mode a piece not in the cache is returned as
    /// it came and its compression is started off the request path (if the queue has room).
    async fn compress_piece(
        &self,
        text: &str,
        query: &str,
        tokens: usize,
        job: &Job<'_>,
    ) -> Result<Arc<str>, CompressError> {
        let (ratio, tokenizer, background) = (job.ratio, job.tokenizer, job.background);
        let compressor = job.compressor.clone();
        let ratio_bits = ratio.to_bits().to_le_bytes();
        // A background compression serves the text's later appearances, whose questions are
        // not known yet (each chat turn asks a new one): it is compressed for no question, so
        // one compression serves every turn.
        let query = if background { "" } else { query };
        let query_part = if compressor.query_aware() {
            query.as_bytes()
        } else {
            b""
        };
        // The deployment's secret (with a shared tier) and the tenant scope go first: a reader
        // of Redis cannot test a text offline, and one client key never hits another's entry.
        let key = cache_key(&[
            self.key_secret.as_ref().map_or(&[][..], |s| &s[..]),
            job.scope.as_bytes(),
            compressor.name().as_bytes(),
            &ratio_bits,
            tokenizer.name().as_bytes(),
            query_part,
            text.as_bytes(),
        ]);
        let target_tokens = ((tokens as f64) * ratio).floor().max(1.0) as usize;
        let blocking = compressor.blocking() || text.len() > INLINE_LIMIT_BYTES;
        if background {
            if let Some(hit) = self.cache.peek(key).await {
                self.stats.background_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit);
            }
            self.stats.background_misses.fetch_add(1, Ordering::Relaxed);
            let Ok(slot) = self.background.clone().try_acquire_owned() else {
                self.stats
                    .background_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::from(text));
            };
            self.stats.background_queued.fetch_add(1, Ordering::Relaxed);
            let cache = self.cache.clone();
            let (owned_text, owned_query) = (text.to_string(), query.to_string());
            tokio::spawn(async move {
                let result = cache
                    .get_or_compute(key, async move {
                        tokio::task::spawn_blocking(move || {
                            compressor.compress(&CompressInput {
                                text: &owned_text,
                                query: &owned_query,
                                target_tokens,
                                tokenizer,
                            })
                        })
                        .await
                        .map_err(|e| CompressError::Failed {
                            compressor: "pipeline",
                            reason: e.to_string(),
                        })?
                    })
                    .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "background compression failed; the text stays uncompressed");
                }
                drop(slot);
            });
            return Ok(Arc::from(text));
        }
        self.cache
            .get_or_compute(key, async move {
                // Copied only on a miss: a hit costs a hash and a lookup.
                let (owned_text, owned_query) = (text.to_string(), query.to_string());
                let run = move || {
                    compressor.compress(&CompressInput {
                        text: &owned_text,
                        query: &owned_query,
                        target_tokens,
                        tokenizer,
                    })
                };
                if !blocking {
                    run()
                } else {
                    tokio::task::spawn_blocking(run)
                        .await
                        .map_err(|e| CompressError::Failed {
                            compressor: "pipeline",
                            reason: e.to_string(),
                        })?
                }
            })
            .await
    }
}

fn write_back(message: &mut Value, part: Option<usize>, text: String) {
    match part {
        None => message["content"] = Value::String(text),
        Some(i) => message["content"][i]["text"] = Value::String(text),
    }
}
