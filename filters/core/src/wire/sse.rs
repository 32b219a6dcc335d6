//! Incremental server-sent-events parsing for streams that arrive in arbitrary chunks.
//!
//! Only complete events (terminated by a blank line) are returned; the rest is carried over to the next
//! chunk, so an event split anywhere, even inside a multi-byte character or between `\r` and `\n`,
//! parses the same as when it arrives whole.

/// One event: its `event:` name (if any) and its `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    carry: Vec<u8>,
}

/// Where the blank line that ends an event is: returns (end of the event, start of the next).
fn event_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        // A line ends in \n, \r\n or a lone \r; two line ends in a row end the event.
        let first_end = match buf.get(i) {
            Some(b'\n') => Some(i + 1),
            Some(b'\r') => match buf.get(i + 1) {
                Some(b'\n') => Some(i + 2),
                Some(_) => Some(i + 1),
                None => return None, // cannot tell \r from \r\n yet
            },
            _ => None,
        };
        if let Some(next) = first_end {
            match buf.get(next) {
                Some(b'\n') => return Some((i, next + 1)),
                Some(b'\r') => match buf.get(next + 1) {
                    Some(b'\n') => return Some((i, next + 2)),
                    Some(_) => return Some((i, next + 1)),
                    None => return None,
                },
                None => return None,
                Some(_) => {}
            }
            i = next;
        } else {
            i += 1;
        }
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(raw);
    let mut event = SseEvent::default();
    let mut data_lines: Vec<&str> = Vec::new();
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue; // comment or keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event.event = Some(value.to_string()),
            "data" => data_lines.push(value),
            _ => {} // id, retry: not needed here
        }
    }
    if data_lines.is_empty() && event.event.is_none() {
        return None;
    }
    event.data = data_lines.join("\n");
    Some(event)
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.carry.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut consumed = 0;
        while let Some((end, next)) = self.carry.get(consumed..).and_then(event_boundary) {
            if let Some(event) = self
                .carry
                .get(consumed..consumed + end)
                .and_then(parse_event)
            {
                events.push(event);
            }
            consumed += next;
        }
        self.carry.drain(..consumed);
        events
    }

    /// The stream ended: a last event without its blank line still counts.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let rest = std::mem::take(&mut self.carry);
        parse_event(&rest)
    }

    /// Bytes held back waiting for the end of an event.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\ndata: {\"a\":\"é\"}\n\n: keep-alive\n\nevent: ping\r\ndata: {}\r\n\r\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\":\"é\"}".into(),
            },
            SseEvent {
                event: Some("ping".into()),
                data: "{}".into(),
            },
            SseEvent {
                event: None,
                data: "line1\nline2".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn whole_stream() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(STREAM.as_bytes()), expected());
        assert_eq!(parser.pending(), 0);
    }

    #[test]
    fn every_two_way_split_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            let mut parser = SseParser::new();
            let mut events = parser.push(&bytes[..split]);
            events.extend(parser.push(&bytes[split..]));
            assert_eq!(events, expected(), "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut parser = SseParser::new();
        let events: Vec<SseEvent> = STREAM
            .as_bytes()
            .iter()
            .flat_map(|b| parser.push(&[*b]))
            .collect();
        assert_eq!(events, expected());
    }

    #[test]
    fn unterminated_last_event_is_returned_by_finish() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: tail").is_empty());
        assert_eq!(
            parser.finish(),
            Some(SseEvent {
                event: None,
                data: "tail".into()
            })
        );
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut parser = SseParser::new();
        parser.push(b"\xff\xfe\r\r\n\n:\n\ndata\n\nevent:\n\n");
        parser.push(&[0u8; 100]);
        let _ = parser.finish();
    }
}
