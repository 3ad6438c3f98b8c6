//! A chat completion stream (what the translating schemas write) as the Responses
//! API's events, in the order OpenAI sends them and the official SDK assembles them:
//! `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, its content events (`response.output_text.delta`,
//! `response.function_call_arguments.delta`, `response.reasoning_summary_text.delta`,
//! and their `.done`), `response.output_item.done`, and last `response.completed` (or
//! `response.incomplete`) with the whole response and its usage. Every event carries the
//! next `sequence_number`; a stream that fails ends with an `error` event.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::output::{gemini_reasoning, new_id, thought_signature, Ending, Item, ResponseHeader};
use super::signature::Signature;
use crate::framing::sse::write_event;
use crate::usage::Usage;

pub struct EventWriter {
    pub header: ResponseHeader,
    items: Vec<Item>,
    /// The index of the item whose content events are being written.
    open: Option<usize>,
    /// Chat tool call index → output item index.
    calls: HashMap<u64, usize>,
    finish_reason: Option<String>,
    sequence: u64,
    started: bool,
    ended: bool,
    failed: bool,
}

impl EventWriter {
    pub fn new(header: ResponseHeader) -> Self {
        EventWriter {
            header,
            items: Vec::new(),
            open: None,
            calls: HashMap::new(),
            finish_reason: None,
            sequence: 0,
            started: false,
            ended: false,
            failed: false,
        }
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str, mut fields: Value) {
        fields["type"] = kind.into();
        fields["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        write_event(out, Some(kind), fields.to_string().as_bytes());
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.header.response(&[], None, None);
        self.event(out, "response.created", json!({"response": response}));
        let response = self.header.response(&[], None, None);
        self.event(out, "response.in_progress", json!({"response": response}));
    }

    /// One chat completion chunk.
    pub fn chunk(&mut self, out: &mut Vec<u8>, chunk: &Value) {
        if self.ended {
            return;
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            if !self.started && !model.is_empty() {
                self.header.model = model.to_string();
            }
        }
        self.start(out);
        let Some(choice) = chunk.pointer("/choices/0") else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("reasoning_content").and_then(Value::as_str) {
            self.reasoning_delta(out, text);
        }
        for block in delta
            .get("thinking_blocks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(sig) = Signature::from_thinking_block(block) {
                self.signed(out, sig);
            }
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            self.text_delta(out, text, false);
        }
        if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
            self.text_delta(out, text, true);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.tool_call_delta(out, call);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
    }

    /// Opens a new item (closing the open one) and returns its index.
    fn open_item(&mut self, out: &mut Vec<u8>, item: Item) -> usize {
        self.close(out);
        let index = self.items.len();
        let json = item.to_json(false);
        self.items.push(item);
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": json}),
        );
        self.open = Some(index);
        index
    }

    fn open_kind(&self) -> Option<&Item> {
        self.open.map(|i| &self.items[i])
    }

    /// The open reasoning item that is not signed yet, or a new one.
    fn open_reasoning(&mut self, out: &mut Vec<u8>) -> usize {
        match (self.open, self.open_kind()) {
            (
                Some(index),
                Some(Item::Reasoning {
                    signature: None, ..
                }),
            ) => index,
            _ => {
                let item = Item::Reasoning {
                    id: new_id("rs"),
                    summary: String::new(),
                    signature: None,
                };
                self.open_item(out, item)
            }
        }
    }

    fn reasoning_delta(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        let index = self.open_reasoning(out);
        let first = match &mut self.items[index] {
            Item::Reasoning { summary, .. } => {
                let first = summary.is_empty();
                summary.push_str(text);
                first
            }
            _ => false,
        };
        let id = self.items[index].id().to_string();
        if first {
            self.event(
                out,
                "response.reasoning_summary_part.added",
                json!({
                    "item_id": id, "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                }),
            );
        }
        self.event(
            out,
            "response.reasoning_summary_text.delta",
            json!({
                "item_id": id, "output_index": index, "summary_index": 0, "delta": text,
            }),
        );
    }

    /// A signed thinking block: it closes the reasoning it signs, or is an item itself.
    fn signed(&mut self, out: &mut Vec<u8>, sig: Signature) {
        let index = self.open_reasoning(out);
        if let Item::Reasoning {
            summary, signature, ..
        } = &mut self.items[index]
        {
            if let (true, Signature::Thinking { text, .. }) = (summary.is_empty(), &sig) {
                summary.clone_from(text);
            }
            *signature = Some(sig);
        }
        self.close(out);
    }

    fn text_delta(&mut self, out: &mut Vec<u8>, text: &str, refusal: bool) {
        if text.is_empty() {
            return;
        }
        let index = match self.open_kind() {
            Some(Item::Message { .. }) => self.open.unwrap_or_default(),
            _ => {
                let item = Item::Message {
                    id: new_id("msg"),
                    text: String::new(),
                    refusal: None,
                };
                let index = self.open_item(out, item);
                let part = if refusal {
                    json!({"type": "refusal", "refusal": ""})
                } else {
                    Item::text_part("")
                };
                let id = self.items[index].id().to_string();
                self.event(
                    out,
                    "response.content_part.added",
                    json!({
                        "item_id": id, "output_index": index, "content_index": 0, "part": part,
                    }),
                );
                index
            }
        };
        let id = self.items[index].id().to_string();
        let is_refusal = match &mut self.items[index] {
            Item::Message {
                text: t,
                refusal: r,
                ..
            } => {
                if r.is_some() || (refusal && t.is_empty()) {
                    r.get_or_insert_with(String::new).push_str(text);
                    true
                } else {
                    t.push_str(text);
                    false
                }
            }
            _ => false,
        };
        let (kind, mut fields) = if is_refusal {
            ("response.refusal.delta", json!({}))
        } else {
            ("response.output_text.delta", json!({"logprobs": []}))
        };
        fields["item_id"] = id.into();
        fields["output_index"] = index.into();
        fields["content_index"] = 0.into();
        fields["delta"] = text.into();
        self.event(out, kind, fields);
    }

    fn tool_call_delta(&mut self, out: &mut Vec<u8>, call: &Value) {
        let Some(chat_index) = call.get("index").and_then(Value::as_u64) else {
            return;
        };
        let index = match self.calls.get(&chat_index) {
            Some(i) => *i,
            None => {
                if let Some(sig) = thought_signature(call) {
                    self.open_item(out, gemini_reasoning(sig));
                }
                let s = |p: &str| {
                    call.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let item = Item::FunctionCall {
                    id: new_id("fc"),
                    call_id: s("/id"),
                    name: s("/function/name"),
                    arguments: String::new(),
                };
                let index = self.open_item(out, item);
                self.calls.insert(chat_index, index);
                index
            }
        };
        let fragment = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        if fragment.is_empty() {
            return;
        }
        if let Item::FunctionCall { arguments, .. } = &mut self.items[index] {
            arguments.push_str(fragment);
        }
        let id = self.items[index].id().to_string();
        self.event(
            out,
            "response.function_call_arguments.delta",
            json!({
                "item_id": id, "output_index": index, "delta": fragment,
            }),
        );
    }

    /// Writes the `.done` events of the open item.
    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(index) = self.open.take() else {
            return;
        };
        let item = self.items[index].clone();
        let id = item.id().to_string();
        match &item {
            Item::Reasoning { summary, .. } if !summary.is_empty() => {
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({
                        "item_id": id, "output_index": index, "summary_index": 0, "text": summary,
                    }),
                );
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({
                        "item_id": id, "output_index": index, "summary_index": 0,
                        "part": {"type": "summary_text", "text": summary},
                    }),
                );
            }
            Item::Reasoning { .. } => {}
            Item::Message { text, refusal, .. } => {
                let (kind, field, value, part) = match refusal {
                    Some(r) if text.is_empty() => (
                        "response.refusal.done",
                        "refusal",
                        r.as_str(),
                        json!({"type": "refusal", "refusal": r}),
                    ),
                    _ => (
                        "response.output_text.done",
                        "text",
                        text.as_str(),
                        Item::text_part(text),
                    ),
                };
                let mut fields = json!({"item_id": id, "output_index": index, "content_index": 0});
                fields[field] = value.into();
                if field == "text" {
                    fields["logprobs"] = json!([]);
                }
                self.event(out, kind, fields);
                self.event(
                    out,
                    "response.content_part.done",
                    json!({
                        "item_id": id, "output_index": index, "content_index": 0, "part": part,
                    }),
                );
            }
            Item::FunctionCall {
                name, arguments, ..
            } => {
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    json!({
                        "item_id": id, "output_index": index, "name": name, "arguments": arguments,
                    }),
                );
            }
        }
        self.event(
            out,
            "response.output_item.done",
            json!({
                "output_index": index, "item": item.to_json(true),
            }),
        );
    }

    /// The end of a finished stream: the open item closed, then the whole response.
    pub fn complete(&mut self, out: &mut Vec<u8>, usage: &Usage) {
        if self.ended {
            return;
        }
        self.start(out);
        self.close(out);
        let ending = Ending::from_finish_reason(self.finish_reason.as_deref());
        let kind = match ending {
            Ending::Completed => "response.completed",
            Ending::Incomplete(_) => "response.incomplete",
        };
        let response = self.header.response(&self.items, Some(usage), Some(ending));
        self.event(out, kind, json!({"response": response}));
        self.ended = true;
    }

    /// Ends the stream with the Responses API's `error` event.
    pub fn error(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        if self.ended {
            return;
        }
        crate::api::error::responses_error_event(out, self.sequence, code, message);
        self.sequence += 1;
        self.ended = true;
        self.failed = true;
    }
}
