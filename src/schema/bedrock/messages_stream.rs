//! A ConverseStream event stream as Anthropic's Messages SSE, translated frame by frame:
//! `message_start`, then for each content block `content_block_start`, its
//! `content_block_delta`s and `content_block_stop`, then `message_delta` (stop reason
//! and usage) and `message_stop`.
//!
//! - Converse opens only tool blocks with `contentBlockStart`; a text or reasoning block
//!   starts with its first delta, so a block is opened when a delta's block index or
//!   kind differs from the open one (the open one is closed first: Anthropic streams one
//!   block at a time, indexed from 0).
//! - A reasoning block's signature is sent as one `signature_delta` before its
//!   `content_block_stop` (SDKs keep the last signature delta, not their join); redacted
//!   reasoning is gathered and sent whole in its `content_block_start`, as Anthropic does.
//! - The stop reason comes in `messageStop` and usage in the later `metadata` event, so
//!   `message_delta` and `message_stop` are sent when metadata arrives, or at the end of
//!   the stream when it never does. `message_start` has zero usage: Converse tells none
//!   before the end.
//! - Exception frames, undecodable frames, invalid events and a stream cut before its
//!   stop reason end the stream with an Anthropic `error` event; nothing follows it.

use serde_json::{json, Value};

use crate::api::error::anthropic_error_event;
use crate::framing::aws_eventstream::{EventStreamDecoder, Frame, MessageType};
use crate::framing::sse::write_event;
use crate::usage::Usage;

use super::converse_types::{
    BlockDelta, BlockStart, ConverseEvent, MessageStop, ReasoningDelta, TokenUsage,
};
use super::errors;
use super::messages_fields::{matched_stop_sequence, message_id, stop_reason};
use crate::schema::anthropic::messages::usage_json;

/// What the open Anthropic block is, with what it holds back until it stops.
#[derive(Debug, PartialEq)]
enum Kind {
    Text,
    Tool,
    Thinking { signature: String },
    Redacted { data: String },
}

impl Kind {
    fn same_kind(&self, other: &Kind) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

struct OpenBlock {
    /// The Converse `contentBlockIndex`.
    converse: u64,
    /// The Anthropic `index`.
    index: u64,
    kind: Kind,
}

/// Translates one ConverseStream answer.
pub struct MessagesStream {
    decoder: EventStreamDecoder,
    id: String,
    model: String,
    started: bool,
    open: Option<OpenBlock>,
    next_index: u64,
    stop_reason: Option<&'static str>,
    stop_sequence: Value,
    usage: TokenUsage,
    /// `message_stop` or `error` was sent: nothing more goes out.
    ended: bool,
    /// The stream ended with an error event.
    failed: bool,
    saw_output: bool,
}

impl MessagesStream {
    pub fn new(model: &str) -> Self {
        MessagesStream {
            decoder: EventStreamDecoder::new(),
            id: message_id(),
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            stop_reason: None,
            stop_sequence: Value::Null,
            usage: TokenUsage::default(),
            ended: false,
            failed: false,
            saw_output: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage.to_usage()
    }

    /// Whether the stream ended with an error event.
    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn saw_output(&self) -> bool {
        self.saw_output
    }

    /// Translates a piece of the event stream.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for decoded in self.decoder.push(chunk) {
            match decoded {
                Ok(frame) => self.on_frame(&mut out, frame),
                Err(e) => self.error(
                    &mut out,
                    502,
                    &format!("AWS Bedrock sent a stream that cannot be decoded: {e}"),
                ),
            }
        }
        if end_of_stream {
            if let Some(e) = self.decoder.finish() {
                self.error(
                    &mut out,
                    502,
                    &format!("AWS Bedrock's stream was cut short: {e}"),
                );
            }
            if self.stop_reason.is_some() {
                // The stop reason came but the usage did not: finish without it.
                self.finish(&mut out);
            }
            self.error(
                &mut out,
                502,
                "AWS Bedrock's stream ended before the answer was finished",
            );
        }
        out
    }

    fn on_frame(&mut self, out: &mut Vec<u8>, frame: Frame) {
        if self.ended {
            return;
        }
        match frame.message_type {
            MessageType::Event => match ConverseEvent::parse(&frame.name, &frame.payload) {
                Ok(event) => self.on_event(out, event),
                Err(e) => {
                    let message = format!(
                        "AWS Bedrock sent a `{}` event that is not valid: {e}",
                        frame.name
                    );
                    self.error(out, 502, &message);
                }
            },
            MessageType::Exception | MessageType::Error => {
                let message = errors::exception_message(&frame.name, &frame.payload);
                self.error(out, errors::exception_status(&frame.name), &message);
            }
        }
    }

    fn on_event(&mut self, out: &mut Vec<u8>, event: ConverseEvent) {
        match event {
            ConverseEvent::MessageStart => self.start(out),
            ConverseEvent::ContentBlockStart(e) => self.on_block_start(out, e),
            ConverseEvent::ContentBlockDelta(e) => self.on_block_delta(out, e),
            ConverseEvent::ContentBlockStop(e) => {
                if self
                    .open
                    .as_ref()
                    .is_some_and(|b| b.converse == e.content_block_index)
                {
                    self.close(out);
                }
            }
            ConverseEvent::MessageStop(e) => self.on_message_stop(out, e),
            ConverseEvent::Metadata(e) => {
                if let Some(usage) = e.usage {
                    self.usage = usage;
                }
                // Without `messageStop` the answer is unfinished: the end reports it.
                if self.stop_reason.is_some() {
                    self.finish(out);
                }
            }
            // Newer events (e.g. server tool traces) have no Messages equivalent.
            ConverseEvent::Unknown => {}
        }
    }

    fn on_block_start(&mut self, out: &mut Vec<u8>, event: BlockStart) {
        // Only tool blocks are announced; other starts (if any) wait for their deltas.
        let Some(tool) = event.start.and_then(|s| s.tool_use) else {
            return;
        };
        self.saw_output = true;
        let block =
            json!({"type": "tool_use", "id": tool.tool_use_id, "name": tool.name, "input": {}});
        self.open_block(out, event.content_block_index, Kind::Tool, Some(block));
    }

    fn on_block_delta(&mut self, out: &mut Vec<u8>, event: BlockDelta) {
        let block = event.content_block_index;
        let delta = event.delta;
        if let Some(text) = delta.text {
            self.saw_output = true;
            let index = self.ensure(out, block, Kind::Text);
            self.delta(out, index, json!({"type": "text_delta", "text": text}));
        }
        if let Some(tool) = delta.tool_use {
            // Input for a block that never started as a tool use has no id or name to
            // hang on; Converse always starts tool blocks first.
            if let Some(open) = self
                .open
                .as_ref()
                .filter(|b| b.converse == block && b.kind == Kind::Tool)
            {
                let index = open.index;
                let delta = json!({"type": "input_json_delta", "partial_json": tool.input});
                self.delta(out, index, delta);
            }
        }
        if let Some(reasoning) = delta.reasoning_content {
            self.on_reasoning(out, block, reasoning);
        }
    }

    fn on_reasoning(&mut self, out: &mut Vec<u8>, block: u64, delta: ReasoningDelta) {
        if let Some(text) = delta.text {
            self.saw_output = true;
            let index = self.ensure(out, block, thinking());
            self.delta(
                out,
                index,
                json!({"type": "thinking_delta", "thinking": text}),
            );
        }
        if let Some(piece) = delta.signature {
            self.ensure(out, block, thinking());
            if let Some(Kind::Thinking { signature }) = self.open.as_mut().map(|b| &mut b.kind) {
                signature.push_str(&piece);
            }
        }
        if let Some(piece) = delta.redacted_content {
            self.saw_output = true;
            let redacted = Kind::Redacted {
                data: String::new(),
            };
            self.ensure(out, block, redacted);
            if let Some(Kind::Redacted { data }) = self.open.as_mut().map(|b| &mut b.kind) {
                data.push_str(&piece);
            }
        }
    }

    fn on_message_stop(&mut self, out: &mut Vec<u8>, event: MessageStop) {
        self.close(out);
        self.stop_reason = Some(stop_reason(event.stop_reason.as_deref().unwrap_or("")));
        self.stop_sequence = matched_stop_sequence(event.additional_model_response_fields.as_ref());
    }

    fn sse(out: &mut Vec<u8>, kind: &str, data: &Value) {
        write_event(out, Some(kind), data.to_string().as_bytes());
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        // Converse reports usage only at the end; `message_delta` carries it.
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        Self::sse(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    /// The Anthropic index of the open block for Converse block `converse` of `kind`,
    /// opening one (and closing the previous) when needed.
    fn ensure(&mut self, out: &mut Vec<u8>, converse: u64, kind: Kind) -> u64 {
        match &self.open {
            Some(b) if b.converse == converse && b.kind.same_kind(&kind) => b.index,
            _ => {
                let block = match kind {
                    Kind::Text => Some(json!({"type": "text", "text": ""})),
                    Kind::Thinking { .. } => {
                        Some(json!({"type": "thinking", "thinking": "", "signature": ""}))
                    }
                    // Sent when the block stops, with all its data.
                    Kind::Redacted { .. } | Kind::Tool => None,
                };
                self.open_block(out, converse, kind, block)
            }
        }
    }

    fn open_block(
        &mut self,
        out: &mut Vec<u8>,
        converse: u64,
        kind: Kind,
        start: Option<Value>,
    ) -> u64 {
        self.start(out);
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        if let Some(block) = start {
            let event =
                json!({"type": "content_block_start", "index": index, "content_block": block});
            Self::sse(out, "content_block_start", &event);
        }
        self.open = Some(OpenBlock {
            converse,
            index,
            kind,
        });
        index
    }

    fn delta(&mut self, out: &mut Vec<u8>, index: u64, delta: Value) {
        let event = json!({"type": "content_block_delta", "index": index, "delta": delta});
        Self::sse(out, "content_block_delta", &event);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(block) = self.open.take() else {
            return;
        };
        let index = block.index;
        match block.kind {
            Kind::Thinking { signature } if !signature.is_empty() => {
                let delta = json!({"type": "signature_delta", "signature": signature});
                self.delta(out, index, delta);
            }
            Kind::Redacted { data } => {
                let block = json!({"type": "redacted_thinking", "data": data});
                let event =
                    json!({"type": "content_block_start", "index": index, "content_block": block});
                Self::sse(out, "content_block_start", &event);
            }
            _ => {}
        }
        Self::sse(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }

    /// `message_delta` and `message_stop`, once.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start(out);
        self.close(out);
        let delta = json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": self.stop_reason.unwrap_or("end_turn"),
                "stop_sequence": self.stop_sequence,
            },
            "usage": usage_json(&self.usage.to_usage()),
        });
        Self::sse(out, "message_delta", &delta);
        Self::sse(out, "message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }

    /// An Anthropic `error` event, unless the stream already ended.
    fn error(&mut self, out: &mut Vec<u8>, status: u16, message: &str) {
        if self.ended {
            return;
        }
        anthropic_error_event(out, status, message);
        self.ended = true;
        self.failed = true;
    }
}

fn thinking() -> Kind {
    Kind::Thinking {
        signature: String::new(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::framing::aws_eventstream::testing::encode;
    use crate::schema::fixtures::recorded_body;
    use proptest::prelude::*;

    /// Runs `body` through a fresh stream translator, cut at `cuts`.
    pub fn replay(body: &[u8], cuts: &[usize]) -> (Vec<u8>, Usage) {
        let mut t = MessagesStream::new("claude");
        // Fixed so outputs of different runs compare equal.
        t.id = "msg_test".into();
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, body.len());
            out.extend(t.push(&body[at..cut], false));
            at = cut;
        }
        out.extend(t.push(&body[at..], true));
        (out, t.usage())
    }

    /// The (event name, data) pairs of an SSE body; every event names its data's type.
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "{text}");
        text.split_terminator("\n\n")
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_string();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }

    /// What an Anthropic SDK's `messages.stream()` accumulates: the final message, or the
    /// error event that ended the stream. Checks the ordering SDKs rely on on the way.
    pub fn accumulate(out: &[u8]) -> Result<Value, Value> {
        let mut message = Value::Null;
        let mut json_bufs: Vec<String> = Vec::new();
        let mut open: Option<usize> = None;
        let mut stopped = false;
        for (n, (name, e)) in events(out).into_iter().enumerate() {
            assert!(!stopped, "event after message_stop: {name}");
            if name == "error" {
                return Err(e["error"].clone());
            }
            if n == 0 {
                assert_eq!(name, "message_start");
            }
            let index = e["index"].as_u64().map(|i| i as usize);
            match name.as_str() {
                "message_start" => {
                    assert_eq!(n, 0);
                    message = e["message"].clone();
                }
                "content_block_start" => {
                    assert_eq!(open, None, "a block starts while another is open");
                    let content = message["content"].as_array_mut().unwrap();
                    assert_eq!(index, Some(content.len()));
                    content.push(e["content_block"].clone());
                    json_bufs.push(String::new());
                    open = index;
                }
                "content_block_delta" => {
                    let i = index.unwrap();
                    assert_eq!(open, Some(i));
                    let block = &mut message["content"][i];
                    let d = &e["delta"];
                    match d["type"].as_str().unwrap() {
                        "text_delta" => {
                            let t = block["text"].as_str().unwrap().to_string();
                            block["text"] = (t + d["text"].as_str().unwrap()).into();
                        }
                        "thinking_delta" => {
                            let t = block["thinking"].as_str().unwrap().to_string();
                            block["thinking"] = (t + d["thinking"].as_str().unwrap()).into();
                        }
                        "signature_delta" => block["signature"] = d["signature"].clone(),
                        "input_json_delta" => {
                            assert_eq!(block["type"], "tool_use");
                            json_bufs[i].push_str(d["partial_json"].as_str().unwrap());
                        }
                        other => panic!("unknown delta {other}"),
                    }
                }
                "content_block_stop" => {
                    let i = index.unwrap();
                    assert_eq!(open, Some(i));
                    open = None;
                    if message["content"][i]["type"] == "tool_use" && !json_bufs[i].is_empty() {
                        message["content"][i]["input"] =
                            serde_json::from_str(&json_bufs[i]).unwrap();
                    }
                }
                "message_delta" => {
                    assert_eq!(open, None);
                    message["stop_reason"] = e["delta"]["stop_reason"].clone();
                    message["stop_sequence"] = e["delta"]["stop_sequence"].clone();
                    for (k, v) in e["usage"].as_object().unwrap() {
                        message["usage"][k] = v.clone();
                    }
                }
                "message_stop" => stopped = true,
                other => panic!("unknown event {other}"),
            }
        }
        assert!(stopped, "the stream ended without message_stop or error");
        Ok(message)
    }

    /// The message a recording describes, read from its frames without the translator.
    fn expected_message(name: &str) -> Value {
        let body = recorded_body(name);
        let mut blocks: Vec<(u64, Value)> = Vec::new();
        let mut inputs: Vec<String> = Vec::new();
        let mut stop = String::new();
        let mut usage = Value::Null;
        for frame in EventStreamDecoder::new().push(&body) {
            let frame = frame.unwrap();
            let p: Value = serde_json::from_slice(&frame.payload).unwrap();
            let i = p["contentBlockIndex"].as_u64().unwrap_or(0);
            let at = blocks.iter().position(|(b, _)| *b == i);
            match frame.name.as_str() {
                "contentBlockStart" => {
                    let t = &p["start"]["toolUse"];
                    blocks.push((
                        i,
                        json!({"type": "tool_use", "id": t["toolUseId"], "name": t["name"], "input": {}}),
                    ));
                    inputs.push(String::new());
                }
                "contentBlockDelta" => {
                    let d = &p["delta"];
                    let at = at.unwrap_or_else(|| {
                        let block = if d["text"].is_string() {
                            json!({"type": "text", "text": ""})
                        } else {
                            json!({"type": "thinking", "thinking": "", "signature": ""})
                        };
                        blocks.push((i, block));
                        inputs.push(String::new());
                        blocks.len() - 1
                    });
                    let b = &mut blocks[at].1;
                    let append = |b: &mut Value, k: &str, s: &Value| {
                        let t = b[k].as_str().unwrap().to_string();
                        b[k] = (t + s.as_str().unwrap()).into();
                    };
                    if d["text"].is_string() {
                        append(b, "text", &d["text"]);
                    }
                    let r = &d["reasoningContent"];
                    if r["text"].is_string() {
                        append(b, "thinking", &r["text"]);
                    }
                    if r["signature"].is_string() {
                        append(b, "signature", &r["signature"]);
                    }
                    if let Some(s) = d["toolUse"]["input"].as_str() {
                        inputs[at].push_str(s);
                    }
                }
                "messageStop" => stop = p["stopReason"].as_str().unwrap().to_string(),
                "metadata" => usage = p["usage"].clone(),
                _ => {}
            }
        }
        let content: Vec<Value> = blocks
            .into_iter()
            .zip(inputs)
            .map(|((_, mut b), input)| {
                if !input.is_empty() {
                    b["input"] = serde_json::from_str(&input).unwrap();
                }
                b
            })
            .collect();
        let n = |k: &str| usage[k].as_u64().unwrap_or(0);
        json!({
            "id": "msg_test", "type": "message", "role": "assistant", "model": "claude",
            "content": content,
            "stop_reason": stop_reason(&stop),
            "stop_sequence": null,
            "usage": {
                "input_tokens": n("inputTokens"),
                "output_tokens": n("outputTokens"),
                "cache_read_input_tokens": n("cacheReadInputTokens"),
                "cache_creation_input_tokens": n("cacheWriteInputTokens"),
            },
        })
    }

    const RECORDINGS: [&str; 3] = [
        "bedrock/converse-stream-tool-use.json",
        "bedrock/converse-stream-reasoning.json",
        "bedrock/converse-stream-cache-usage.json",
    ];

    fn check(name: &str) -> Value {
        let (out, usage) = replay(&recorded_body(name), &[]);
        let message = accumulate(&out).unwrap();
        assert_eq!(message, expected_message(name), "{name}");
        let u = &message["usage"];
        let n = |k: &str| u[k].as_u64().unwrap();
        // Metering counts cached input in the input, as OpenAI does.
        assert_eq!(
            usage.input,
            n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens")
        );
        assert_eq!(usage.cached_input, n("cache_read_input_tokens"));
        assert_eq!(usage.output, n("output_tokens"));
        message
    }

    #[test]
    fn recorded_tool_use_stream() {
        let m = check(RECORDINGS[0]);
        assert_eq!(m["stop_reason"], "tool_use");
        let types: Vec<&str> = m["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["text", "tool_use"]);
        assert_eq!(m["content"][1]["input"], json!({"location": "Barcelona"}));
        assert!(m["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Okay"));
    }

    #[test]
    fn recorded_reasoning_stream() {
        let m = check(RECORDINGS[1]);
        assert_eq!(m["content"][0]["type"], "thinking");
        assert!(!m["content"][0]["signature"].as_str().unwrap().is_empty());
        assert!(!m["content"][0]["thinking"].as_str().unwrap().is_empty());
        assert_eq!(m["content"][1]["type"], "text");
        assert_eq!(m["stop_reason"], "end_turn");
    }

    #[test]
    fn recorded_cache_usage_stream() {
        let m = check(RECORDINGS[2]);
        assert!(m["usage"]["cache_read_input_tokens"].as_u64().unwrap() > 0);
        let (out, _) = replay(&recorded_body(RECORDINGS[2]), &[]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: message_start\ndata: "));
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    fn frames(events: &[(&str, &str, &str)]) -> Vec<u8> {
        events
            .iter()
            .flat_map(|(kind, name, payload)| encode(kind, name, payload.as_bytes()))
            .collect()
    }

    #[test]
    fn redacted_reasoning_and_stop_sequence() {
        let body = frames(&[
            ("event", "messageStart", r#"{"role":"assistant"}"#),
            (
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"redactedContent":"UkV"}}}"#,
            ),
            (
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"redactedContent":"E="}}}"#,
            ),
            ("event", "contentBlockStop", r#"{"contentBlockIndex":0}"#),
            (
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"text":"Hi"}}"#,
            ),
            (
                "event",
                "messageStop",
                r#"{"stopReason":"stop_sequence","additionalModelResponseFields":{"stop_sequence":"END"}}"#,
            ),
        ]);
        // No metadata: the stream's end finishes the message, without usage.
        let (out, usage) = replay(&body, &[]);
        let m = accumulate(&out).unwrap();
        assert_eq!(
            m["content"],
            json!([{"type": "redacted_thinking", "data": "UkVE="}, {"type": "text", "text": "Hi"}])
        );
        assert_eq!(m["stop_reason"], "stop_sequence");
        assert_eq!(m["stop_sequence"], "END");
        assert_eq!(usage, Usage::default());
    }

    #[test]
    fn an_exception_mid_stream_is_an_anthropic_error_event() {
        let body = frames(&[
            ("event", "messageStart", r#"{"role":"assistant"}"#),
            (
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#,
            ),
            (
                "exception",
                "throttlingException",
                r#"{"message":"Too many tokens"}"#,
            ),
            ("event", "messageStop", r#"{"stopReason":"end_turn"}"#),
        ]);
        let (out, _) = replay(&body, &[]);
        let e = accumulate(&out).unwrap_err();
        assert_eq!(e["type"], "rate_limit_error");
        assert!(e["message"].as_str().unwrap().contains("Too many tokens"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\n\n") && !text.contains("message_stop"));
    }

    #[test]
    fn corrupt_cut_or_invalid_streams_end_with_an_error_event() {
        let body = recorded_body(RECORDINGS[0]);
        let mut corrupt = body.clone();
        corrupt[200] ^= 0x55;
        let cut = &body[..body.len() - 10];
        // Whole frames, but the stream stops before messageStop.
        let unfinished = frames(&[
            ("event", "messageStart", r#"{"role":"assistant"}"#),
            (
                "event",
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#,
            ),
        ]);
        let invalid = frames(&[("event", "contentBlockDelta", r#"{"delta":7}"#)]);
        for body in [&corrupt[..], cut, &unfinished, &invalid, b""] {
            let (out, _) = replay(body, &[]);
            let e = accumulate(&out).unwrap_err();
            assert_eq!(e["type"], "api_error");
            assert!(e["message"].is_string());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_always_end(
            bytes in proptest::collection::vec(any::<u8>(), 0..800),
            cuts in proptest::collection::vec(0usize..800, 0..8),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (out, _) = replay(&bytes, &cuts);
            let text = String::from_utf8(out).unwrap();
            let ended = text.contains("event: error\n")
                || text.ends_with("{\"type\":\"message_stop\"}\n\n");
            prop_assert!(ended, "{}", text);
        }

        #[test]
        fn recorded_streams_at_any_cuts_translate_the_same(
            which in 0usize..3,
            cuts in proptest::collection::vec(0usize..24000, 0..12),
        ) {
            let body = recorded_body(RECORDINGS[which]);
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(replay(&body, &cuts), replay(&body, &[]));
        }
    }
}
