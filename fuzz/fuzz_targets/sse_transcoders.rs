//! A provider's streaming answer, cut into chunks at arbitrary places: the Anthropic and Gemini
//! SSE transcoders must emit well-formed OpenAI `chat.completion.chunk` events whatever arrives —
//! never a `[DONE]` after an error — and the shadow comparison's stream reader must not fail.
#![no_main]

use condenser::config::UpstreamKind;
use condenser::openai::Answer;
use condenser::providers::for_kind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size: events split anywhere, UTF-8 included.
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let size = usize::from(size % 64) + 1;
    for kind in [UpstreamKind::Anthropic, UpstreamKind::Gemini] {
        for include_usage in [false, true] {
            let mut transcoder = for_kind(kind).stream_transcoder("m", include_usage);
            let mut frames = Vec::new();
            for chunk in body.chunks(size) {
                frames.extend(transcoder.feed(chunk));
            }
            frames.extend(transcoder.finish());
            condenser_fuzz::assert_openai_sse(&frames);
            let _ = Answer::from_stream(&frames);
        }
    }
    let _ = Answer::from_stream(body);
});
