//! A chaos upstream for the soak: an OpenAI-compatible server on raw TCP that answers each
//! request with a fault drawn at random — a reset connection, 5xx/429, headers or body stalled
//! past condenser's timeout, an SSE stream cut mid-event, invalid JSON, a huge body, a slow
//! drip — or a proper answer. Raw TCP because the faults are below what an HTTP framework lets
//! a handler do. Every fault served is counted by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Answer,
    Reset,
    Status500,
    Status503,
    Status429,
    StallHeaders,
    StallBody,
    CutMidBody,
    InvalidJson,
    HugeBody,
    SlowDrip,
}

const FAULTS: &[(Fault, u32)] = &[
    (Fault::Answer, 40),
    (Fault::Reset, 6),
    (Fault::Status500, 6),
    (Fault::Status503, 6),
    (Fault::Status429, 6),
    (Fault::StallHeaders, 4),
    (Fault::StallBody, 4),
    (Fault::CutMidBody, 8),
    (Fault::InvalidJson, 6),
    (Fault::HugeBody, 2),
    (Fault::SlowDrip, 6),
];

pub struct ChaosUpstream {
    pub port: u16,
    served: Arc<Mutex<BTreeMap<Fault, u64>>>,
    pub requests: Arc<AtomicU64>,
}

impl ChaosUpstream {
    /// Starts the server; `stall` is how long stalled answers hang (longer than the proxy's
    /// upstream timeout).
    pub async fn start(seed: u64, stall: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let served = Arc::new(Mutex::new(BTreeMap::new()));
        let requests = Arc::new(AtomicU64::new(0));
        let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        let (s, r) = (served.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (served, requests, rng) = (s.clone(), r.clone(), rng.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, stall, &served, &requests, &rng).await;
                });
            }
        });
        Self {
            port,
            served,
            requests,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Faults served so far, by kind.
    pub fn served(&self) -> BTreeMap<Fault, u64> {
        self.served.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

fn draw(rng: &Mutex<fastrand::Rng>) -> Fault {
    let total: u32 = FAULTS.iter().map(|(_, w)| w).sum();
    let mut pick = rng.lock().map(|mut r| r.u32(..total)).unwrap_or(0);
    for &(fault, weight) in FAULTS {
        if pick < weight {
            return fault;
        }
        pick -= weight;
    }
    Fault::Answer
}

/// Reads one request (headers and a `Content-Length` body); `None` when the peer closed.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            while buf.len() < total {
                let mut chunk = [0u8; 16384];
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            return Some(body);
        }
        let mut chunk = [0u8; 16384];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-chaos", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    })
    .to_string()
}

fn event(content: &str) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-chaos", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    });
    format!("data: {chunk}\n\n")
}

fn chunked(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn json_head(status: &str, length: usize, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n{extra}\r\n")
}

async fn serve(
    mut conn: TcpStream,
    stall: Duration,
    served: &Mutex<BTreeMap<Fault, u64>>,
    requests: &AtomicU64,
    rng: &Mutex<fastrand::Rng>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(body) = read_request(&mut conn, &mut buf).await {
        requests.fetch_add(1, Ordering::Relaxed);
        let stream = String::from_utf8_lossy(&body).contains("\"stream\":true");
        let fault = draw(rng);
        if let Ok(mut m) = served.lock() {
            *m.entry(fault).or_default() += 1;
        }
        let error = |message: &str| {
            serde_json::json!({"error": {"message": message, "type": "server_error", "code": null}})
                .to_string()
        };
        match fault {
            Fault::Answer if stream => {
                conn.write_all(SSE_HEAD.as_bytes()).await?;
                for word in ["The ", "lamp ", "was ", "lit."] {
                    conn.write_all(&chunked(&event(word))).await?;
                }
                conn.write_all(&chunked("data: [DONE]\n\n")).await?;
                conn.write_all(b"0\r\n\r\n").await?;
            }
            Fault::Answer => {
                let body = completion("The lamp was lit in 1896.");
                conn.write_all(format!("{}{body}", json_head("200 OK", body.len(), "")).as_bytes())
                    .await?;
            }
            Fault::Reset => {
                // A zero linger never blocks (the deprecation's concern): the close sends RST.
                #[allow(deprecated)]
                conn.set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Fault::Status500 | Fault::Status503 | Fault::Status429 => {
                let (status, extra) = match fault {
                    Fault::Status500 => ("500 Internal Server Error", ""),
                    Fault::Status503 => ("503 Service Unavailable", ""),
                    _ => ("429 Too Many Requests", "retry-after: 0\r\n"),
                };
                let body = error("chaos");
                conn.write_all(
                    format!("{}{body}", json_head(status, body.len(), extra)).as_bytes(),
                )
                .await?;
            }
            Fault::StallHeaders => {
                tokio::time::sleep(stall).await;
                return Ok(());
            }
            Fault::StallBody => {
                let body = completion("stalled");
                conn.write_all(json_head("200 OK", body.len(), "").as_bytes())
                    .await?;
                conn.write_all(&body.as_bytes()[..body.len() / 2]).await?;
                tokio::time::sleep(stall).await;
                return Ok(());
            }
            Fault::CutMidBody if stream => {
                conn.write_all(SSE_HEAD.as_bytes()).await?;
                conn.write_all(&chunked(&event("The "))).await?;
                let partial = event("lamp");
                conn.write_all(&chunked(&partial[..partial.len() / 2]))
                    .await?;
                return Ok(());
            }
            Fault::CutMidBody => {
                let body = completion("cut");
                conn.write_all(json_head("200 OK", body.len(), "").as_bytes())
                    .await?;
                conn.write_all(&body.as_bytes()[..body.len() / 2]).await?;
                return Ok(());
            }
            Fault::InvalidJson => {
                let body = "{\"choices\": [ not json";
                conn.write_all(format!("{}{body}", json_head("200 OK", body.len(), "")).as_bytes())
                    .await?;
            }
            Fault::HugeBody => {
                let body = completion(&"lorem ipsum ".repeat(700_000));
                conn.write_all(format!("{}{body}", json_head("200 OK", body.len(), "")).as_bytes())
                    .await?;
            }
            Fault::SlowDrip if stream => {
                conn.write_all(SSE_HEAD.as_bytes()).await?;
                for _ in 0..20 {
                    conn.write_all(&chunked(&event("drip "))).await?;
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                conn.write_all(&chunked("data: [DONE]\n\n")).await?;
                conn.write_all(b"0\r\n\r\n").await?;
            }
            Fault::SlowDrip => {
                let body = completion("dripped");
                conn.write_all(json_head("200 OK", body.len(), "").as_bytes())
                    .await?;
                for piece in body.as_bytes().chunks(32) {
                    conn.write_all(piece).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    Ok(())
}
