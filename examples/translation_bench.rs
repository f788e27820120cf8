//! Translation overhead: µs per request encoded, per answer decoded, and per streamed chunk
//! transcoded, for the Anthropic and Gemini dialects. Medians of repeated timed batches.
//! `cargo run --release --example translation_bench`

use std::time::Instant;

use condenser::config::UpstreamKind;
use condenser::openai::ChatRequest;
use condenser::providers::{for_kind, Provider};
use serde_json::json;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// Median µs per call over 15 batches of `n` calls.
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    let mut batches: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

fn main() {
    let doc =
        "The committee reviewed the regional budget and the railway museum plans. ".repeat(50);
    let request = json!({
        "model": "claude-sonnet-4-5", "temperature": 0.2, "stream": true,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}}}}],
        "messages": [
            {"role": "system", "content": "Answer from the document."},
            {"role": "user", "content": format!("{doc}\n\nWhat was reviewed?")},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "user", "content": "And tomorrow?"}
        ]
    });
    let request = ChatRequest::parse(request.to_string().as_bytes()).expect("request");
    println!(
        "| provider | encode request (µs) | decode answer (µs) | transcode one stream chunk (µs) |"
    );
    println!("|---|---|---|---|");
    for (kind, answer, stream) in [
        (
            UpstreamKind::Anthropic,
            "anthropic/tool_use.json",
            "anthropic/stream_tool_use.sse",
        ),
        (
            UpstreamKind::Gemini,
            "gemini/response.json",
            "gemini/stream.sse",
        ),
    ] {
        let provider: std::sync::Arc<dyn Provider> = for_kind(kind);
        let encode = median_us(200, || {
            std::hint::black_box(provider.encode_chat(&request).expect("encode"));
        });
        let answer = fixture(answer);
        let decode = median_us(2000, || {
            std::hint::black_box(provider.decode_chat(&answer, "m").expect("decode"));
        });
        // Each SSE event fed as its own chunk, as upstreams usually send them.
        let transcript = fixture(stream);
        let text = String::from_utf8_lossy(&transcript).to_string();
        let events: Vec<String> = text
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| format!("{e}\n\n"))
            .collect();
        let per_stream = median_us(500, || {
            let mut t = provider.stream_transcoder("m", true);
            for e in &events {
                std::hint::black_box(t.feed(e.as_bytes()));
            }
            std::hint::black_box(t.finish());
        });
        println!(
            "| {kind:?} | {encode:.1} | {decode:.1} | {:.2} ({} events) |",
            per_stream / events.len() as f64,
            events.len()
        );
    }
}
