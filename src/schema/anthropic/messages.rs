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
//! (`bedrock::anthropic_invoke::InvokeStreamAsSse`). Errors that are not Anthropic-shaped
//! are made so.

use serde_json::{Map, Value};

use crate::api::error::anthropic_error_body;
use crate::api::{ApiError, ClientRequest};
use crate::framing::sse::{event_data, SseSplitter};
use crate::schema::anthropic::events::{MessageHead, StreamEvent};
use crate::schema::anthropic::request::Flavor;
use crate::schema::anthropic::response::Counts;
use crate::schema::vertex::error::GoogleError;
use crate::schema::{ResponseHead, ResponseTranslator, UnreadableAnswer};
use crate::usage::Usage;

/// Anthropic's `usage` object for the gateway's counts, for translators that answer
/// Messages clients: `input` counts cached and cache-written input (OpenAI's meaning),
/// Anthropic's `input_tokens` neither.
pub fn usage_json(u: &Usage) -> Value {
    serde_json::json!({
        "input_tokens": u.input.saturating_sub(u.cached_input).saturating_sub(u.cache_creation_input),
        "output_tokens": u.output,
        "cache_read_input_tokens": u.cached_input,
        "cache_creation_input_tokens": u.cache_creation_input,
    })
}

/// The body for a hosted Messages API, where `flavor` differs from Anthropic's own (see
/// the module documentation).
pub fn hosted_body(request: &ClientRequest, flavor: &Flavor) -> Result<Vec<u8>, ApiError> {
    let mut body: Map<String, Value> = serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::BadRequest(format!("invalid Messages request: {e}")))?;
    body.remove("model");
    if let Some(version) = flavor.body_version {
        body.entry("anthropic_version")
            .or_insert_with(|| version.into());
    }
    if flavor.invoke {
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

    /// Reads one stream event.
    pub fn observe(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::MessageStart { message } => self.observe_message(message),
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.counts.update(usage);
                }
                self.complete |= delta.stop_reason.is_some();
            }
            StreamEvent::MessageStop | StreamEvent::Error { .. } => self.complete = true,
            _ => {}
        }
        self.saw_output |= event.is_output();
    }

    /// Reads one stream event's JSON; what is not an Anthropic event is not metered.
    pub fn observe_json(&mut self, json: &[u8]) {
        if let Ok(event) = StreamEvent::parse(json) {
            self.observe(&event);
        }
    }

    /// Reads a unary message (InvokeModel's or Anthropic's answer).
    pub fn observe_message_json(&mut self, json: &[u8]) {
        if let Ok(message) = serde_json::from_slice::<MessageHead>(json) {
            self.observe_message(&message);
            self.saw_output |= message.kind.as_deref() == Some("message");
        }
    }

    fn observe_message(&mut self, message: &MessageHead) {
        if self.model.is_none() {
            self.model = message.model.clone().filter(|m| !m.is_empty());
        }
        if let Some(usage) = &message.usage {
            self.counts.update(usage);
        }
    }
}

impl ResponseTranslator for AnthropicMeter {
    fn rewrites_body(&self) -> bool {
        false
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        // Claude on Vertex AI: the Google front end answers some errors itself.
        anthropic_shaped_error(head, body, |_| Some(GoogleError::parse(body)?.message))
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        // Anthropic's answer passes as it came: the client reads it, the gateway meters it.
        self.observe_message_json(body);
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut events = self.splitter.push(chunk);
        if end_of_stream {
            events.extend(self.splitter.finish());
        }
        for raw in events {
            if let Some(data) = event_data(&raw) {
                self.observe_json(data.as_bytes());
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

/// A provider error for a Messages client: an Anthropic error passes (None); another
/// host's error (`foreign_message` reads its message) keeps its message under
/// Anthropic's type for the status.
pub fn anthropic_shaped_error(
    head: &ResponseHead,
    body: &[u8],
    foreign_message: impl FnOnce(&Value) -> Option<String>,
) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return None;
    }
    Some(anthropic_error_body(head.status, &foreign_message(&v)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use crate::schema::fixtures::{load, response_body, sse_payloads};
    use bytes::Bytes;
    use serde_json::json;

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
        let bedrock = Flavor {
            provider: "Bedrock",
            model_in_body: false,
            body_version: Some("bedrock-2023-05-31"),
            url_images: false,
            invoke: true,
        };
        let body: Value = serde_json::from_slice(&hosted_body(&r, &bedrock).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a-1","b-2"],"max_tokens":5,"messages":[{"role":"user","content":"hi"}]})
        );
        let vertex = Flavor {
            body_version: Some("vertex-2023-10-16"),
            invoke: false,
            ..bedrock
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
}
