//! The `x-condenser-*` headers: proxy-only knobs a client may send, and the facts condenser adds
//! to its answers. Names and values live here once, shared by the proxy, condenser-eval and the
//! tests. Every `x-condenser-*` request header is stripped before forwarding.

/// Prefix of every condenser header.
pub const PREFIX: &str = "x-condenser-";

/// Request: pick the route by name instead of by model.
pub const ROUTE: &str = "x-condenser-route";
/// Request: `off`, `on` (the route's compressor) or a compressor's name.
pub const COMPRESS: &str = "x-condenser-compress";
/// `x-condenser-compress` value: forward uncompressed.
pub const COMPRESS_OFF: &str = "off";
/// `x-condenser-compress` value: compress with the route's compressor.
pub const COMPRESS_ON: &str = "on";

/// Response: token counts of the messages before and after compression.
pub const TOKENS_BEFORE: &str = "x-condenser-tokens-before";
pub const TOKENS_AFTER: &str = "x-condenser-tokens-after";
/// Response: the compressor applied (`off` when none).
pub const COMPRESSOR: &str = "x-condenser-compressor";
/// Response: which tokenizer counted, for which model.
pub const TOKENIZER: &str = "x-condenser-tokenizer";
/// Response: `true` when compression failed and the original was forwarded.
pub const FAIL_OPEN: &str = "x-condenser-fail-open";
/// Response: which leg of a shadow sample the client was served.
pub const SHADOW: &str = "x-condenser-shadow";
/// Response: how many upstream attempts the answer took (retries and failover included).
pub const ATTEMPTS: &str = "x-condenser-attempts";
