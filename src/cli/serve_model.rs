//! `condenser serve-model`: loads a GGUF model (and LoRA adapter) with llama.cpp and serves it
//! to other replicas' remote compressor backend (`condenser::llm::serve` owns the protocol).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use condenser::llm::serve::{serve, ModelServer};
use condenser::llm::{LocalModel, LocalModelConfig};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(long)]
    model: PathBuf,
    /// A GGUF LoRA adapter applied at runtime.
    #[arg(long)]
    lora: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    lora_scale: f32,
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The model id reported to clients (default: the file's name).
    #[arg(long)]
    name: Option<String>,
    /// CPU threads per worker.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Context per worker, in tokens.
    #[arg(long, default_value_t = 8192)]
    context: u32,
    /// Workers (one llama.cpp context each).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests waiting beyond those being served; more get 429.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Longest a request may take, queueing included.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// Environment variable holding the key clients must send (`Authorization: Bearer`);
    /// without it the server answers anyone who can reach it.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Layers offloaded to the GPU (`cuda` / `metal` builds).
    #[arg(long, default_value_t = 0)]
    gpu_layers: u32,
    /// Listen on a non-loopback address without `--api-key-env` (something in front
    /// authenticates); refused otherwise.
    #[arg(long)]
    allow_unauthenticated: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::init_logging(condenser::config::LogFormat::Text);
    // Checked before the model loads: a refused start should not take seconds.
    condenser::config::check_exposure(
        condenser::config::Listener::ModelServer,
        args.listen,
        args.api_key_env.is_some(),
        args.allow_unauthenticated,
    )?;
    if let Some(lora) = &args.lora {
        condenser::lora::check_lora(&args.model, lora).context("--lora")?;
    }
    let model = LocalModel::load(&LocalModelConfig {
        path: args.model.clone(),
        lora: args.lora.clone().map(|path| (path, args.lora_scale)),
        threads: args.threads,
        context: args.context,
        workers: args.workers,
        queue: args.queue,
        gpu_layers: args.gpu_layers,
        // Answers must be a function of the request alone, as in the proxy.
        reuse_prompt_prefix: false,
    })
    .with_context(|| format!("loading {}", args.model.display()))?;
    let name = args.name.unwrap_or_else(|| {
        args.model
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    });
    let key_digest = match &args.api_key_env {
        Some(var) => {
            let key = std::env::var(var)
                .ok()
                .filter(|k| !k.is_empty())
                .with_context(|| format!("--api-key-env: {var} is not set"))?;
            Some(ModelServer::digest(&key))
        }
        None => None,
    };
    let server = ModelServer {
        model: Arc::new(model),
        name,
        timeout: Duration::from_millis(args.timeout_ms),
        key_digest,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("listening for SIGTERM")?;
        tokio::select! {
            served = serve(server, args.listen) => served.context("serving"),
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminate.recv() => Ok(()),
        }
    })
}
