//! A table of malformed requests, each sent to the real binary and answered with the right 4xx
//! and a message — in OpenAI's error shape, or Anthropic's on `/v1/messages` — and never
//! forwarded upstream. Framing faults (a bad `Content-Length`, a chunked body cut short) are sent
//! over a raw socket, since no HTTP client will produce them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{config, Condenser, MockUpstream};
use serde_json::Value;

/// One bad request: what it is, the path, the raw body, and the status and `code` expected.
struct Case {
    what: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    what: &'static str,
    path: &'static str,
    body: &[u8],
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        path,
        body: body.to_vec(),
        status,
        code,
    }
}

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

fn cases() -> Vec<Case> {
    let nested = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":{}1{}}}]}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let many_messages = format!(
        "{{\"model\":\"m\",\"messages\":[{}]}}",
        vec![r#"{"role":"user","content":"hi"}"#; 51].join(",")
    );
    let oversized = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(70_000)
    );
    vec![
        case("truncated JSON", CHAT, br#"{"model": "gpt-4o", "messages": ["#, 400, "invalid_json"),
        case("not JSON at all", CHAT, b"model=gpt-4o", 400, "invalid_json"),
        case("empty body", CHAT, b"", 400, "invalid_json"),
        case("a JSON array", CHAT, b"[1, 2]", 400, "invalid_request"),
        case("a JSON string", CHAT, br#""hello""#, 400, "invalid_request"),
        case("no model", CHAT, br#"{"messages": [{"role": "user", "content": "hi"}]}"#, 400, "invalid_request"),
        case("empty model", CHAT, br#"{"model": "", "messages": [{"role": "user", "content": "hi"}]}"#, 400, "invalid_request"),
        case("numeric model", CHAT, br#"{"model": 4, "messages": [{"role": "user", "content": "hi"}]}"#, 400, "invalid_request"),
        case("huge number as model", CHAT, br#"{"model": 1e999, "messages": []}"#, 400, "invalid_json"),
        case("no messages", CHAT, br#"{"model": "gpt-4o"}"#, 400, "invalid_request"),
        case("messages an object", CHAT, br#"{"model": "gpt-4o", "messages": {"role": "user"}}"#, 400, "invalid_request"),
        case("messages empty", CHAT, br#"{"model": "gpt-4o", "messages": []}"#, 400, "invalid_request"),
        case("a message that is a string", CHAT, br#"{"model": "gpt-4o", "messages": ["hi"]}"#, 400, "invalid_request"),
        case("a message without role", CHAT, br#"{"model": "gpt-4o", "messages": [{"content": "hi"}]}"#, 400, "invalid_request"),
        case("a numeric role", CHAT, br#"{"model": "gpt-4o", "messages": [{"role": 1, "content": "hi"}]}"#, 400, "invalid_request"),
        case("an unknown role", CHAT, br#"{"model": "gpt-4o", "messages": [{"role": "wizard", "content": "hi"}]}"#, 400, "invalid_request"),
        case("numeric content", CHAT, br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}"#, 400, "invalid_request"),
        case("a content part without type", CHAT, br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": [{"text": "hi"}]}]}"#, 400, "invalid_request"),
        case("stream as a string", CHAT, br#"{"model": "gpt-4o", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}"#, 400, "invalid_request"),
        case("invalid UTF-8", CHAT, b"{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}", 400, "invalid_json"),
        case("a NUL byte between tokens", CHAT, b"{\"model\": \"gpt-4o\",\x00 \"messages\": []}", 400, "invalid_json"),
        case("JSON nested 5,000 deep", CHAT, nested.as_bytes(), 400, "invalid_json"),
        case("a body over max_body_bytes", CHAT, oversized.as_bytes(), 413, "request_too_large"),
        case("more messages than max_messages", CHAT, many_messages.as_bytes(), 400, "invalid_request"),
        case("Anthropic: no messages", MESSAGES, br#"{"model": "claude-x", "max_tokens": 8}"#, 400, "invalid_request_error"),
        case("Anthropic: a block without type", MESSAGES, br#"{"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": [{"text": "hi"}]}]}"#, 400, "invalid_request_error"),
        case("Anthropic: broken JSON", MESSAGES, br#"{"model": "claude-x", "#, 400, "invalid_request_error"),
    ]
}

/// Sends raw bytes and returns the status line's code (0 when the connection closed unanswered).
fn raw(addr: std::net::SocketAddr, request: &[u8], then_close_write: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(request);
    if then_close_write {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn every_kind_of_malformed_request_gets_its_4xx_and_goes_nowhere() {
    let mock = MockUpstream::start().await;
    let cfg = config(
        &mock.base_url(),
        "max_body_bytes = 65536\nmax_messages = 50",
        "enabled = true",
    );
    let claude = format!(
        "\n[[upstreams]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{}\"\n",
        mock.base_url()
    );
    let routes =
        "[[routes]]\nname = \"claude\"\nmodels = [\"claude-*\"]\nupstream = \"claude\"\n\n";
    let cfg = cfg.replacen("[[routes]]", &format!("{claude}\n{routes}[[routes]]"), 1);
    let proxy = Condenser::start(&cfg);
    let client = reqwest::Client::new();
    let table = cases();
    assert!(table.len() >= 25, "{} kinds", table.len());
    for c in &table {
        let resp = client
            .post(proxy.url(c.path))
            .header("content-type", "application/json")
            .body(c.body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        assert_eq!(resp.status().as_u16(), c.status, "{}", c.what);
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: error body is not JSON: {e}", c.what));
        let (code, message) = if c.path == MESSAGES {
            (&body["error"]["type"], &body["error"]["message"])
        } else {
            (&body["error"]["code"], &body["error"]["message"])
        };
        assert_eq!(code, c.code, "{}: {body}", c.what);
        assert!(
            message.as_str().is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            c.what
        );
    }
    let addr = proxy.addr;
    // Framing faults, over a raw socket.
    let (status, text) = raw(
        addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: many\r\n\r\n{}",
        false,
    );
    assert!((400..500).contains(&status), "bad Content-Length: {text}");
    let (status, text) = raw(
        addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"model\":",
        true,
    );
    assert_eq!(status, 400, "a chunked body cut short is refused: {text}");
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, text) = raw(
        addr,
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{many_headers}\r\n")
            .as_bytes(),
        false,
    );
    assert_eq!(status, 431, "150 headers: {text}");
    let big_header = format!(
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, text) = raw(addr, big_header.as_bytes(), false);
    assert!(
        status == 431 || status == 400,
        "70 KB of headers: {}",
        &text[..text.len().min(200)]
    );
    // Request smuggling shapes: Content-Length with Transfer-Encoding (the chunked framing wins:
    // its empty body is not a request), two different Content-Lengths, and a request line
    // longer than the parser takes.
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let both = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        chat.len()
    );
    let (status, text) = raw(addr, both.as_bytes(), false);
    assert_eq!(status, 400, "Content-Length and Transfer-Encoding: {text}");
    let twice = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Length: 5\r\nContent-Length: {}\r\n\r\n{chat}",
        chat.len()
    );
    let (status, text) = raw(addr, twice.as_bytes(), false);
    assert_eq!(status, 400, "two Content-Lengths: {text}");
    let long_line = format!(
        "GET /v1/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let (status, text) = raw(addr, long_line.as_bytes(), false);
    assert_eq!(
        status,
        400,
        "a 70 KB request line: {}",
        &text[..text.len().min(200)]
    );
    // Header values and names that would be forwarded are checked first: control bytes (a NUL,
    // a bare CR that could split the upstream request) and names that are not tokens.
    for bad in [
        "x-note: a\x00b",
        "x-note: a\rb",
        "x-note: a\x01b",
        "x-bad name: v",
        "x-note\x7f: v",
    ] {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\n{bad}\r\nContent-Length: {}\r\n\r\n{chat}",
            chat.len()
        );
        let (status, text) = raw(addr, request.as_bytes(), false);
        assert_eq!(status, 400, "{bad:?}: {text}");
    }
    assert!(
        mock.received().is_empty(),
        "nothing malformed went upstream"
    );
    // And the proxy still serves.
    let ok = client
        .post(proxy.url(CHAT))
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
}
