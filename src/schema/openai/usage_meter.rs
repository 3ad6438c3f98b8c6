//! Answers of the OpenAI APIs that report usage with `input_tokens` and `output_tokens`
//! (Responses, images, audio), from OpenAI and Azure OpenAI: the bytes pass as they
//! came; the model and the usage are read on the way, from the whole body or from the
//! stream event that carries them (`response.completed`, or the `response.incomplete` /
//! `response.failed` that end a Responses stream early, `image_generation.completed`,
//! `speech.audio.done`, `transcript.text.done`). A body that is not JSON (speech's audio,
//! a transcription as text) has no usage, as Envoy AI Gateway meters it.

use serde::Deserialize;
use serde_json::Value;

use crate::framing::sse::{event_data, SseSplitter};
use crate::schema::{ResponseTranslator, UnreadableAnswer};
use crate::usage::Usage;

#[derive(Default)]
pub struct UsageMeter {
    splitter: SseSplitter,
    usage: Usage,
    model: Option<String>,
    saw_output: bool,
    /// The stream reached an event that ends a Responses stream.
    complete: bool,
    /// The `sequence_number` the next event would carry.
    next_sequence: u64,
}

/// A response object, or the one a stream event carries: what metering reads of it.
#[derive(Deserialize)]
struct ResponsePeek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct EventPeek {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    sequence_number: Option<u64>,
    /// A Responses event's response.
    #[serde(default)]
    response: Option<ResponsePeek>,
    /// The usage of an images or audio event.
    #[serde(default)]
    usage: Option<Value>,
}

/// The events that end a stream of one of these APIs.
const LAST_EVENTS: [&str; 7] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "image_generation.completed",
    "speech.audio.done",
    "transcript.text.done",
];

impl UsageMeter {
    pub fn new() -> Self {
        Self::default()
    }

    fn observe_response(&mut self, response: &ResponsePeek) {
        if self.model.is_none() {
            self.model = response.model.clone().filter(|m| !m.is_empty());
        }
        if let Some(usage) = response.usage.as_ref().and_then(Usage::from_responses) {
            self.usage = usage;
        }
    }

    fn event(&mut self, raw: &[u8]) {
        let Some(data) = event_data(raw) else {
            return;
        };
        let Ok(event) = serde_json::from_str::<EventPeek>(&data) else {
            return;
        };
        if let Some(n) = event.sequence_number {
            self.next_sequence = self.next_sequence.max(n.saturating_add(1));
        }
        if let Some(response) = &event.response {
            self.observe_response(response);
        }
        if let Some(usage) = event.usage.as_ref().and_then(Usage::from_responses) {
            self.usage = usage;
        }
        if LAST_EVENTS.contains(&event.kind.as_str()) {
            self.complete = true;
        } else if event.kind.ends_with(".delta") || event.kind.ends_with("partial_image") {
            self.saw_output = true;
        }
    }
}

impl ResponseTranslator for UsageMeter {
    fn rewrites_body(&self) -> bool {
        false
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        if let Ok(response) = serde_json::from_slice::<ResponsePeek>(body) {
            self.saw_output = true;
            self.observe_response(&response);
        }
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        for event in &self.splitter.push_piece(chunk, end_of_stream) {
            self.event(event);
        }
        None
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn response_model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn saw_output(&self) -> bool {
        self.saw_output
    }

    fn stream_complete(&self) -> bool {
        self.complete
    }

    fn stream_sequence(&self) -> u64 {
        self.next_sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped on OpenAI's Responses streaming reference.
    const STREAM: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":{\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":38}}}\n\n",
    );

    #[test]
    fn a_stream_is_metered_at_any_split_and_passes_unchanged() {
        for cut in 0..=STREAM.len() {
            let mut m = UsageMeter::new();
            assert_eq!(m.stream_chunk(&STREAM.as_bytes()[..cut], false), None);
            assert_eq!(m.stream_chunk(&STREAM.as_bytes()[cut..], true), None);
            assert_eq!(m.usage().total, 38, "cut {cut}");
            assert_eq!(m.usage().input, 36);
            assert_eq!(m.response_model(), Some("gpt-4.1-2025-04-14"));
            assert!(m.saw_output() && m.stream_complete());
            assert_eq!(m.stream_sequence(), 3);
        }
    }

    #[test]
    fn a_stream_without_its_last_event_is_not_complete() {
        let mut m = UsageMeter::new();
        let cut = STREAM.find("event: response.completed").unwrap();
        m.stream_chunk(&STREAM.as_bytes()[..cut], true);
        assert!(!m.stream_complete());
        assert_eq!(m.stream_sequence(), 2);
        assert_eq!(m.usage(), Usage::default());
    }

    #[test]
    fn image_and_transcription_events_carry_their_usage() {
        let mut m = UsageMeter::new();
        m.stream_chunk(b"event: image_generation.partial_image\ndata: {\"type\":\"image_generation.partial_image\",\"b64_json\":\"iVBO\"}\n\n", false);
        assert!(m.saw_output() && !m.stream_complete());
        m.stream_chunk(b"event: image_generation.completed\ndata: {\"type\":\"image_generation.completed\",\"b64_json\":\"iVBO\",\"usage\":{\"input_tokens\":50,\"output_tokens\":272,\"total_tokens\":322}}\n\n", true);
        assert_eq!((m.usage().input, m.usage().output), (50, 272));
        assert!(m.stream_complete());
        let mut m = UsageMeter::new();
        assert_eq!(m.unary(b"\xff\xfbaudio bytes").unwrap(), None);
        assert_eq!(m.usage(), Usage::default());
    }

    #[test]
    fn a_whole_response_is_metered() {
        let mut m = UsageMeter::new();
        let body = br#"{"id":"resp_1","object":"response","model":"gpt-4.1-2025-04-14","output":[],"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12,"output_tokens_details":{"reasoning_tokens":3}}}"#;
        assert_eq!(m.unary(body).unwrap(), None);
        assert_eq!((m.usage().total, m.usage().reasoning), (12, 3));
    }
}
