//! An OpenAI `chat.completion.chunk` stream as Anthropic's Messages SSE, chunk by chunk:
//! `message_start`, then for each content block `content_block_start`, its
//! `content_block_delta`s and `content_block_stop`, then `message_delta` (stop reason and
//! usage) and `message_stop`.
//!
//! - `reasoning_content` deltas become a `thinking` block, `content` (and `refusal`) a
//!   `text` block, each tool call a `tool_use` block whose `arguments` pieces are
//!   `input_json_delta`s. Anthropic streams one block at a time: a delta of another kind
//!   closes the open block first. A tool call opens with its `id`; OpenAI streams one
//!   call after the other, and a delta for a call already closed (never seen from
//!   OpenAI) ends the stream with an error rather than losing its arguments.
//! - The finish reason comes before the usage chunk (asked for with
//!   `stream_options.include_usage`), so `message_delta` and `message_stop` are sent at
//!   `[DONE]`, or at the end of the stream once the finish reason came.
//! - An error chunk, an unreadable chunk or a stream cut before its finish reason ends the
//!   stream with an Anthropic `error` event; nothing follows it.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::anthropic_error_event;
use crate::framing::sse::{event_data, write_event, SseSplitter};
use crate::usage::Usage;

use super::messages_fields::{message_id, stop_reason};
use crate::schema::anthropic::messages::usage_json;

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// What the open Anthropic block holds.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Thinking,
    /// The OpenAI tool call index it carries.
    Tool(u64),
}

/// Translates one chat completions stream for a Messages client.
pub struct MessagesStream {
    splitter: SseSplitter,
    requested_model: String,
    model: Option<String>,
    started: bool,
    /// The open block: its Anthropic index and kind.
    open: Option<(u64, Kind)>,
    next_index: u64,
    /// Tool calls whose block was opened (and perhaps closed).
    tool_calls: BTreeSet<u64>,
    stop: Option<&'static str>,
    usage: Usage,
    saw_output: bool,
    ended: bool,
    /// The stream ended with an error event.
    failed: bool,
}

impl MessagesStream {
    pub fn new(requested_model: &str) -> Self {
        MessagesStream {
            splitter: SseSplitter::default(),
            requested_model: requested_model.to_string(),
            model: None,
            started: false,
            open: None,
            next_index: 0,
            tool_calls: BTreeSet::new(),
            stop: None,
            usage: Usage::default(),
            saw_output: false,
            ended: false,
            failed: false,
        }
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether the stream ended with an error event.
    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn saw_output(&self) -> bool {
        self.saw_output
    }

    /// Translates a piece of the stream; returns the Anthropic events it completes.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut events = self.splitter.push(chunk);
        if end_of_stream {
            events.extend(self.splitter.finish());
        }
        for raw in events {
            if self.ended {
                break;
            }
            let Some(data) = event_data(&raw) else {
                continue;
            };
            if data.trim() == "[DONE]" {
                self.finish(&mut out);
                continue;
            }
            match serde_json::from_str::<Chunk>(&data) {
                Ok(chunk) => self.on_chunk(&mut out, chunk),
                Err(_) => self.error(
                    &mut out,
                    502,
                    "the provider sent a stream chunk that could not be read",
                ),
            }
        }
        if end_of_stream && !self.ended {
            self.finish(&mut out);
        }
        out
    }

    fn on_chunk(&mut self, out: &mut Vec<u8>, chunk: Chunk) {
        if let Some(error) = chunk.error {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider failed during the stream");
            return self.error(out, 500, message);
        }
        if !self.started && chunk.choices.is_empty() && chunk.usage.is_none() {
            // Azure opens with a chunk of prompt filter results, without id or model: the
            // message starts with the first chunk that names them.
            return;
        }
        if self.model.is_none() {
            self.model = chunk.model.filter(|m| !m.is_empty());
        }
        if !self.started {
            self.start(out, chunk.id.as_deref());
        }
        if let Some(usage) = chunk.usage.as_ref().and_then(Usage::from_openai) {
            self.usage = usage;
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            return;
        };
        let delta = choice.delta;
        if let Some(text) = delta.reasoning_content.filter(|t| !t.is_empty()) {
            let index = self.ensure(out, Kind::Thinking);
            self.delta(
                out,
                index,
                json!({"type": "thinking_delta", "thinking": text}),
            );
        }
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            let index = self.ensure(out, Kind::Text);
            self.delta(out, index, json!({"type": "text_delta", "text": text}));
        }
        if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
            self.stop = Some("refusal");
            let index = self.ensure(out, Kind::Text);
            self.delta(out, index, json!({"type": "text_delta", "text": text}));
        }
        for call in delta.tool_calls {
            self.on_tool_call(out, call);
            if self.ended {
                return;
            }
        }
        if let Some(reason) = choice.finish_reason {
            if self.stop != Some("refusal") {
                self.stop = Some(stop_reason(&reason));
            }
        }
    }

    fn on_tool_call(&mut self, out: &mut Vec<u8>, call: ToolCallDelta) {
        let (name, arguments) = match call.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        if self.open.map(|(_, kind)| kind) != Some(Kind::Tool(call.index)) {
            if self.tool_calls.contains(&call.index) {
                return self.error(
                    out,
                    502,
                    "the provider went back to a tool call it had finished",
                );
            }
            let Some(id) = call.id else {
                return self.error(out, 502, "the provider began a tool call without an id");
            };
            self.close(out);
            self.tool_calls.insert(call.index);
            let block = json!({"type": "tool_use", "id": id, "name": name.unwrap_or_default(), "input": {}});
            self.open_block(out, Kind::Tool(call.index), block);
        }
        if let (Some(arguments), Some((index, _))) =
            (arguments.filter(|a| !a.is_empty()), self.open)
        {
            self.delta(
                out,
                index,
                json!({"type": "input_json_delta", "partial_json": arguments}),
            );
        }
    }

    fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
        write_event(out, Some(name), data.to_string().as_bytes());
    }

    fn start(&mut self, out: &mut Vec<u8>, openai_id: Option<&str>) {
        self.started = true;
        let model = self.model.as_deref().unwrap_or(&self.requested_model);
        let message = json!({
            "id": message_id(openai_id), "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            // OpenAI reports usage only in its last chunk.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        Self::event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    /// The index of an open block of `kind`, opening one (and closing another) if needed.
    fn ensure(&mut self, out: &mut Vec<u8>, kind: Kind) -> u64 {
        match self.open {
            Some((index, open)) if open == kind => index,
            _ => {
                self.close(out);
                let block = match kind {
                    Kind::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                    _ => json!({"type": "text", "text": ""}),
                };
                self.open_block(out, kind, block)
            }
        }
    }

    fn open_block(&mut self, out: &mut Vec<u8>, kind: Kind, block: Value) -> u64 {
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        self.saw_output = true;
        let start = json!({"type": "content_block_start", "index": index, "content_block": block});
        Self::event(out, "content_block_start", &start);
        index
    }

    fn delta(&mut self, out: &mut Vec<u8>, index: u64, delta: Value) {
        let event = json!({"type": "content_block_delta", "index": index, "delta": delta});
        Self::event(out, "content_block_delta", &event);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            let stop = json!({"type": "content_block_stop", "index": index});
            Self::event(out, "content_block_stop", &stop);
        }
    }

    /// Ends the message once the finish reason came; else the stream was cut.
    fn finish(&mut self, out: &mut Vec<u8>) {
        let Some(stop) = self.stop.filter(|_| self.started) else {
            return self.error(out, 502, crate::schema::STREAM_CUT_MESSAGE);
        };
        self.close(out);
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": usage_json(&self.usage),
        });
        Self::event(out, "message_delta", &delta);
        Self::event(out, "message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }

    fn error(&mut self, out: &mut Vec<u8>, status: u16, message: &str) {
        if !self.ended {
            anthropic_error_event(out, status, message);
            self.ended = true;
            self.failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixtures::{cassette_body, load, response_body};

    /// The Anthropic events of `out`, as (event name, data).
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let name = lines
                    .next()
                    .unwrap()
                    .strip_prefix("event: ")
                    .unwrap()
                    .to_string();
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                (name, serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    fn replay(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut t = MessagesStream::new("asked");
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let cut = cut.clamp(from, body.len());
            out.extend(t.push(&body[from..cut], cut == body.len()));
            from = cut;
        }
        out
    }

    /// The text the recorded OpenAI stream carries, read from the recording itself.
    fn recorded_text(body: &[u8]) -> String {
        let text = std::str::from_utf8(body).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")?
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    #[test]
    fn recorded_stream_becomes_the_events_anthropic_sends() {
        let body = cassette_body("openai/chat-streaming.yaml");
        let out = replay(&body, &[]);
        let events = events(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[..2], ["message_start", "content_block_start"]);
        assert_eq!(
            names[names.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
        let text: String = events
            .iter()
            .filter_map(|(_, e)| e.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert_eq!(text, recorded_text(&body));
        assert_eq!(
            events[events.len() - 2].1["delta"]["stop_reason"],
            "end_turn"
        );
        // Any split gives the same events.
        for cut in [1, 7, body.len() / 3, body.len() - 2] {
            assert_eq!(replay(&body, &[cut]), out);
        }
    }

    #[test]
    fn azures_recorded_stream_starts_with_its_id_and_model() {
        let body = response_body(&load(
            "azure/chat-completions-stream-content-filter-results.json",
        ));
        // The first chunk that names the answer, read from the recording itself.
        let named: Value = std::str::from_utf8(&body)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|c| c["id"].as_str().is_some_and(|id| !id.is_empty()))
            .unwrap();
        let events = events(&replay(&body, &[]));
        let message = &events[0].1["message"];
        let id = named["id"]
            .as_str()
            .unwrap()
            .trim_start_matches("chatcmpl-");
        assert_eq!(message["id"], format!("msg_{id}"));
        assert_eq!(message["model"], named["model"]);
        assert_eq!(events.last().unwrap().0, "message_stop");
    }

    #[test]
    fn recorded_length_stop_and_usage() {
        let body = cassette_body("openai/chat-streaming-detailed-usage.yaml");
        let usage: Value = std::str::from_utf8(&body)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned())
            .unwrap();
        let events = events(&replay(&body, &[]));
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        // The model spent its whole budget reasoning: no content block.
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
        let delta = &events[1].1;
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
        assert_eq!(delta["usage"]["output_tokens"], usage["completion_tokens"]);
        let cached = usage
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        assert_eq!(
            delta["usage"]["input_tokens"].as_u64(),
            usage["prompt_tokens"].as_u64().map(|p| p - cached)
        );
    }

    #[test]
    fn tool_calls_stream_as_tool_use_blocks() {
        let body = concat!(
            "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me check.\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"time\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":12,\"total_tokens\":42}}\n\n",
            "data: [DONE]\n\n",
        );
        let events = events(&replay(body.as_bytes(), &[]));
        let blocks: Vec<&Value> = events
            .iter()
            .filter(|(n, _)| n == "content_block_start")
            .map(|(_, e)| &e["content_block"])
            .collect();
        assert_eq!(blocks[0]["type"], "text");
        assert_eq!(
            (blocks[1]["id"].as_str(), blocks[1]["name"].as_str()),
            (Some("call_a"), Some("weather"))
        );
        assert_eq!(blocks[2]["id"], "call_b");
        let json: String = events
            .iter()
            .filter(|(_, e)| e["index"] == 1)
            .filter_map(|(_, e)| e.pointer("/delta/partial_json").and_then(Value::as_str))
            .collect();
        assert_eq!(json, "{\"city\":\"Paris\"}");
        let (_, delta) = &events[events.len() - 2];
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["input_tokens"], 30);
        assert_eq!(delta["usage"]["output_tokens"], 12);
    }

    #[test]
    fn cut_or_failed_streams_end_with_one_error_event() {
        let body = cassette_body("openai/chat-streaming.yaml");
        let cut = &body[..body.len() / 2];
        let got = events(&replay(cut, &[]));
        assert_eq!(got.last().unwrap().0, "error");
        assert_eq!(got.iter().filter(|(n, _)| n == "error").count(), 1);
        let failed: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n";
        let got = events(&replay(failed, &[]));
        let (name, last) = got.last().unwrap();
        assert_eq!(
            (name.as_str(), last["error"]["message"].as_str()),
            ("error", Some("overloaded"))
        );
        let garbage = events_of_garbage();
        assert_eq!(garbage.last().unwrap().0, "error");
    }

    fn events_of_garbage() -> Vec<(String, Value)> {
        events(&replay(b"data: {not json\n\n", &[]))
    }
}
