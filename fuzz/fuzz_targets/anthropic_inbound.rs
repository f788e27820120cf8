//! A client's `/v1/messages` body (the Anthropic-native front door): the compression view that
//! shows it to the compression policy as OpenAI-shaped messages, compression, and the write-back
//! into the request. Nothing but text may change: the message count, roles and every
//! non-text field stay as they came.
#![no_main]

use condenser::providers::anthropic::inbound::{texts, CompressionView};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let _ = texts(&body);
    for compressor in condenser_fuzz::compressors() {
        let mut view = CompressionView::of(&body);
        condenser_fuzz::compress(&mut view.messages, compressor);
        let mut written = body.clone();
        view.write_back(&mut written);
        let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&written), keys(&body), "top-level fields changed");
        let messages = |m: &Map<String, Value>| {
            m.get("messages")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|m| m.get("role").cloned()).collect::<Vec<_>>())
        };
        assert_eq!(
            messages(&written),
            messages(&body),
            "messages or roles changed"
        );
        serde_json::to_vec(&written).expect("serialises");
    }
});
