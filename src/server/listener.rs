//! What each listener enforces on a connection before pingora's HTTP code sees it:
//! - **a connection cap** (`server.max_connections` per listener): one over it is answered 503
//!   with `Connection: close` and closed, instead of holding a task and a descriptor;
//! - **a header deadline** (`server.header_timeout_seconds`): from a request's first byte, its
//!   header (up to the blank line) must arrive within the deadline, or the connection is closed.
//!   pingora bounds each read but not the whole header, so a client trickling one header byte
//!   at a time could hold a connection for ever (slowloris).
//!
//! pingora's proxy service reads the header before any `ProxyHttp` hook runs, so both live here,
//! in a [`ServerApp`] wrapped around the proxy and a stream wrapped around the connection. The
//! body has its own deadline (`request::read_whole`) and an idle keep-alive connection its own
//! (`server.keepalive_timeout_seconds`); the header clock starts at a request's first byte, so
//! neither idle time counts against it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Semaphore;

/// Header bytes scanned for the blank line: past this, pingora's parser refuses the header
/// anyway, and a body after `100 Continue` is not timed as a header.
const MAX_SCANNED: usize = 1024 * 1024;

/// The answer to a connection over the cap.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 108\r\n\r\n{\"error\":{\"message\":\"too many connections; retry shortly\",\"type\":\"api_error\",\"param\":null,\"code\":\"overloaded\"}}";

/// A listener's limits around the application `A` (the pingora proxy).
pub struct Guarded<A> {
    inner: Arc<A>,
    /// The listener's name in metrics (`public`, `admin`).
    name: &'static str,
    connections: Option<Arc<Semaphore>>,
    header_timeout: Duration,
}

impl<A> Guarded<A> {
    /// `max_connections` 0: no cap.
    pub fn new(
        inner: A,
        name: &'static str,
        max_connections: usize,
        header_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            name,
            connections: (max_connections > 0).then(|| Arc::new(Semaphore::new(max_connections))),
            header_timeout,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _place = match &self.connections {
            None => None,
            Some(cap) => match cap.clone().try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => {
                    if let Some(m) = crate::metrics::recording() {
                        m.connections_refused.with_label_values(&[self.name]).inc();
                    }
                    let _ = session.write_all(OVER_CAPACITY).await;
                    let _ = session.flush().await;
                    Shutdown::shutdown(session.as_mut()).await;
                    return None;
                }
            },
        };
        let stream: Stream = Box::new(HeaderClock::new(session, self.header_timeout));
        // The proxy serves every request of the connection (keep-alive included) before it
        // returns, so the place is held exactly as long as the connection.
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// A connection whose request headers must each arrive within a deadline (module header).
#[derive(Debug)]
struct HeaderClock {
    inner: Stream,
    scan: HeaderScan,
}

impl HeaderClock {
    fn new(inner: Stream, limit: Duration) -> Self {
        Self {
            inner,
            scan: HeaderScan::new(limit),
        }
    }
}

/// Where the connection is in a request header, and the header's deadline.
#[derive(Debug)]
struct HeaderScan {
    limit: Duration,
    /// Looking for the end of a request header: from the connection's start and after every
    /// response write, until the blank line.
    scanning: bool,
    /// Header bytes seen so far, and the last three (a `\r\n\r\n` may straddle two reads).
    seen: usize,
    tail: [u8; 3],
    /// Armed at the header's first byte.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HeaderScan {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            scanning: true,
            seen: 0,
            tail: [0; 3],
            deadline: None,
        }
    }

    /// Notes `bytes` just read: arms the clock at a header's first byte, stops it at the blank
    /// line.
    fn observe(&mut self, bytes: &[u8]) {
        if !self.scanning || bytes.is_empty() {
            return;
        }
        if self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep(self.limit)));
        }
        let carried = self.seen.min(3);
        let mut window = Vec::with_capacity(carried + bytes.len());
        window.extend_from_slice(&self.tail[3 - carried..]);
        window.extend_from_slice(bytes);
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            self.stop();
            return;
        }
        self.seen += bytes.len();
        let keep = window.len().min(3);
        self.tail[3 - keep..].copy_from_slice(&window[window.len() - keep..]);
        if self.seen > MAX_SCANNED {
            self.stop();
        }
    }

    fn stop(&mut self) {
        self.scanning = false;
        self.deadline = None;
    }

    /// The next request's header starts with the next byte read.
    fn restart(&mut self) {
        self.scanning = true;
        self.seen = 0;
        self.deadline = None;
    }

    /// Whether the header's deadline has passed (registering the waker until it does).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

impl AsyncRead for HeaderClock {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.scan.expired(cx) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request header not received in time",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.scan.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for HeaderClock {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // A response (or `100 Continue`) is going out: what is read next starts a request.
        self.scan.restart();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.scan.restart();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// Everything else is the connection's own: TLS facts, digests, ids.
#[async_trait]
impl Shutdown for HeaderClock {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

impl UniqueID for HeaderClock {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderClock {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderClock {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderClock {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeaderClock {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeaderClock {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_clock_runs_from_a_headers_first_byte_to_its_blank_line() {
        let mut scan = HeaderScan::new(Duration::from_secs(1));
        assert!(scan.deadline.is_none(), "idle time is not header time");
        scan.observe(b"GET / HTTP/1.1\r\nHost: x\r");
        assert!(scan.scanning && scan.deadline.is_some());
        // The blank line straddles three reads.
        scan.observe(b"\n\r");
        assert!(scan.scanning);
        scan.observe(b"\nbody");
        assert!(!scan.scanning && scan.deadline.is_none());
        // The body is not a header; the next request is, once a response went out.
        scan.observe(b"more body");
        assert!(scan.deadline.is_none());
        scan.restart();
        scan.observe(b"P");
        assert!(scan.deadline.is_some());
    }

    #[tokio::test]
    async fn scanning_stops_past_the_largest_header() {
        let mut scan = HeaderScan::new(Duration::from_secs(1));
        scan.observe(&vec![b'a'; MAX_SCANNED + 1]);
        assert!(!scan.scanning && scan.deadline.is_none());
    }
}
