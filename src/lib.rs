//! condenser: an OpenAI-compatible proxy that compresses long LLM context before forwarding it.
//!
//! The library holds everything but the command line, so `condenser-eval` and the training
//! binary reuse the same configuration, compressors and wire types as the proxy.

pub mod access;
pub mod compress;
pub mod config;
pub mod control;
pub mod equivalence;
pub mod error;
pub mod llm;
pub mod lora;
pub mod metrics;
pub mod openai;
pub mod providers;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod telemetry;
pub mod text;
pub mod url_path;
