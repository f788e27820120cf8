//! A provider's non-streaming answer and error bodies: translated to OpenAI's shapes, a success
//! must come out as a JSON `chat.completion` (or be refused with a reason), and an error of any
//! status as a JSON `{"error": {...}}` object.
#![no_main]

use condenser::config::UpstreamKind;
use condenser::openai::Answer;
use condenser::providers::for_kind;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&status, body)) = data.split_first() else {
        return;
    };
    let status = 400 + u16::from(status);
    for kind in [UpstreamKind::Anthropic, UpstreamKind::Gemini] {
        let provider = for_kind(kind);
        if let Ok(completion) = provider.decode_chat(body, "m") {
            let value: Value = serde_json::from_slice(&completion).expect("a completion is JSON");
            assert_eq!(value["object"], "chat.completion", "{value}");
            assert!(value["choices"].is_array(), "{value}");
            let _ = Answer::from_completion(&completion);
        }
        let error: Value =
            serde_json::from_slice(&provider.decode_error(status, body)).expect("an error is JSON");
        assert!(error["error"].is_object(), "{error}");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let _ = Answer::from_completion(body);
});
