//! Server-sent events framing: incremental splitting of what providers send, and the one
//! encoder of what the gateway writes ([`write_event`]).
//!
//! Bytes arrive in arbitrary pieces (ext_proc chunks); events end at a blank line, which
//! may be `\n\n`, `\r\n\r\n` or mixed. Only the unfinished tail is kept between calls, so
//! the work per chunk is proportional to the chunk.

/// Most bytes held back waiting for the end of an event. Past this, what is pending is
/// handed on as it is (a provider that never ends an event cannot grow memory).
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

/// Splits a byte stream into complete SSE events.
#[derive(Debug, Default)]
pub struct SseSplitter {
    pending: Vec<u8>,
}

impl SseSplitter {
    /// Feeds `chunk`; returns the raw bytes of every event completed by it (each including
    /// its terminating blank line).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let scan_from = self.pending.len().saturating_sub(3);
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = scan_from;
        while let Some(end) = find_event_end(&self.pending, i) {
            events.push(self.pending[start..end].to_vec());
            start = end;
            i = end;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_PENDING {
            events.push(std::mem::take(&mut self.pending));
        }
        events
    }

    /// [`Self::push`], and at the end of the stream [`Self::finish`] too: every event
    /// `chunk` completes, the unterminated last one included when the stream ends.
    pub fn push_piece(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<Vec<u8>> {
        let mut events = self.push(chunk);
        if end_of_stream {
            events.extend(self.finish());
        }
        events
    }

    /// Whatever is left when the stream ends: an event without its blank line.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.pending.iter().all(u8::is_ascii_whitespace) {
            self.pending.clear();
            None
        } else {
            Some(std::mem::take(&mut self.pending))
        }
    }
}

/// The index just after the first blank line at or after `from`.
fn find_event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // A line ends here; the event ends if the next line is empty.
            let next = i + 1;
            if next < buf.len() && buf[next] == b'\n' {
                return Some(next + 1);
            }
            if next + 1 < buf.len() && buf[next] == b'\r' && buf[next + 1] == b'\n' {
                return Some(next + 2);
            }
        }
        i += 1;
    }
    None
}

/// The joined `data:` lines of one raw event, or None when it has none.
pub fn event_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            }
        }
    }
    data
}

/// Appends one SSE event to `out`: an `event:` line when `name` is given, then `data`
/// as one `data:` line (callers pass compact JSON or `[DONE]`, which hold no newline).
pub fn write_event(out: &mut Vec<u8>, name: Option<&str>, data: &[u8]) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// [`write_event`] with `value` serialized straight into `out` (no intermediate string):
/// the translated streams write one such event per piece of an answer.
pub fn write_json_event<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    // Writing into a Vec cannot fail, nor can the gateway's own types' serialization;
    // were it to, no half event is left behind.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(start);
        return;
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_events_split_back_into_the_same_data() {
        let mut out = Vec::new();
        write_event(
            &mut out,
            Some("message_stop"),
            br#"{"type":"message_stop"}"#,
        );
        write_event(&mut out, None, b"[DONE]");
        assert_eq!(
            out,
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\ndata: [DONE]\n\n"
        );
        let events = SseSplitter::default().push(&out);
        let data: Vec<_> = events.iter().filter_map(|e| event_data(e)).collect();
        assert_eq!(data, vec![r#"{"type":"message_stop"}"#, "[DONE]"]);
    }

    fn split_all(input: &[u8], cut: usize) -> Vec<Vec<u8>> {
        let mut s = SseSplitter::default();
        let mut out = s.push(&input[..cut]);
        out.extend(s.push(&input[cut..]));
        out.extend(s.finish());
        out
    }

    #[test]
    fn same_events_at_every_split_point() {
        let input = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: comment\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        let whole = split_all(input, 0);
        assert_eq!(whole.len(), 4);
        for cut in 0..=input.len() {
            assert_eq!(split_all(input, cut), whole, "cut at {cut}");
        }
        assert_eq!(event_data(&whole[2]).as_deref(), Some("x\ny"));
        assert_eq!(event_data(&whole[1]).as_deref(), Some("{\"b\":2}"));
    }

    #[test]
    fn unterminated_tail_is_returned_at_finish() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: 1").is_empty());
        assert_eq!(s.finish().as_deref(), Some(&b"data: 1"[..]));
    }
}
