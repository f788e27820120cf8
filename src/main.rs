//! The `condenser` command: `serve` runs the proxy, `check` validates a configuration file.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pingora::connectors::http::Connector;
use pingora::prelude::Server;
use pingora::server::configuration::ServerConf;

use condenser::config::{self, Listener};

#[cfg(feature = "local-model")]
#[path = "cli/serve_model.rs"]
mod serve_model;
use condenser::server::listener::Guarded;
use condenser::server::{AppState, Condenser};
use pingora::proxy::HttpProxy;
use pingora::services::listening::Service;

#[derive(Parser)]
#[command(
    name = "condenser",
    version,
    about = "OpenAI-compatible proxy that compresses long LLM context"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// Overrides `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a configuration file and exit (0 when valid).
    Check {
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Every route's effective settings (the file plus the admin API's overrides) and where
    /// each came from.
    Routes {
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when `URL` answers 200 (`http://HOST:PORT/PATH`; the container healthcheck, which
    /// has no shell or curl to use).
    Probe {
        #[arg(default_value = "http://127.0.0.1:8787/readyz")]
        url: String,
    },
    /// Shadow A/B report per route from the shadow store.
    Report {
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// The store to read, a SQLite file or a postgres:// URL (default: `[shadow] store` of
        /// the config).
        #[arg(long)]
        store: Option<String>,
        #[arg(long)]
        route: Option<String>,
        /// Only samples from the last DURATION (e.g. 24h, 7d, 30m).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON instead of markdown.
        #[arg(long)]
        json: bool,
    },
    /// Serve a local GGUF model (and its LoRA adapter) to the remote compressor backend of
    /// other condenser replicas: OpenAI-compatible prompt scoring and chat completions.
    #[cfg(feature = "local-model")]
    ServeModel(serve_model::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Check { config } => check(&config),
        Command::Routes { config, json } => routes(&config, json),
        Command::Probe { url } => probe(&url),
        Command::Report {
            config,
            store,
            route,
            since,
            json,
        } => report(&config, store, route.as_deref(), since.as_deref(), json),
        #[cfg(feature = "local-model")]
        Command::ServeModel(args) => serve_model::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    cfg.server.require_admin_key()?;
    for up in &cfg.upstreams {
        for var in up.deployments.iter().filter_map(|d| d.api_key_env.as_ref()) {
            if std::env::var_os(var).is_none() {
                eprintln!(
                    "warning: upstreams `{}`: environment variable {var} is not set",
                    up.name
                );
            }
        }
    }
    // Adapters are checked against their base model here, not only when llama.cpp loads them.
    for (name, settings) in &cfg.compressors {
        if let Some((adapter, _)) = &settings.lora {
            condenser::lora::check_lora(&settings.model, adapter)
                .with_context(|| format!("compressors.{name}.lora"))?;
        }
    }
    println!(
        "{}: ok ({} upstreams, {} routes)",
        path.display(),
        cfg.upstreams.len(),
        cfg.routes.len()
    );
    let compressors: Vec<String> = condenser::compress::COMPRESSORS
        .iter()
        .map(
            |spec| match (spec.needs_model(), cfg.compressors.contains_key(spec.name)) {
                (false, _) => spec.name.to_string(),
                (true, true) => format!("{} (model configured)", spec.name),
                (true, false) => format!("{} (needs [compressors.{}])", spec.name, spec.name),
            },
        )
        .collect();
    println!("compressors: {}", compressors.join(", "));
    println!(
        "equivalence gates: {}",
        condenser::equivalence::gate_names().join(", ")
    );
    Ok(())
}

fn probe(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .context("probe takes an http:// URL")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .context("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut status = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut status)?;
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "{url}: {}",
        status.trim()
    );
    Ok(())
}

fn routes(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let cfg = config::load(path)?;
    let overrides = condenser::server::stored_overrides(&cfg.server).map_err(anyhow::Error::msg)?;
    let routes: Vec<serde_json::Value> = overrides
        .apply(&cfg.routes)
        .iter()
        .map(|route| overrides.describe(route, None))
        .collect();
    if json {
        println!("{}", serde_json::json!({ "routes": routes }));
        return Ok(());
    }
    println!(
        "| route | compression | compressor | target ratio | shadow sample rate | overridden |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &routes {
        let c = &r["compression"];
        let overridden: Vec<&str> = r["source"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, source)| *source == "override")
            .map(|(key, _)| key.as_str())
            .collect();
        let enabled = match (c["rollout"].as_str(), c["enabled"].as_bool()) {
            (Some("auto"), _) => "auto-rollout".to_string(),
            (_, Some(true)) => "on".to_string(),
            _ => "off".to_string(),
        };
        println!(
            "| {} | {enabled} | {} | {} | {} | {} |",
            r["name"].as_str().unwrap_or_default(),
            c["compressor"].as_str().unwrap_or_default(),
            c["target_ratio"],
            r["shadow"]["sample_rate"]
                .as_f64()
                .map_or("–".to_string(), |s| s.to_string()),
            if overridden.is_empty() {
                "–".to_string()
            } else {
                overridden.join(", ")
            },
        );
    }
    Ok(())
}

fn serve(path: &std::path::Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut cfg = config::load(path).with_context(|| format!("loading {}", path.display()))?;
    cfg.server.require_admin_key()?;
    init_logging(cfg.server.log_format);
    condenser::metrics::set_recording(cfg.server.metrics);
    let tracer_provider = condenser::telemetry::init(
        cfg.telemetry.otlp_endpoint.as_deref(),
        cfg.telemetry.sample_rate,
    )?;
    if let Some(addr) = listen {
        cfg.server.listen = addr;
        config::check_exposure(
            config::Listener::Public,
            addr,
            cfg.auth.is_some(),
            cfg.server.allow_unauthenticated,
        )?;
    }
    let listen = cfg.server.listen;
    let threads = if cfg.server.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.server.threads
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(cfg.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(cfg.server.grace_period_seconds.max(1)),
        ..ServerConf::default()
    };
    let connector = Connector::new(Some(
        pingora::connectors::ConnectorOptions::from_server_conf(&conf),
    ));
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let admin_listen = cfg.server.admin_listen;
    let tls = cfg.server.tls.clone();
    let state = Arc::new(
        AppState::new(cfg, connector)
            .map_err(anyhow::Error::msg)?
            .with_config_path(path),
    );
    reload_on_sighup(state.clone())?;
    condenser::server::start_shared_overrides(&state);
    let shadow = state.shadow.clone();
    // Each listener is its own service: the admin service answers only `/admin/*` and
    // `/metrics`, whatever address it is bound to, and the public one never answers them.
    let mut service = listener_service(&server.configuration, &state, Listener::Public);
    match &tls {
        Some((cert, key)) => service
            .add_tls(
                &listen.to_string(),
                &cert.to_string_lossy(),
                &key.to_string_lossy(),
            )
            .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?,
        None => service.add_tcp(&listen.to_string()),
    }
    server.add_service(service);
    if let Some(admin) = admin_listen {
        let mut admin_service = listener_service(&server.configuration, &state, Listener::Admin);
        admin_service.threads = Some(1);
        admin_service.add_tcp(&admin.to_string());
        server.add_service(admin_service);
        tracing::info!(%admin, "admin endpoints listening");
    }
    announce_when_listening(listen);
    tracing::info!(%listen, threads, "starting condenser");
    server.run(pingora::server::RunArgs::default());
    // Spans still batched are exported before exit.
    if let Some(provider) = tracer_provider {
        if let Err(error) = provider.shutdown() {
            tracing::warn!(%error, "flushing traces at exit");
        }
    }
    // Requests have finished; shadow samples still in flight are stored before exit.
    if let Some(shadow) = shadow {
        let left = shadow.drain(SHADOW_DRAIN);
        let stored = shadow
            .stats
            .stored
            .load(std::sync::atomic::Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(left, stored, "shadow samples still in flight at exit");
        } else {
            tracing::info!(stored, "shadow samples drained");
        }
    }
    Ok(())
}

/// One listener's service: the proxy answering for `listener`, behind the listener's
/// connection cap and header deadline (`server::listener`).
fn listener_service(
    conf: &Arc<ServerConf>,
    state: &Arc<AppState>,
    listener: Listener,
) -> Service<Guarded<HttpProxy<Condenser>>> {
    let (name, metric) = match listener {
        Listener::Admin => ("condenser-admin", "admin"),
        _ => ("condenser", "public"),
    };
    let proxy = pingora::proxy::http_proxy(conf, Condenser::new(state.clone(), listener));
    let settings = &state.server;
    let guarded = Guarded::new(
        proxy,
        metric,
        settings.max_connections,
        Duration::from_secs(settings.header_timeout_seconds),
    );
    Service::new(name.to_string(), guarded)
}

/// `SIGHUP` re-reads the configuration file, like `POST /admin/reload`; a file that does not
/// validate is logged and the running configuration stays.
fn reload_on_sighup(state: Arc<AppState>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
                    return;
                };
                while hangups.recv().await.is_some() {
                    match state.reload() {
                        Ok(restart) if restart.is_empty() => tracing::info!("SIGHUP: reloaded"),
                        Ok(restart) => tracing::warn!(?restart, "SIGHUP: reloaded; these changes apply at the next restart"),
                        Err(error) => tracing::error!(%error, "SIGHUP: reload refused; the running configuration stays"),
                    }
                }
            });
        })?;
    Ok(())
}

/// Diagnostics and the access log on stderr, as text (colours on a terminal) or one JSON object
/// per line (`server.log_format = "json"`) for log pipelines. `RUST_LOG` filters either.
fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => builder.json().flatten_event(true).init(),
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Longest the process waits at shutdown for shadow samples to be stored and scored.
const SHADOW_DRAIN: Duration = Duration::from_secs(30);

fn parse_since(text: &str) -> anyhow::Result<i64> {
    let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
    let n: i64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 24h"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("`{text}`: the unit must be s, m, h or d"),
    };
    Ok(condenser::shadow::now_ms() - n * ms)
}

fn report(
    path: &std::path::Path,
    store: Option<String>,
    route: Option<&str>,
    since: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    use condenser::shadow::store::{is_server_store, open_store};
    let cfg = config::load(path).ok();
    let store = match store {
        Some(store) => store,
        None => cfg
            .as_ref()
            .and_then(|c| c.shadow.as_ref())
            .map(|s| s.store.clone())
            .context("the config has no [shadow] section; pass --store")?,
    };
    anyhow::ensure!(
        is_server_store(&store) || std::path::Path::new(&store).is_file(),
        "{store} does not exist"
    );
    let since = since.map(parse_since).transpose()?.unwrap_or(0);
    let samples = open_store(&store)?.samples(route, since)?;
    let reports = condenser::shadow::report::summarise(&samples);
    // Live changes made through the admin API, which the samples were taken under.
    let overrides = match &cfg {
        Some(cfg) => {
            condenser::server::stored_overrides(&cfg.server).map_err(anyhow::Error::msg)?
        }
        None => condenser::control::Overrides::default(),
    };
    if json {
        let out = serde_json::json!({"routes": reports, "overrides": overrides.routes});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", condenser::shadow::report::markdown(&reports));
        for (route, o) in &overrides.routes {
            println!(
                "\nroute `{route}` is overridden through the admin API: {}",
                serde_json::to_string(o)?
            );
        }
    }
    Ok(())
}

/// Prints `listening on ADDR` once the socket accepts connections (pingora binds inside
/// `run_forever`, so readiness is observed from outside).
fn announce_when_listening(addr: SocketAddr) {
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("error: {addr} did not start accepting connections within 60 s");
    });
}
