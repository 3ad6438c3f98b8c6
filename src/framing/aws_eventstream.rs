//! Incremental decoding of the AWS event-stream binary framing
//! (`application/vnd.amazon.eventstream`), as Bedrock's ConverseStream and
//! InvokeModelWithResponseStream answer.
//!
//! Bytes arrive in arbitrary pieces; [`EventStreamDecoder::push`] returns the frames the
//! piece completes and keeps only the unfinished tail, so work per call is proportional
//! to the piece. Frames are checked with `aws-smithy-eventstream` (lengths, both CRCs);
//! the prelude is also checked as soon as its 12 bytes are in, so garbage is reported at
//! once instead of after buffering up to a bogus length. After the first error the
//! decoder yields nothing more: a corrupt stream cannot be resynchronised.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};

/// Largest frame accepted. AWS caps event-stream messages at 16 MiB of payload plus
/// 128 KiB of headers; anything longer is not a frame.
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024 + 128 * 1024 + 16;

/// The 12-byte prelude: total length, headers length, prelude CRC.
const PRELUDE_LEN: usize = 12;
/// The smallest frame: a prelude and the message CRC.
const MIN_FRAME_LEN: u32 = 16;

/// The `:message-type` header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A modelled event; the name is `:event-type`.
    Event,
    /// A modelled error (e.g. `throttlingException`); the name is `:exception-type`.
    Exception,
    /// An unmodelled error; the name is `:error-code` and the payload `:error-message`.
    Error,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub message_type: MessageType,
    /// The event type, exception type or error code.
    pub name: String,
    pub payload: Bytes,
}

/// Why the stream cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    #[error("malformed event-stream frame: {0}")]
    Malformed(String),
    #[error("event-stream frame claims {0} bytes, outside the valid range")]
    BadLength(u32),
    #[error("event-stream frame without a known `:message-type` header")]
    NoMessageType,
    #[error("the event stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Decodes frames from a byte stream split anywhere.
#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    inner: MessageFrameDecoder,
    /// Bytes not yet consumed by `inner` (it keeps a frame's prelude itself once read).
    pending: BytesMut,
    /// Whether `inner` holds the prelude of the frame in progress.
    in_frame: bool,
    failed: bool,
}

impl EventStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `chunk`; returns every frame it completes, in order, then the error that
    /// stopped decoding, if any.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Result<Frame, EventStreamError>> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        self.pending.extend_from_slice(chunk);
        loop {
            match self.next_frame() {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => {
                    self.fail();
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    /// One body piece: its frames, and at the end of the stream the error of a frame left
    /// unfinished.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Vec<Result<Frame, EventStreamError>> {
        let mut frames = self.push(chunk);
        if end_of_stream {
            frames.extend(self.finish().map(Err));
        }
        frames
    }

    /// Call at the end of the stream: an error when it stopped inside a frame.
    pub fn finish(&mut self) -> Option<EventStreamError> {
        if self.failed {
            return None;
        }
        let left = self.pending.len() + if self.in_frame { PRELUDE_LEN } else { 0 };
        if left == 0 {
            return None;
        }
        self.fail();
        Some(EventStreamError::Truncated(left))
    }

    fn fail(&mut self) {
        self.failed = true;
        self.pending = BytesMut::new();
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, EventStreamError> {
        if !self.in_frame {
            if self.pending.len() < PRELUDE_LEN {
                return Ok(None);
            }
            check_prelude(&self.pending[..PRELUDE_LEN])?;
        }
        let decoded = self
            .inner
            .decode_frame(&mut self.pending)
            .map_err(|e| EventStreamError::Malformed(e.to_string()))?;
        match decoded {
            DecodedFrame::Incomplete => {
                // The inner decoder takes the prelude as soon as it has 12 bytes.
                self.in_frame = true;
                Ok(None)
            }
            DecodedFrame::Complete(message) => {
                self.in_frame = false;
                frame_of(&message).map(Some)
            }
        }
    }
}

/// Checks the length bounds and the prelude CRC before any frame body is awaited.
fn check_prelude(prelude: &[u8]) -> Result<(), EventStreamError> {
    let mut buf = prelude;
    let total_len = buf.get_u32();
    let _headers_len = buf.get_u32();
    let crc = buf.get_u32();
    if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&total_len) {
        return Err(EventStreamError::BadLength(total_len));
    }
    let mut expected = flate2::Crc::new();
    expected.update(&prelude[..8]);
    if expected.sum() != crc {
        return Err(EventStreamError::Malformed(
            "prelude checksum mismatch".into(),
        ));
    }
    Ok(())
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

fn frame_of(message: &Message) -> Result<Frame, EventStreamError> {
    let (message_type, name_header) = match header(message, ":message-type") {
        Some("event") => (MessageType::Event, ":event-type"),
        Some("exception") => (MessageType::Exception, ":exception-type"),
        Some("error") => (MessageType::Error, ":error-code"),
        _ => return Err(EventStreamError::NoMessageType),
    };
    let name = header(message, name_header).unwrap_or_default().to_string();
    let payload = match (message_type, header(message, ":error-message")) {
        (MessageType::Error, Some(text)) if message.payload().is_empty() => {
            Bytes::copy_from_slice(text.as_bytes())
        }
        _ => message.payload().clone(),
    };
    Ok(Frame {
        message_type,
        name,
        payload,
    })
}

/// Test helpers: encoding frames and reading recorded streams.
#[cfg(test)]
pub mod testing {
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

    /// One encoded frame.
    pub fn encode(message_type: &str, name: &str, payload: &[u8]) -> Vec<u8> {
        let name_header = match message_type {
            "exception" => ":exception-type",
            "error" => ":error-code",
            _ => ":event-type",
        };
        let message = Message::new(payload.to_vec())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String(message_type.to_string().into()),
            ))
            .add_header(Header::new(
                name_header,
                HeaderValue::String(name.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut out = Vec::new();
        write_message_to(&message, &mut out).unwrap();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::schema::fixtures::recorded_body;
    use proptest::prelude::*;

    fn decode_all(body: &[u8], cuts: &[usize]) -> Vec<Result<Frame, EventStreamError>> {
        let mut d = EventStreamDecoder::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, body.len());
            out.extend(d.push(&body[at..cut]));
            at = cut;
        }
        out.extend(d.push(&body[at..]));
        out.extend(d.finish().map(Err));
        out
    }

    #[test]
    fn decodes_the_recorded_converse_stream() {
        let body = recorded_body("bedrock/converse-stream-tool-use.json");
        let frames = decode_all(&body, &[]);
        assert!(frames.iter().all(Result::is_ok));
        let names: Vec<_> = frames
            .iter()
            .map(|f| f.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(names.first(), Some(&"messageStart"));
        assert_eq!(names.last(), Some(&"metadata"));
        assert!(frames
            .iter()
            .all(|f| f.as_ref().unwrap().message_type == MessageType::Event));
    }

    #[test]
    fn every_single_cut_decodes_the_same() {
        let body = recorded_body("bedrock/converse-stream-reasoning.json");
        let whole = decode_all(&body, &[]);
        for cut in 0..=body.len() {
            assert_eq!(decode_all(&body, &[cut]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn exceptions_and_errors_are_frames() {
        let mut body = encode("exception", "throttlingException", br#"{"message":"slow"}"#);
        body.extend(encode("error", "InternalFailure", b""));
        let frames = decode_all(&body, &[5]);
        let first = frames[0].as_ref().unwrap();
        assert_eq!(first.message_type, MessageType::Exception);
        assert_eq!(first.name, "throttlingException");
        assert_eq!(frames[1].as_ref().unwrap().message_type, MessageType::Error);
    }

    #[test]
    fn a_bad_crc_stops_decoding() {
        let mut body = encode("event", "messageStart", br#"{"role":"assistant"}"#);
        let last = body.len() - 1;
        body[last] ^= 0xff;
        body.extend(encode("event", "messageStop", b"{}"));
        let frames = decode_all(&body, &[]);
        assert_eq!(frames.len(), 1);
        assert!(matches!(frames[0], Err(EventStreamError::Malformed(_))));
    }

    #[test]
    fn garbage_is_reported_at_the_prelude() {
        let mut d = EventStreamDecoder::new();
        let out = d.push(b"data: {\"not\":\"eventstream\"}\n\n");
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
        assert!(d.push(b"more").is_empty());
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn a_cut_short_stream_is_truncated() {
        let body = encode("event", "messageStart", b"{}");
        for cut in 1..body.len() {
            let mut d = EventStreamDecoder::new();
            assert!(d.push(&body[..cut]).is_empty());
            assert_eq!(d.finish(), Some(EventStreamError::Truncated(cut)));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..8),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let _ = decode_all(&bytes, &cuts);
        }

        #[test]
        fn arbitrary_frames_behind_a_valid_prelude_never_panic(
            total_len in 16u32..300,
            headers_len in 0u32..300,
            rest in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..320,
        ) {
            let mut body = Vec::new();
            body.extend(total_len.to_be_bytes());
            body.extend(headers_len.to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(&body);
            body.extend(crc.sum().to_be_bytes());
            body.extend(rest);
            let _ = decode_all(&body, &[cut]);
        }

        #[test]
        fn valid_prefix_then_garbage_never_panics(
            garbage in proptest::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..400,
        ) {
            let mut body = encode("event", "messageStart", b"{}");
            body.extend(garbage);
            let frames = decode_all(&body, &[cut]);
            prop_assert!(frames.first().is_some_and(|f| f.is_ok()));
        }

        #[test]
        fn recorded_stream_at_any_cuts_decodes_the_same(
            cuts in proptest::collection::vec(0usize..9000, 0..12),
        ) {
            let body = recorded_body("bedrock/converse-stream-tool-use.json");
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(decode_all(&body, &cuts), decode_all(&body, &[]));
        }
    }
}
