//! A local GGUF model run by llama.cpp (CPU by default; `cuda` / `metal` features offload).
//! The model is loaded once for the process; each worker thread owns one `LlamaContext` (a
//! context borrows the model and is not shareable), and requests reach the workers through a
//! bounded queue. A full queue or a missed deadline is an error the caller fails open on.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

#[derive(Debug, Clone)]
pub struct LocalModelConfig {
    pub path: PathBuf,
    /// CPU threads per worker.
    pub threads: i32,
    /// Context window per worker, in tokens.
    pub context: u32,
    pub workers: usize,
    /// Requests waiting beyond the ones being served; more are refused.
    pub queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot load the local model: {0}")]
    Load(String),
    #[error("the local model's queue is full")]
    QueueFull,
    #[error("the local model missed its deadline")]
    Deadline,
    #[error("local model failure: {0}")]
    Worker(String),
}

/// Self-information of one token of the scored text.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSurprisal {
    pub bytes: Vec<u8>,
    /// −log2 p(token | everything before it).
    pub bits: f32,
}

struct Job {
    prefix: String,
    text: String,
    deadline: Instant,
    reply: SyncSender<Result<Vec<TokenSurprisal>, LlmError>>,
}

#[derive(Debug, Default)]
pub struct LocalModelStats {
    pub queue_full: AtomicU64,
    pub deadline_missed: AtomicU64,
    pub served: AtomicU64,
}

pub struct LocalModel {
    jobs: SyncSender<Job>,
    pub stats: Arc<LocalModelStats>,
}

fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| LlmError::Load(e.clone()))
}

impl LocalModel {
    /// Loads the model and starts the workers; returns once every worker has its context.
    pub fn load(config: &LocalModelConfig) -> Result<Self, LlmError> {
        let backend = backend()?;
        if !config.path.is_file() {
            return Err(LlmError::Load(format!(
                "{} does not exist",
                config.path.display()
            )));
        }
        let model = LlamaModel::load_from_file(backend, &config.path, &LlamaModelParams::default())
            .map_err(|e| LlmError::Load(e.to_string()))?;
        // Shared by every worker for the life of the process.
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let (jobs, queue) = sync_channel::<Job>(config.queue.max(1));
        let queue = Arc::new(Mutex::new(queue));
        let stats = Arc::new(LocalModelStats::default());
        for worker in 0..config.workers.max(1) {
            let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
            let queue = queue.clone();
            let stats = stats.clone();
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("llm-worker-{worker}"))
                .spawn(move || run_worker(model, backend, &config, &queue, &stats, &ready_tx))
                .map_err(|e| LlmError::Load(e.to_string()))?;
            // Contexts are created one at a time: llama.cpp mutates the model while creating one.
            ready_rx
                .recv()
                .map_err(|e| LlmError::Load(e.to_string()))?
                .map_err(LlmError::Load)?;
        }
        Ok(Self { jobs, stats })
    }

    /// Self-information of every token of `text`, conditioned on `prefix`.
    pub fn surprisal(
        &self,
        prefix: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Vec<TokenSurprisal>, LlmError> {
        let (reply, answer) = sync_channel(1);
        let job = Job {
            prefix: prefix.to_string(),
            text: text.to_string(),
            deadline: Instant::now() + timeout,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                return Err(LlmError::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(LlmError::Worker("workers stopped".into()))
            }
        }
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => {
                self.stats.deadline_missed.fetch_add(1, Ordering::Relaxed);
                Err(LlmError::Deadline)
            }
        }
    }
}

fn run_worker(
    model: &'static LlamaModel,
    backend: &'static LlamaBackend,
    config: &LocalModelConfig,
    queue: &Mutex<Receiver<Job>>,
    stats: &LocalModelStats,
    ready: &SyncSender<Result<(), String>>,
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.context))
        .with_n_batch(512)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(ctx) => {
            let _ = ready.send(Ok(()));
            ctx
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    loop {
        let job = match queue.lock() {
            Ok(guard) => match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let result = if Instant::now() >= job.deadline {
            Err(LlmError::Deadline)
        } else {
            score(model, &mut ctx, &job)
        };
        stats.served.fetch_add(1, Ordering::Relaxed);
        let _ = job.reply.send(result);
    }
}

/// One prefill pass per window with logits at the positions that predict text tokens; each
/// position is reduced to the next token's log-probability at once (a full logits buffer for a
/// long text would be hundreds of MB).
fn score(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    job: &Job,
) -> Result<Vec<TokenSurprisal>, LlmError> {
    let vocab = model.vocab();
    let prefix = vocab.tokenize(job.prefix.as_bytes(), true, false);
    let text = vocab.tokenize(job.text.as_bytes(), false, false);
    let n_ctx = ctx.n_ctx() as usize;
    let window = n_ctx.saturating_sub(prefix.len() + 1);
    if window < 32 {
        return Err(LlmError::Worker(format!(
            "context of {n_ctx} tokens is too small for the prefix"
        )));
    }
    let mut out = Vec::with_capacity(text.len());
    let batch_size = 512;
    let mut batch = LlamaBatch::new(batch_size, 1);
    for chunk in text.chunks(window) {
        ctx.clear_kv_cache();
        let all: Vec<LlamaToken> = prefix.iter().chain(chunk.iter()).copied().collect();
        let first_scored = prefix.len().max(1) - 1;
        for (start, piece) in all
            .chunks(batch_size)
            .enumerate()
            .map(|(i, p)| (i * batch_size, p))
        {
            if Instant::now() >= job.deadline {
                return Err(LlmError::Deadline);
            }
            batch.clear();
            for (k, token) in piece.iter().enumerate() {
                let pos = start + k;
                let wants_logits = pos >= first_scored && pos + 1 < all.len();
                batch
                    .add(*token, pos as i32, &[0], wants_logits)
                    .map_err(|e| LlmError::Worker(e.to_string()))?;
            }
            ctx.decode(&mut batch)
                .map_err(|e| LlmError::Worker(e.to_string()))?;
            for (k, _) in piece.iter().enumerate() {
                let pos = start + k;
                if pos < first_scored || pos + 1 >= all.len() {
                    continue;
                }
                let logits = ctx.get_logits_ith(k as i32);
                let next = all[pos + 1];
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                let logprob = logits[next.0 as usize] - max - sum.ln();
                out.push(TokenSurprisal {
                    bytes: vocab.token_to_piece(next, false, None),
                    bits: -logprob / std::f32::consts::LN_2,
                });
            }
        }
    }
    Ok(out)
}
