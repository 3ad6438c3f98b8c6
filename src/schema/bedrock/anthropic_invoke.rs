//! The `AWSAnthropic` schema: Claude on AWS Bedrock through InvokeModel
//! (`/model/{modelId}/invoke`) and InvokeModelWithResponseStream
//! (`/invoke-with-response-stream`), with an Anthropic Messages body naming
//! `anthropic_version: bedrock-2023-05-31` instead of a model. The stream is Bedrock's
//! binary event-stream whose `chunk` events carry Anthropic's stream events, base64
//! encoded; they go through the same translator as Anthropic's own SSE. Request rules
//! are those of [`crate::schema::anthropic::request`]; Bedrock takes images only inline, and the
//! body has no `stream` field (the operation says it).

use crate::schema::UnreadableAnswer;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;

use crate::api::error::anthropic_error_event;
use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;
use crate::framing::aws_eventstream::{EventStreamDecoder, MessageType};
use crate::framing::sse::write_event;
use crate::schema::anthropic::count_tokens::{self, CountTokensAnswer, Hosting};
use crate::schema::anthropic::events::StreamEvent;
use crate::schema::anthropic::hosted_request_body;
use crate::schema::anthropic::messages::{anthropic_shaped_error, AnthropicMeter};
use crate::schema::anthropic::request::Flavor;
use crate::schema::anthropic::response::AnthropicResponse;
use crate::schema::bedrock::errors;
use crate::schema::path_segment;
use crate::schema::{BackendSchema, ResponseHead, ResponseTranslator, UpstreamRequest};
use crate::usage::Usage;

/// The Messages version Claude on Bedrock names in the body, for chat and Messages
/// clients alike.
const BODY_VERSION: &str = "bedrock-2023-05-31";

const FLAVOR: Flavor = Flavor {
    provider: "AWS Bedrock (Anthropic)",
    model_in_body: false,
    body_version: Some(BODY_VERSION),
    url_images: false,
    invoke: true,
};

#[derive(Debug)]
pub struct AwsAnthropic;

impl AwsAnthropic {
    pub fn build(_: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        Ok(Arc::new(AwsAnthropic))
    }
}

impl BackendSchema for AwsAnthropic {
    fn provider_name(&self) -> &'static str {
        "aws.bedrock"
    }

    fn upstream_request(
        &self,
        request: &ClientRequest,
        model_override: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        if request.api == ApiKind::Responses {
            return crate::schema::responses::upstream_request(self, request, model_override);
        }
        let model = model_override.unwrap_or(&request.model);
        if request.api == ApiKind::CountTokens {
            let path = format!("/model/{}/count-tokens", path_segment(model));
            let body = count_tokens::bedrock_invoke_body(request, &FLAVOR)?;
            return Ok(UpstreamRequest::json(path, body));
        }
        let body = hosted_request_body(request, &FLAVOR, model)?;
        let operation = if request.stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        let path = format!("/model/{}/{operation}", path_segment(model));
        Ok(UpstreamRequest::json(path, body))
    }

    fn response_translator(&self, request: &ClientRequest, _: bool) -> Box<dyn ResponseTranslator> {
        if request.api == ApiKind::Responses {
            return crate::schema::responses::translator(self, request);
        }
        if request.api == ApiKind::Messages {
            return Box::new(InvokeStreamAsSse::new());
        }
        if request.api == ApiKind::CountTokens {
            return Box::new(CountTokensAnswer::new(Hosting::Bedrock));
        }
        Box::new(InvokeResponse {
            frames: EventStreamDecoder::new(),
            anthropic: AnthropicResponse::new(request),
        })
    }
}

/// The Anthropic event inside an InvokeModelWithResponseStream `chunk` event's payload
/// (`{"bytes":"<base64>"}`).
pub fn chunk_event(payload: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(v.get("bytes")?.as_str()?)
        .ok()
}

/// Unwraps Bedrock's event-stream around Anthropic's events.
struct InvokeResponse {
    frames: EventStreamDecoder,
    anthropic: AnthropicResponse,
}

impl ResponseTranslator for InvokeResponse {
    fn stream_content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        errors::openai_error(head, body)
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        self.anthropic.unary(body)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for frame in self.frames.feed(chunk, end_of_stream) {
            match frame {
                Ok(f) if f.message_type == MessageType::Event && f.name == "chunk" => {
                    match chunk_event(&f.payload) {
                        Some(event) => self.anthropic.event(&event, &mut out),
                        None => self.anthropic.fail(
                            &mut out,
                            "the provider sent a stream chunk that could not be read",
                            "upstream_error",
                        ),
                    }
                }
                Ok(f) if f.message_type == MessageType::Event => {}
                Ok(f) => {
                    let message = errors::exception_message(&f.name, &f.payload);
                    self.anthropic.fail(&mut out, &message, &f.name);
                }
                Err(e) => self
                    .anthropic
                    .fail(&mut out, &e.to_string(), "upstream_error"),
            }
        }
        if end_of_stream {
            self.anthropic.end_of_stream(&mut out);
        }
        Some(out)
    }

    fn usage(&self) -> Usage {
        self.anthropic.usage()
    }

    fn response_model(&self) -> Option<&str> {
        self.anthropic.response_model()
    }

    fn saw_output(&self) -> bool {
        self.anthropic.saw_output()
    }

    fn stream_failed(&self) -> bool {
        self.anthropic.stream_failed()
    }
}

/// Bedrock's InvokeModelWithResponseStream for a Messages client: each `chunk` event's
/// Anthropic event becomes the SSE event Anthropic itself would have sent.
pub struct InvokeStreamAsSse {
    frames: EventStreamDecoder,
    meter: AnthropicMeter,
    ended: bool,
    /// The stream ended with an error event.
    failed: bool,
}

impl InvokeStreamAsSse {
    pub fn new() -> Self {
        InvokeStreamAsSse {
            frames: EventStreamDecoder::new(),
            meter: AnthropicMeter::new(),
            ended: false,
            failed: false,
        }
    }

    fn error(&mut self, out: &mut Vec<u8>, status: u16, message: &str) {
        if !self.ended {
            anthropic_error_event(out, status, message);
            self.ended = true;
            self.failed = true;
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
        // Parsed once: metered, and named for the SSE `event:` line.
        let name = match StreamEvent::parse(&event) {
            Ok(parsed) => {
                self.meter.observe(&parsed);
                let error = matches!(parsed, StreamEvent::Error { .. });
                // The provider's own error event ends the stream as `message_stop` does.
                self.ended = error || matches!(parsed, StreamEvent::MessageStop);
                self.failed |= error;
                match parsed.name() {
                    Some(name) => name.to_string(),
                    None => StreamEvent::tag(&event).unwrap_or_else(|| "message".into()),
                }
            }
            // A chunk that is not an Anthropic event cannot reach the client as one.
            Err(_) => {
                return self.error(
                    out,
                    502,
                    "the provider sent a stream chunk that could not be read",
                )
            }
        };
        write_event(out, Some(&name), &event);
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
        anthropic_shaped_error(head, body, |v| errors::aws_message(v).map(str::to_string))
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        // InvokeModel's unary answer is Anthropic's message as it is.
        self.meter.observe_message_json(body);
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
            self.error(&mut out, 502, crate::schema::STREAM_CUT_MESSAGE);
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

    fn stream_failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixtures::{load, reassemble, response_body};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn invoke_paths_and_body_follow_the_recording() {
        let recorded = load("bedrock/invoke-anthropic-messages.json");
        let r = request(
            r#"{"model":"anthropic.claude-3-haiku-20240307-v1:0","max_tokens":1000,"temperature":0.7,"messages":[{"role":"user","content":"Hello there."}]}"#,
        );
        let u = AwsAnthropic.upstream_request(&r, None).unwrap();
        assert_eq!(u.path, recorded["request"]["path"].as_str().unwrap());
        let body: Value = serde_json::from_slice(&u.body.unwrap()).unwrap();
        assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
        assert!(body.get("model").is_none());
        let stream = request(
            r#"{"model":"anthropic.claude-3-5-sonnet-20240620-v1:0","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let u = AwsAnthropic.upstream_request(&stream, None).unwrap();
        let recorded = load("bedrock/invoke-stream-anthropic-tool-use.json");
        assert_eq!(u.path, recorded["request"]["path"].as_str().unwrap());
        let body: Value = serde_json::from_slice(&u.body.unwrap()).unwrap();
        assert!(body.get("stream").is_none());
    }

    fn translate(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let r = request(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        );
        let mut t = AwsAnthropic.response_translator(&r, false);
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let cut = cut.clamp(from, body.len());
            out.extend(t.stream_chunk(&body[from..cut], cut == body.len()).unwrap());
            from = cut;
        }
        out
    }

    /// The Anthropic events inside the recorded event-stream, decoded independently.
    fn recorded_events(body: &[u8]) -> Vec<Value> {
        let mut d = EventStreamDecoder::new();
        d.push(body)
            .into_iter()
            .map(|f| {
                let f = f.unwrap();
                let bytes = chunk_event(&f.payload).unwrap();
                serde_json::from_slice(&bytes).unwrap()
            })
            .collect()
    }

    #[test]
    fn recorded_invoke_stream_gives_its_text_tools_finish_and_usage() {
        let body = response_body(&load("bedrock/invoke-stream-anthropic-tool-use.json"));
        let events = recorded_events(&body);
        let a = reassemble(&translate(&body, &[]));
        let text: String = events
            .iter()
            .filter_map(|e| e.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert_eq!(a.text, text);
        let tool_ids: Vec<&str> = events
            .iter()
            .filter_map(|e| e.pointer("/content_block/id").and_then(Value::as_str))
            .collect();
        assert_eq!(
            a.tool_calls
                .iter()
                .map(|t| t.0.as_str())
                .collect::<Vec<_>>(),
            tool_ids
        );
        for call in &a.tool_calls {
            serde_json::from_str::<Value>(&call.2).unwrap();
        }
        assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
        let output = events
            .iter()
            .filter_map(|e| e.pointer("/usage/output_tokens").and_then(Value::as_u64))
            .next_back()
            .unwrap();
        assert_eq!(a.usage.unwrap()["completion_tokens"], output);
        assert!(a.done && a.error.is_none());
    }

    #[test]
    fn exception_frame_ends_the_stream_with_an_error() {
        let frame = crate::framing::aws_eventstream::testing::encode(
            "exception",
            "throttlingException",
            br#"{"message":"Too many requests"}"#,
        );
        let a = reassemble(&translate(&frame, &[]));
        assert!(a.error.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("Too many requests"));
    }

    proptest! {
        #[test]
        fn split_invariant_and_panic_free(cuts in proptest::collection::vec(0usize..12000, 0..6), noise in proptest::collection::vec(any::<u8>(), 0..512)) {
            let body = response_body(&load("bedrock/invoke-stream-anthropic-tool-use.json"));
            let mut cuts = cuts;
            cuts.sort();
            let strip = |v: Vec<u8>| String::from_utf8(v).unwrap().split("\"created\":").count();
            prop_assert_eq!(strip(translate(&body, &cuts)), strip(translate(&body, &[])));
            prop_assert_eq!(reassemble(&translate(&body, &cuts)), reassemble(&translate(&body, &[])));
            translate(&noise, &cuts);
        }
    }
}

#[cfg(test)]
mod messages_stream_tests {
    use super::*;
    use crate::schema::fixtures::{load, response_body, sse_payloads};
    use proptest::prelude::*;

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
        let last = out.trim_end().rsplit("\n\n").next().unwrap();
        let data: Value =
            serde_json::from_str(last.strip_prefix("event: error\ndata: ").unwrap()).unwrap();
        assert_eq!(data["type"], "error");
        assert!(!data["error"]["message"].as_str().unwrap().is_empty());
    }

    /// An InvokeModelWithResponseStream `chunk` frame holding `event`.
    fn chunk(event: &str) -> Vec<u8> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.encode(event);
        crate::framing::aws_eventstream::testing::encode(
            "event",
            "chunk",
            serde_json::json!({ "bytes": bytes }).to_string().as_bytes(),
        )
    }

    #[test]
    fn the_providers_error_event_ends_the_stream_once() {
        let mut body =
            chunk(r#"{"type":"message_start","message":{"model":"c","usage":{"input_tokens":3}}}"#);
        body.extend(chunk(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ));
        body.extend(chunk(
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ));
        let mut t = InvokeStreamAsSse::new();
        let out = String::from_utf8(t.stream_chunk(&body, true).unwrap()).unwrap();
        assert_eq!(out.matches("event: error").count(), 1, "{out}");
        assert!(out.contains("Overloaded") && !out.contains("content_block_start"));
        assert!(t.stream_failed());
    }

    #[test]
    fn a_chunk_that_is_not_an_event_ends_the_stream_with_an_error() {
        let mut body = chunk(r#"{"type":"message_start","message":{"model":"c"}}"#);
        body.extend(chunk("not json"));
        let mut t = InvokeStreamAsSse::new();
        let out = String::from_utf8(t.stream_chunk(&body, true).unwrap()).unwrap();
        assert!(!out.contains("event: message\n"), "{out}");
        assert_eq!(out.matches("event: error").count(), 1, "{out}");
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
