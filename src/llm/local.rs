//! The local GGUF model run by llama.cpp in-process (CPU by default; `cuda` / `metal` features
//! offload).
//! The model is loaded once for the process; each worker thread owns one `LlamaContext` (a
//! context borrows the model and is not shareable), and requests reach the workers through a
//! bounded queue. A full queue or a missed deadline is an error the caller fails open on.
//! What a worker computes lives beside this file: prompt log-probabilities (`score.rs`), greedy
//! chat generation (`generate.rs`) and sentence keep scores (`classify.rs`); `vocab.rs` loads a
//! model's tokenizer alone.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};

use super::classify::{self, ClassifyWindow};
use super::generate;
use super::score::{self, PromptToken};
use super::{ChatTurn, Generation, LlmError, ModelBackend, TokenSurprisal};

#[derive(Debug, Clone)]
pub struct LocalModelConfig {
    pub path: PathBuf,
    /// A GGUF LoRA adapter applied at runtime, with its scale (llama.cpp multiplies it by the
    /// adapter's alpha / rank).
    pub lora: Option<(PathBuf, f32)>,
    /// CPU threads per worker.
    pub threads: i32,
    /// Context window per worker, in tokens.
    pub context: u32,
    pub workers: usize,
    /// Requests waiting beyond the ones being served; more are refused.
    pub queue: usize,
    /// Layers offloaded to the GPU (`cuda` / `metal` builds); 0 on CPU.
    pub gpu_layers: u32,
    /// Keep a chat's KV cache for the next one and prefill only what follows their shared
    /// prefix. Much cheaper for many questions about one document, but llama.cpp's logits are
    /// not bit-identical across batch splits, so an answer may then depend on the request
    /// before it. Off for the proxy's compressors, whose outputs are cached and must be a
    /// function of their input alone.
    pub reuse_prompt_prefix: bool,
}

impl LocalModelConfig {
    pub fn cpu(path: impl Into<PathBuf>, threads: i32, context: u32) -> Self {
        Self {
            path: path.into(),
            lora: None,
            threads,
            context,
            workers: 1,
            queue: 16,
            gpu_layers: 0,
            reuse_prompt_prefix: false,
        }
    }
}

enum Task {
    Score {
        prefix: String,
        text: String,
        reply: SyncSender<Result<Vec<PromptToken>, LlmError>>,
    },
    Generate {
        turns: Vec<ChatTurn>,
        max_tokens: usize,
        reply: SyncSender<Result<Generation, LlmError>>,
    },
    Classify {
        windows: Vec<ClassifyWindow>,
        pair: (i32, i32),
        reply: SyncSender<Result<Vec<f32>, LlmError>>,
    },
}

struct Job {
    task: Task,
    deadline: Instant,
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

pub(super) fn backend() -> Result<&'static LlamaBackend, LlmError> {
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
    /// Loads the model (and its adapter) and starts the workers; returns once every worker has
    /// its context.
    pub fn load(config: &LocalModelConfig) -> Result<Self, LlmError> {
        let backend = backend()?;
        if !config.path.is_file() {
            return Err(LlmError::Load(format!(
                "{} does not exist",
                config.path.display()
            )));
        }
        let params = LlamaModelParams::default().with_n_gpu_layers(config.gpu_layers);
        let mut model = LlamaModel::load_from_file(backend, &config.path, &params)
            .map_err(|e| LlmError::Load(e.to_string()))?;
        let adapter = match &config.lora {
            Some((path, scale)) => {
                if !path.is_file() {
                    return Err(LlmError::Load(format!("{} does not exist", path.display())));
                }
                let adapter = model
                    .lora_adapter_init(path)
                    .map_err(|e| LlmError::Load(format!("{}: {e}", path.display())))?;
                Some((Arc::new(Mutex::new(adapter)), *scale))
            }
            None => None,
        };
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
            let adapter = adapter.clone();
            std::thread::Builder::new()
                .name(format!("llm-worker-{worker}"))
                .spawn(move || {
                    run_worker(model, backend, &config, adapter, &queue, &stats, &ready_tx)
                })
                .map_err(|e| LlmError::Load(e.to_string()))?;
            // Contexts are created one at a time: llama.cpp mutates the model while creating one.
            ready_rx
                .recv()
                .map_err(|e| LlmError::Load(e.to_string()))?
                .map_err(LlmError::Load)?;
        }
        Ok(Self { jobs, stats })
    }

    /// ln p of every token of `text` after `prefix` (the prompt log-probabilities an
    /// OpenAI-style `echo` + `logprobs` completion returns).
    pub fn log_probs(
        &self,
        prefix: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Vec<PromptToken>, LlmError> {
        let (reply, answer) = sync_channel(1);
        let task = Task::Score {
            prefix: prefix.to_string(),
            text: text.to_string(),
            reply,
        };
        self.submit(task, timeout)?;
        self.await_reply(&answer, timeout)
    }

    /// Per marker of every window, in order: logit(`pair.0`) − logit(`pair.1`) read at the
    /// marker position.
    pub fn keep_scores(
        &self,
        windows: Vec<ClassifyWindow>,
        pair: (i32, i32),
        timeout: Duration,
    ) -> Result<Vec<f32>, LlmError> {
        let (reply, answer) = sync_channel(1);
        self.submit(
            Task::Classify {
                windows,
                pair,
                reply,
            },
            timeout,
        )?;
        self.await_reply(&answer, timeout)
    }

    fn submit(&self, task: Task, timeout: Duration) -> Result<(), LlmError> {
        let job = Job {
            task,
            deadline: Instant::now() + timeout,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                if let Some(m) = crate::metrics::recording() {
                    m.local_model_queue_depth.inc();
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                Err(LlmError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => Err(LlmError::Worker("workers stopped".into())),
        }
    }

    fn await_reply<T>(
        &self,
        answer: &Receiver<Result<T, LlmError>>,
        timeout: Duration,
    ) -> Result<T, LlmError> {
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(_) => {
                self.stats.deadline_missed.fetch_add(1, Ordering::Relaxed);
                Err(LlmError::Deadline)
            }
        }
    }
}

/// Token self-information and greedy chat on the worker threads.
impl ModelBackend for LocalModel {
    /// A token with nothing before it (no prefix, no BOS) counts 0 bits.
    fn surprisal(
        &self,
        prefix: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Vec<TokenSurprisal>, LlmError> {
        Ok(self
            .log_probs(prefix, text, timeout)?
            .into_iter()
            .map(|token| TokenSurprisal::new(token.bytes, token.logprob.map(f64::from)))
            .collect())
    }

    fn generate(
        &self,
        turns: &[ChatTurn],
        max_tokens: usize,
        timeout: Duration,
    ) -> Result<Generation, LlmError> {
        let (reply, answer) = sync_channel(1);
        let task = Task::Generate {
            turns: turns.to_vec(),
            max_tokens,
            reply,
        };
        self.submit(task, timeout)?;
        self.await_reply(&answer, timeout)
    }
}

/// Leaves the local-model queue-depth gauge when a job's answer has been sent.
struct QueueSlot;

impl Drop for QueueSlot {
    fn drop(&mut self) {
        if let Some(m) = crate::metrics::recording() {
            m.local_model_queue_depth.dec();
        }
    }
}

fn run_worker(
    model: &'static LlamaModel,
    backend: &'static LlamaBackend,
    config: &LocalModelConfig,
    adapter: Option<(Arc<Mutex<LlamaLoraAdapter>>, f32)>,
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
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    if let Some((adapter, scale)) = adapter {
        let attached = match adapter.lock() {
            Ok(mut adapter) => ctx
                .lora_adapter_set(&mut adapter, scale)
                .map_err(|e| format!("attaching the LoRA adapter: {e}")),
            Err(_) => Err("LoRA adapter lock poisoned".to_string()),
        };
        if let Err(e) = attached {
            let _ = ready.send(Err(e));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    let mut cached = generate::CachedPrefix::default();
    loop {
        let job = match queue.lock() {
            Ok(guard) => match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let late = Instant::now() >= job.deadline;
        // Taken off the queue: it counts as running until its answer is sent below.
        let _running = QueueSlot;
        match job.task {
            Task::Score {
                prefix,
                text,
                reply,
            } => answer(late, stats, &reply, || {
                // Scoring windows overwrite the KV cache.
                cached.forget(&mut ctx);
                score::log_probs(model, &mut ctx, &prefix, &text, job.deadline)
            }),
            Task::Generate {
                turns,
                max_tokens,
                reply,
            } => answer(late, stats, &reply, || {
                if !config.reuse_prompt_prefix {
                    cached.forget(&mut ctx);
                }
                generate::complete(
                    model,
                    &mut ctx,
                    &mut cached,
                    &turns,
                    max_tokens,
                    job.deadline,
                )
            }),
            Task::Classify {
                windows,
                pair,
                reply,
            } => answer(late, stats, &reply, || {
                cached.forget(&mut ctx);
                classify::keep_scores(&mut ctx, &windows, pair, job.deadline)
            }),
        }
    }
}

/// Runs a job unless it is already late, counts it, and replies. Counted before replying, so a
/// caller that has its answer sees it counted.
fn answer<T>(
    late: bool,
    stats: &LocalModelStats,
    reply: &SyncSender<Result<T, LlmError>>,
    work: impl FnOnce() -> Result<T, LlmError>,
) {
    let result = if late {
        Err(LlmError::Deadline)
    } else {
        work()
    };
    stats.served.fetch_add(1, Ordering::Relaxed);
    let _ = reply.send(result);
}
