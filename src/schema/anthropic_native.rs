//! Anthropic Messages requests from Anthropic SDK clients (`/v1/messages`,
//! `/anthropic/v1/messages`) to the backends that speak Messages:
//! - Anthropic: the body passes byte for byte (a `modelNameOverride` splices the model);
//!   `anthropic-version` and `anthropic-beta` headers pass as the client sent them.
//! - GCP Vertex (rawPredict): the model moves to the path, the body names
//!   `anthropic_version: vertex-2023-10-16` unless the client named one; `anthropic-beta`
//!   passes as a header, which Vertex reads.
//! - AWS Bedrock (InvokeModel): the model moves to the path, the body names
//!   `anthropic_version: bedrock-2023-05-31`, has no `stream` field (the operation says
//!   it), and takes the `anthropic-beta` flags as its `anthropic_beta` list.
//!
//! The answers are Anthropic's already: they pass unchanged and are read for usage
//! ([`AnthropicMeter`]); Bedrock's event-stream is unwrapped into Anthropic's SSE
//! ([`InvokeStreamAsSse`]). Errors that are not Anthropic-shaped are made so.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::anthropic_response::{AnthropicUsage, Counts};
use super::aws_anthropic::chunk_event;
use super::aws_eventstream::{EventStreamDecoder, MessageType};
use super::bedrock::errors;
use super::google_error::GoogleError;
use super::{ResponseHead, ResponseTranslator, UnreadableAnswer};
use crate::api::error::{anthropic_error_body, anthropic_error_type};
use crate::api::{ApiError, ClientRequest};
use crate::sse::{event_data, SseSplitter};
use crate::usage::Usage;

/// Where a hosted Messages API differs from Anthropic's own.
pub struct Hosting {
    pub version: &'static str,
    /// Bedrock: beta flags go in the body; no `stream` field.
    pub bedrock: bool,
}

/// The body for a hosted Messages API (see the module documentation).
pub fn hosted_body(request: &ClientRequest, hosting: &Hosting) -> Result<Vec<u8>, ApiError> {
    let mut body: Map<String, Value> = serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::BadRequest(format!("invalid Messages request: {e}")))?;
    body.remove("model");
    body.entry("anthropic_version")
        .or_insert_with(|| hosting.version.into());
    if hosting.bedrock {
        body.remove("stream");
        if let Some(beta) = &request.anthropic_beta {
            let flags: Vec<Value> = beta
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| f.into())
                .collect();
            body.entry("anthropic_beta").or_insert(Value::Array(flags));
        }
    }
    serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))
}

/// What metering needs of a Messages answer or stream event.
#[derive(Deserialize)]
struct Observed {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<Box<Observed>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    delta: Option<StopReason>,
}

#[derive(Deserialize)]
struct StopReason {
    #[serde(default)]
    stop_reason: Option<Value>,
}

/// Reads usage, model and first output from Anthropic answers that pass unchanged.
#[derive(Default)]
pub struct AnthropicMeter {
    splitter: SseSplitter,
    counts: Counts,
    model: Option<String>,
    saw_output: bool,
    /// `message_stop`, a stop reason or an error event was seen.
    complete: bool,
}

impl AnthropicMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one message or stream event (JSON).
    pub fn observe(&mut self, json: &[u8]) {
        let Ok(o) = serde_json::from_slice::<Observed>(json) else {
            return;
        };
        let message = o.message.as_deref().unwrap_or(&o);
        if self.model.is_none() {
            self.model = message.model.clone().filter(|m| !m.is_empty());
        }
        for usage in [&message.usage, &o.usage].into_iter().flatten() {
            self.counts.update(usage);
        }
        if matches!(
            o.kind.as_str(),
            "message" | "content_block_start" | "content_block_delta"
        ) {
            self.saw_output = true;
        }
        let stopped = o
            .delta
            .as_ref()
            .is_some_and(|d| d.stop_reason.as_ref().is_some_and(|r| !r.is_null()));
        if matches!(o.kind.as_str(), "message_stop" | "error") || stopped {
            self.complete = true;
        }
    }
}

impl ResponseTranslator for AnthropicMeter {
    fn rewrites_body(&self) -> bool {
        false
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        anthropic_shaped_error(head, body)
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        // Anthropic's answer passes as it came: the client reads it, the gateway meters it.
        self.observe(body);
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut events = self.splitter.push(chunk);
        if end_of_stream {
            events.extend(self.splitter.finish());
        }
        for raw in events {
            if let Some(data) = event_data(&raw) {
                self.observe(data.as_bytes());
            }
        }
        None
    }

    fn usage(&self) -> Usage {
        self.counts.usage()
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
}

/// A provider error for a Messages client: an Anthropic error passes (None); a Bedrock
/// or Google (Vertex front end) error keeps its message under Anthropic's type for the
/// status.
fn anthropic_shaped_error(head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return None;
    }
    let message = match errors::aws_message(&v) {
        Some(m) => m.to_string(),
        None => GoogleError::parse(body)?.message,
    };
    Some(anthropic_error_body(head.status, &message))
}

/// Bedrock's InvokeModelWithResponseStream for a Messages client: each `chunk` event's
/// Anthropic event becomes the SSE event Anthropic itself would have sent.
pub struct InvokeStreamAsSse {
    frames: EventStreamDecoder,
    meter: AnthropicMeter,
    ended: bool,
}

impl InvokeStreamAsSse {
    pub fn new() -> Self {
        InvokeStreamAsSse {
            frames: EventStreamDecoder::new(),
            meter: AnthropicMeter::new(),
            ended: false,
        }
    }

    fn sse(out: &mut Vec<u8>, kind: &str, data: &[u8]) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\n\n");
    }

    fn error(&mut self, out: &mut Vec<u8>, status: u16, message: &str) {
        if !self.ended {
            let body = json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}});
            Self::sse(out, "error", body.to_string().as_bytes());
            self.ended = true;
        }
    }

    fn chunk(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            // After `message_stop` or an error event nothing more is the client's.
            return;
        }
        let Some(event) = chunk_event(payload) else {
            return self.error(
                out,
                502,
                "the provider sent a stream chunk that could not be read",
            );
        };
        self.meter.observe(&event);
        let kind = serde_json::from_slice::<Observed>(&event)
            .map(|o| o.kind)
            .unwrap_or_default();
        if kind == "message_stop" {
            self.ended = true;
        }
        Self::sse(out, if kind.is_empty() { "message" } else { &kind }, &event);
    }
}

impl Default for InvokeStreamAsSse {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseTranslator for InvokeStreamAsSse {
    fn stream_content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        anthropic_shaped_error(head, body)
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        // InvokeModel's unary answer is Anthropic's message as it is.
        self.meter.observe(body);
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for frame in self.frames.feed(chunk, end_of_stream) {
            match frame {
                Ok(f) if f.message_type == MessageType::Event && f.name == "chunk" => {
                    self.chunk(&f.payload, &mut out)
                }
                Ok(f) if f.message_type == MessageType::Event => {}
                Ok(f) => {
                    let status = errors::exception_status(&f.name);
                    let message = errors::exception_message(&f.name, &f.payload);
                    self.error(&mut out, status, &message);
                }
                Err(e) => self.error(&mut out, 502, &e.to_string()),
            }
        }
        if end_of_stream && !self.ended {
            self.error(
                &mut out,
                502,
                "the provider's stream ended before the answer was finished",
            );
        }
        Some(out)
    }

    fn usage(&self) -> Usage {
        self.meter.usage()
    }

    fn response_model(&self) -> Option<&str> {
        self.meter.response_model()
    }

    fn saw_output(&self) -> bool {
        self.meter.saw_output()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use crate::schema::fixtures::{load, response_body, sse_payloads};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn request(body: &str, beta: Option<&str>) -> ClientRequest {
        let mut r = ClientRequest::parse(ApiKind::Messages, Bytes::from(body.to_string())).unwrap();
        r.anthropic_beta = beta.map(str::to_string);
        r
    }

    #[test]
    fn a_passed_stream_is_complete_only_with_message_stop_or_a_stop_reason() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":3}}}\n\n";
        let delta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n";
        let mut cut = AnthropicMeter::new();
        cut.stream_chunk(start.as_bytes(), true);
        assert!(!cut.stream_complete());
        let mut stopped = AnthropicMeter::new();
        stopped.stream_chunk(format!("{start}{delta}").as_bytes(), true);
        assert!(stopped.stream_complete());
        let mut failed = AnthropicMeter::new();
        failed.stream_chunk(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", true);
        assert!(failed.stream_complete());
    }

    #[test]
    fn bedrock_body_moves_model_stream_and_beta() {
        let r = request(
            r#"{"model":"c","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            Some("a-1, b-2"),
        );
        let hosting = Hosting {
            version: "bedrock-2023-05-31",
            bedrock: true,
        };
        let body: Value = serde_json::from_slice(&hosted_body(&r, &hosting).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a-1","b-2"],"max_tokens":5,"messages":[{"role":"user","content":"hi"}]})
        );
        let vertex = Hosting {
            version: "vertex-2023-10-16",
            bedrock: false,
        };
        let body: Value = serde_json::from_slice(&hosted_body(&r, &vertex).unwrap()).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
        assert!(body.get("anthropic_beta").is_none() && body.get("model").is_none());
    }

    #[test]
    fn meter_reads_recorded_stream_usage_without_touching_it() {
        let body = response_body(&load("anthropic/messages-stream-cache-read.json"));
        let mut m = AnthropicMeter::new();
        assert_eq!(m.stream_chunk(&body, true), None);
        let events = sse_payloads(&body);
        let start = &events[0]["message"]["usage"];
        let read = start["cache_read_input_tokens"].as_u64().unwrap();
        assert!(read > 0);
        assert_eq!(m.usage().cached_input, read);
        assert!(m.usage().input >= read + start["input_tokens"].as_u64().unwrap());
        assert_eq!(m.response_model(), events[0]["message"]["model"].as_str());
    }

    fn reframe(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut t = InvokeStreamAsSse::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let cut = cut.clamp(from, body.len());
            out.extend(t.stream_chunk(&body[from..cut], cut == body.len()).unwrap());
            from = cut;
        }
        out
    }

    #[test]
    fn bedrock_stream_becomes_the_sse_anthropic_sends() {
        let body = response_body(&load("bedrock/invoke-stream-anthropic-tool-use.json"));
        let out = reframe(&body, &[]);
        let events = sse_payloads(&out);
        let mut frames = EventStreamDecoder::new();
        let inner: Vec<Value> = frames
            .push(&body)
            .into_iter()
            .map(|f| serde_json::from_slice(&chunk_event(&f.unwrap().payload).unwrap()).unwrap())
            .collect();
        assert_eq!(events, inner);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message_start\ndata: "));
        assert!(text.ends_with("\n\n") && !text.contains("event: error"));
    }

    #[test]
    fn cut_bedrock_stream_ends_with_an_anthropic_error_event() {
        let body = response_body(&load("bedrock/invoke-stream-anthropic-tool-use.json"));
        let out = String::from_utf8(reframe(&body[..body.len() / 2], &[])).unwrap();
        assert!(out.contains("event: error\ndata: {\"error\":{\"message\""));
    }

    proptest! {
        #[test]
        fn reframing_is_split_invariant(cuts in proptest::collection::vec(0usize..12000, 0..6), noise in proptest::collection::vec(any::<u8>(), 0..512)) {
            let body = response_body(&load("bedrock/invoke-stream-anthropic-tool-use.json"));
            let mut cuts = cuts;
            cuts.sort();
            prop_assert_eq!(reframe(&body, &cuts), reframe(&body, &[]));
            reframe(&noise, &cuts);
        }
    }
}
