//! OpenAI's chat-completions wire format, every shape of it condenser reads or writes: the
//! inbound request (`request`), a completion and the answer read from one or from a stream
//! (`completion`), stream chunks and SSE frames (`chunk`), the error body (`error`), and the
//! `x-condenser-*` header vocabulary the proxy, eval and tests share (`headers`). Plain wire
//! types: this module imports nothing else from the crate.

pub mod chunk;
pub mod completion;
pub mod error;
pub mod headers;
pub mod request;

pub use completion::Answer;
pub use request::{ChatRequest, WireError};

/// Seconds since the epoch, for the `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
