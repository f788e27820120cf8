//! Incremental Server-Sent Events parser: bytes in, complete events out. Upstream chunks can end
//! anywhere (mid-line, mid-event, between `\r` and `\n`), so partial events are buffered until
//! their terminating blank line arrives.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    /// Feeds one chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some((end, skip)) = find_event_end(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
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

/// Position of the first blank line and the length of the separator.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn parse_event(raw: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in raw.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
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

/// One OpenAI-style SSE frame.
pub fn data_frame(json: &serde_json::Value) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

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
    fn a_cut_event_stays_pending() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: {\"partial\"").is_empty());
        assert!(!parser.pending().is_empty());
    }
}
