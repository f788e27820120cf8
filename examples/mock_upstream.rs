//! A fast OpenAI-compatible mock upstream for benchmarks: answers every chat completion with the
//! same small JSON body, as fast as it can. `cargo run --release --example mock_upstream -- ADDR`

use axum::routing::post;
use axum::Router;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":1,"total_tokens":1001}}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18001".into());
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|_body: axum::body::Bytes| async {
                ([("content-type", "application/json")], COMPLETION)
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("mock upstream on {addr}");
    axum::serve(listener, app).await.expect("serve");
}
