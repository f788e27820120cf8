//! A client's `/v1/chat/completions` body: parsing, then the compression policy and the
//! model-free compressors on whatever parsed. The compressed request must still serialise and
//! parse back with the same model, stream flag and number of messages.
#![no_main]

use condenser::openai::ChatRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ChatRequest::parse(data) else {
        return;
    };
    for compressor in condenser_fuzz::compressors() {
        let mut compressed = request.clone();
        condenser_fuzz::compress(compressed.messages_mut(), compressor);
        let again =
            ChatRequest::parse(&compressed.to_bytes()).expect("a compressed request parses");
        assert_eq!(again.model, request.model);
        assert_eq!(again.stream, request.stream);
        assert_eq!(again.messages().len(), request.messages().len());
    }
});
