//! Incremental Server-Sent Events parser: bytes in, complete events out. Upstream chunks can end
//! anywhere (mid-line, mid-event, between `\r` and `\n`), so partial events are buffered until
//! their terminating blank line arrives. Line ends are normalised as bytes arrive (`\r\n`, bare
//! `\r` and `\n` all end a line, as the SSE spec says), and each feed scans only the bytes it has
//! not scanned before, so a long event costs linear time however finely it is chunked. One event
//! may hold at most [`MAX_EVENT_BYTES`]: a longer one is dropped whole (its bytes discarded up
//! to its blank line), so an upstream that never ends an event cannot grow the buffer without
//! bound.

/// Largest event kept (a provider's events are a few KiB; a whole non-streamed answer is far
/// below this).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Received bytes after the last complete event, line ends normalised to `\n`.
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no blank line.
    scanned: usize,
    /// The last byte was a `\r`: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    /// An event outgrew [`MAX_EVENT_BYTES`]: bytes are dropped until its blank line.
    discarding: bool,
}

impl SseParser {
    /// Feeds one chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.reserve(chunk.len());
        for &byte in chunk {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            if byte == b'\r' {
                self.after_cr = true;
                self.buffer.push(b'\n');
            } else {
                self.buffer.push(byte);
            }
        }
        let mut events = Vec::new();
        loop {
            // A blank line may straddle the previous scan's end by one byte.
            let from = self.scanned.saturating_sub(1);
            let Some(at) = self.buffer[from..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| from + p)
            else {
                if self.discarding || self.buffer.len() > MAX_EVENT_BYTES {
                    // Keep the last byte: a blank line may straddle this chunk's end.
                    let keep = self.buffer.len().saturating_sub(1);
                    self.buffer.drain(..keep);
                    self.discarding = true;
                }
                self.scanned = self.buffer.len();
                break;
            };
            let raw: Vec<u8> = self.buffer.drain(..at + 2).take(at).collect();
            self.scanned = 0;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            if let Some(event) = parse_event(&String::from_utf8_lossy(&raw)) {
                events.push(event);
            }
        }
        events
    }

    /// Bytes received after the last complete event (non-empty means the stream was cut).
    pub fn pending(&self) -> &[u8] {
        &self.buffer
    }
}

fn parse_event(raw: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in raw.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_arbitrary_chunk_boundaries() {
        let stream = b"event: ping\ndata: {\"type\": \"ping\"}\n\n: comment\n\nevent: message_stop\r\ndata: {\"a\":1}\r\n\r\ndata: line1\ndata: line2\n\n";
        for split in 1..stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            assert_eq!(events.len(), 3, "split at {split}");
            assert_eq!(events[0].event.as_deref(), Some("ping"));
            assert_eq!(events[1].data, "{\"a\":1}");
            assert_eq!(events[2].data, "line1\nline2");
            assert!(parser.pending().is_empty());
        }
    }

    #[test]
    fn bare_carriage_returns_end_lines_and_events() {
        let stream = b"event: a\rdata: 1\r\rdata: 2\r\n\r\ndata: 3\n\n";
        for split in 1..stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, ["1", "2", "3"], "split at {split}");
            assert_eq!(events[0].event.as_deref(), Some("a"));
        }
    }

    #[test]
    fn a_long_event_fed_byte_by_byte_arrives_whole() {
        let payload = "x".repeat(200_000);
        let stream = format!("data: {payload}\n\n");
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for byte in stream.as_bytes().chunks(1) {
            events.extend(parser.feed(byte));
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), payload.len());
        assert!(parser.pending().is_empty());
    }

    #[test]
    fn an_endless_event_is_dropped_not_buffered() {
        let mut parser = SseParser::default();
        let chunk = vec![b'x'; 1024 * 1024];
        assert!(parser.feed(b"data: ").is_empty());
        for _ in 0..(MAX_EVENT_BYTES / chunk.len() + 4) {
            assert!(parser.feed(&chunk).is_empty());
        }
        assert!(
            parser.pending().len() <= chunk.len() + 8,
            "{}",
            parser.pending().len()
        );
        // The oversized event ends; the next one is parsed normally.
        let events = parser.feed(b"\n\ndata: {\"ok\":true}\n\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "{\"ok\":true}");
    }

    #[test]
    fn a_cut_event_stays_pending() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: {\"partial\"").is_empty());
        assert!(!parser.pending().is_empty());
    }
}
