//! What a span reads of the answer the client got, in the client's API shape whatever
//! the provider's schema: the finish reasons (`gen_ai.response.finish_reasons`) and,
//! only when content capture is on, the output messages. Read only for traced requests.

use serde_json::{json, Value};

use super::content::{
    anthropic_parts, chat_message, fit, output_message, responses_item, MAX_CONTENT_BYTES,
    TRUNCATED,
};
use crate::api::ApiKind;
use crate::framing::sse::{event_data, SseSplitter};

/// Choices, tool calls and content blocks kept at most: a provider's numbers do not size
/// memory.
const MAX_ITEMS: usize = 128;

pub struct AnswerReader {
    api: ApiKind,
    capture: bool,
    splitter: SseSplitter,
    /// Per choice (chat, completions) or once (Messages, Responses).
    finish_reasons: Vec<Option<String>>,
    /// A whole answer's output messages, when captured.
    output: Option<Value>,
    /// A chat stream's choices, as their deltas add up (captured only).
    choices: Vec<StreamedChoice>,
    /// A Messages stream's content blocks, at the indexes they name (captured only).
    blocks: Vec<Value>,
    /// Bytes of streamed text still kept; past it, pieces are dropped (and marked).
    budget: usize,
    truncated: bool,
}

#[derive(Default)]
struct StreamedChoice {
    text: String,
    reasoning: String,
    tool_calls: Vec<Value>,
}

impl AnswerReader {
    pub fn new(api: ApiKind, capture: bool) -> Self {
        AnswerReader {
            api,
            capture,
            splitter: SseSplitter::default(),
            finish_reasons: Vec::new(),
            output: None,
            choices: Vec::new(),
            blocks: Vec::new(),
            budget: MAX_CONTENT_BYTES,
            truncated: false,
        }
    }

    /// Whether answers of this API name a finish reason or hold content: others are not
    /// read at all.
    fn reads(&self) -> bool {
        matches!(
            self.api,
            ApiKind::ChatCompletions
                | ApiKind::Completions
                | ApiKind::Messages
                | ApiKind::Responses
        )
    }

    /// A whole answer body, as the client receives it.
    pub fn unary(&mut self, body: &[u8]) {
        if !self.reads() {
            return;
        }
        if let Ok(answer) = serde_json::from_slice::<Value>(body) {
            self.whole(&answer);
        }
    }

    /// A piece of a streamed answer, as the client receives it.
    pub fn stream(&mut self, piece: &[u8], end_of_stream: bool) {
        if !self.reads() {
            return;
        }
        for raw in self.splitter.push_piece(piece, end_of_stream) {
            let Some(data) = event_data(&raw) else {
                continue;
            };
            if !self.capture && !names_a_finish(self.api, &data) {
                continue; // without content to keep, most events need no parse
            }
            if let Ok(event) = serde_json::from_str::<Value>(&data) {
                self.event(&event);
            }
        }
    }

    pub fn finish_reasons(&self) -> Vec<String> {
        self.finish_reasons.iter().flatten().cloned().collect()
    }

    /// The output messages, when content is captured and the answer had any.
    pub fn output_messages(&self) -> Option<Value> {
        if !self.capture {
            return None;
        }
        if self.output.is_some() {
            return self.output.clone();
        }
        let marker = self
            .truncated
            .then(|| json!({"type": "text", "content": TRUNCATED}));
        if !self.choices.is_empty() {
            let messages = self.choices.iter().enumerate().map(|(i, c)| {
                let mut parts = Vec::new();
                if !c.reasoning.is_empty() {
                    parts.push(json!({"type": "reasoning", "content": c.reasoning}));
                }
                if !c.text.is_empty() {
                    parts.push(json!({"type": "text", "content": c.text}));
                }
                parts.extend(c.tool_calls.iter().cloned());
                parts.extend(marker.clone());
                output_message(parts, self.reason(i))
            });
            return Some(Value::Array(messages.collect()));
        }
        if !self.blocks.is_empty() {
            let mut parts = anthropic_parts(&Value::Array(self.blocks.clone()));
            parts.extend(marker);
            return Some(json!([output_message(parts, self.reason(0))]));
        }
        None
    }

    fn reason(&self, i: usize) -> Option<&str> {
        self.finish_reasons.get(i).and_then(|r| r.as_deref())
    }

    fn set_reason(&mut self, i: usize, reason: Option<&Value>) {
        let Some(reason) = reason.and_then(Value::as_str) else {
            return;
        };
        if i >= MAX_ITEMS {
            return;
        }
        if self.finish_reasons.len() <= i {
            self.finish_reasons.resize(i + 1, None);
        }
        self.finish_reasons[i] = Some(reason.to_string());
    }

    /// Takes what of `piece` the budget still allows.
    fn kept<'a>(&mut self, piece: &'a str) -> &'a str {
        if piece.len() <= self.budget {
            self.budget -= piece.len();
            return piece;
        }
        let mut end = self.budget;
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        self.budget = 0;
        self.truncated = true;
        &piece[..end]
    }

    /// A whole answer object: a chat completion, a completion, a message or a response.
    fn whole(&mut self, answer: &Value) {
        match self.api {
            ApiKind::ChatCompletions | ApiKind::Completions => {
                let choices = answer.get("choices").and_then(Value::as_array);
                let mut messages = Vec::new();
                for (i, choice) in choices.into_iter().flatten().enumerate().take(MAX_ITEMS) {
                    let i = index(choice).unwrap_or(i);
                    self.set_reason(i, choice.get("finish_reason"));
                    if self.capture {
                        let parts = match choice.get("message") {
                            Some(m) => chat_message(m)["parts"].clone(),
                            None => {
                                let text = choice.get("text").and_then(Value::as_str);
                                json!([{"type": "text", "content": text.unwrap_or("")}])
                            }
                        };
                        let parts = parts.as_array().cloned().unwrap_or_default();
                        messages.push(output_message(parts, self.reason(i)));
                    }
                }
                self.output = self.capture.then_some(Value::Array(messages));
            }
            ApiKind::Messages => {
                self.set_reason(0, answer.get("stop_reason"));
                if self.capture {
                    let parts = answer
                        .get("content")
                        .map(anthropic_parts)
                        .unwrap_or_default();
                    self.output = Some(json!([output_message(parts, self.reason(0))]));
                }
            }
            ApiKind::Responses => {
                let reason = answer
                    .pointer("/incomplete_details/reason")
                    .filter(|r| r.is_string())
                    .or_else(|| answer.get("status"));
                self.set_reason(0, reason);
                if self.capture {
                    let items = answer.get("output").and_then(Value::as_array);
                    let parts: Vec<Value> = items
                        .into_iter()
                        .flatten()
                        .map(responses_item)
                        .filter_map(|m| m.get("parts").and_then(Value::as_array).cloned())
                        .flatten()
                        .collect();
                    self.output = Some(json!([output_message(parts, self.reason(0))]));
                }
            }
            _ => {}
        }
        if let Some(output) = self.output.as_mut() {
            fit(output);
        }
    }

    /// One event of a streamed answer.
    fn event(&mut self, event: &Value) {
        match self.api {
            ApiKind::ChatCompletions | ApiKind::Completions => {
                let choices = event.get("choices").and_then(Value::as_array);
                for (i, choice) in choices.into_iter().flatten().enumerate().take(MAX_ITEMS) {
                    let i = index(choice).unwrap_or(i);
                    self.set_reason(i, choice.get("finish_reason"));
                    if self.capture {
                        self.chat_delta(i, choice);
                    }
                }
            }
            ApiKind::Messages => match event.get("type").and_then(Value::as_str) {
                Some("message_delta") => self.set_reason(0, event.pointer("/delta/stop_reason")),
                Some("content_block_start") if self.capture => self.block_start(event),
                Some("content_block_delta") if self.capture => self.block_delta(event),
                _ => {}
            },
            // The event that ends a Responses stream carries the whole response.
            ApiKind::Responses => {
                let last = matches!(
                    event.get("type").and_then(Value::as_str),
                    Some("response.completed" | "response.incomplete" | "response.failed")
                );
                if let Some(response) = event.get("response").filter(|_| last) {
                    self.whole(response);
                }
            }
            _ => {}
        }
    }

    fn chat_delta(&mut self, i: usize, choice: &Value) {
        if i >= MAX_ITEMS {
            return;
        }
        if self.choices.len() <= i {
            self.choices.resize_with(i + 1, StreamedChoice::default);
        }
        let delta = choice.get("delta");
        let field = |name: &str| delta.and_then(|d| d.get(name)).and_then(Value::as_str);
        let text = field("content").or_else(|| choice.get("text").and_then(Value::as_str));
        if let Some(t) = text {
            let t = self.kept(t);
            self.choices[i].text.push_str(t);
        }
        if let Some(t) = field("reasoning_content") {
            let t = self.kept(t);
            self.choices[i].reasoning.push_str(t);
        }
        let calls = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            let known = self.choices[i].tool_calls.len();
            // A delta without its index continues the last call.
            let n = index(call).unwrap_or(known.saturating_sub(1));
            if known <= n {
                let blank = json!({"type": "tool_call", "id": null, "name": null, "arguments": ""});
                self.choices[i].tool_calls.resize(n + 1, blank);
            }
            let args = call.pointer("/function/arguments").and_then(Value::as_str);
            let args = args.map(|a| self.kept(a)).unwrap_or("");
            let Some(part) = self.choices[i].tool_calls[n].as_object_mut() else {
                continue;
            };
            for (key, pointer) in [("id", "/id"), ("name", "/function/name")] {
                if let Some(v) = call.pointer(pointer).filter(|v| v.is_string()) {
                    part.insert(key.into(), v.clone());
                }
            }
            if let Some(Value::String(so_far)) = part.get_mut("arguments") {
                so_far.push_str(args);
            }
        }
    }

    /// A Messages stream's new content block, kept at the index it names so that its
    /// deltas find it.
    fn block_start(&mut self, event: &Value) {
        let block = event.get("content_block").filter(|b| b.is_object());
        let (Some(i), Some(block)) = (index(event), block) else {
            return;
        };
        if self.blocks.len() <= i {
            self.blocks
                .resize(i + 1, json!({"type": "text", "text": ""}));
        }
        self.blocks[i] = block.clone();
    }

    fn block_delta(&mut self, event: &Value) {
        let Some(i) = index(event).filter(|&i| i < self.blocks.len()) else {
            return;
        };
        let Some(delta) = event.get("delta") else {
            return;
        };
        let (field, piece) = match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => ("text", delta.get("text")),
            Some("thinking_delta") => ("thinking", delta.get("thinking")),
            // A tool's input arrives as JSON text; kept as that text.
            Some("input_json_delta") => ("input", delta.get("partial_json")),
            _ => return,
        };
        let Some(piece) = piece.and_then(Value::as_str) else {
            return;
        };
        let piece = self.kept(piece);
        let Some(block) = self.blocks[i].as_object_mut() else {
            return;
        };
        match block.get_mut(field) {
            Some(Value::String(so_far)) => so_far.push_str(piece),
            // A tool's `input` starts as `{}`: the streamed JSON text replaces it.
            _ => {
                block.insert(field.into(), Value::String(piece.to_string()));
            }
        }
    }
}

/// Whether an event's data can name a finish reason (read without content capture).
/// Compact and spaced JSON both; a provider writing it otherwise only loses the reason.
fn names_a_finish(api: ApiKind, data: &str) -> bool {
    match api {
        ApiKind::ChatCompletions | ApiKind::Completions => {
            data.contains("\"finish_reason\":\"") || data.contains("\"finish_reason\": \"")
        }
        ApiKind::Messages => data.contains("message_delta"),
        ApiKind::Responses => data.contains("\"response."),
        _ => false,
    }
}

fn index(v: &Value) -> Option<usize> {
    v.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        // A provider's index is not trusted to size memory.
        .filter(|&i| i < MAX_ITEMS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(events: &[&str]) -> Vec<u8> {
        events
            .iter()
            .map(|e| format!("data: {e}\n\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn a_chat_answer_gives_each_choices_finish_reason() {
        let mut r = AnswerReader::new(ApiKind::ChatCompletions, false);
        r.unary(br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"yo"},"finish_reason":"length"}]}"#);
        assert_eq!(r.finish_reasons(), ["stop", "length"]);
        assert!(r.output_messages().is_none(), "content only when captured");
    }

    #[test]
    fn a_chat_stream_adds_up_text_and_tool_calls_when_captured() {
        let mut r = AnswerReader::new(ApiKind::ChatCompletions, true);
        let body = sse(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        // In pieces that split events.
        for piece in body.chunks(7) {
            r.stream(piece, false);
        }
        r.stream(b"", true);
        assert_eq!(r.finish_reasons(), ["tool_calls"]);
        assert_eq!(
            r.output_messages().unwrap(),
            json!([{"role":"assistant","parts":[
                {"type":"text","content":"Hello"},
                {"type":"tool_call","id":"c1","name":"f","arguments":"{\"a\":1}"}],
                "finish_reason":"tool_calls"}])
        );
    }

    #[test]
    fn a_messages_stream_gives_its_stop_reason_and_blocks() {
        let mut r = AnswerReader::new(ApiKind::Messages, true);
        let body = concat!(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"there\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
        );
        r.stream(body.as_bytes(), true);
        assert_eq!(r.finish_reasons(), ["end_turn"]);
        assert_eq!(
            r.output_messages().unwrap(),
            json!([{"role":"assistant","parts":[{"type":"text","content":"Hi there"}],"finish_reason":"end_turn"}])
        );
    }

    #[test]
    fn a_responses_answer_reads_its_status_or_why_it_is_incomplete() {
        let mut r = AnswerReader::new(ApiKind::Responses, true);
        r.unary(br#"{"status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}]}"#);
        assert_eq!(r.finish_reasons(), ["completed"]);
        assert_eq!(r.output_messages().unwrap()[0]["parts"][0]["content"], "hi");
        let mut s = AnswerReader::new(ApiKind::Responses, false);
        s.stream(&sse(&[r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]}}"#]), true);
        assert_eq!(s.finish_reasons(), ["max_output_tokens"]);
    }

    #[test]
    fn odd_provider_events_neither_panic_nor_grow_memory() {
        let mut r = AnswerReader::new(ApiKind::Messages, true);
        let body = concat!(
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":5}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":7}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"y\"}}\n\n",
        );
        r.stream(body.as_bytes(), true);
        let parts = &r.output_messages().unwrap()[0]["parts"];
        assert_eq!(parts.as_array().unwrap().last().unwrap()["content"], "y");
        // Tool-call deltas without an index continue the last call, not one each.
        let mut c = AnswerReader::new(ApiKind::ChatCompletions, true);
        let call =
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"ab"}}]}}]}"#;
        c.stream(&sse(&[call; 1000]), true);
        assert_eq!(c.choices[0].tool_calls.len(), 1);
        assert_eq!(
            c.choices[0].tool_calls[0]["arguments"]
                .as_str()
                .unwrap()
                .len(),
            2000
        );
    }

    #[test]
    fn streamed_content_stops_growing_at_the_budget() {
        let mut r = AnswerReader::new(ApiKind::ChatCompletions, true);
        let piece = format!(
            r#"{{"choices":[{{"index":0,"delta":{{"content":"{}"}}}}]}}"#,
            "é".repeat(5000)
        );
        for _ in 0..20 {
            r.stream(&sse(&[piece.as_str()]), false);
        }
        r.stream(
            &sse(&[r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#]),
            true,
        );
        let text = r.choices[0].text.len();
        assert!(
            text <= MAX_CONTENT_BYTES && text > MAX_CONTENT_BYTES - 4,
            "{text}"
        );
        let out = r.output_messages().unwrap();
        assert_eq!(
            out[0]["parts"][1],
            json!({"type": "text", "content": TRUNCATED})
        );
        assert_eq!(out[0]["finish_reason"], "length");
    }

    #[test]
    fn without_capture_events_that_name_no_finish_are_not_parsed_yet_reasons_are_found() {
        let mut r = AnswerReader::new(ApiKind::ChatCompletions, false);
        r.stream(
            &sse(&[
                r#"{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason": "stop"}]}"#,
            ]),
            true,
        );
        assert_eq!(r.finish_reasons(), ["stop"]);
        let mut e = AnswerReader::new(ApiKind::Embeddings, true);
        e.unary(br#"{"data":[],"choices":[{"finish_reason":"stop"}]}"#);
        assert!(e.finish_reasons().is_empty() && e.output_messages().is_none());
        // A null reason of an incomplete response falls back to its status.
        let mut p = AnswerReader::new(ApiKind::Responses, false);
        p.unary(br#"{"status":"failed","incomplete_details":{"reason":null}}"#);
        assert_eq!(p.finish_reasons(), ["failed"]);
    }

    #[test]
    fn a_provider_index_does_not_size_memory() {
        let mut r = AnswerReader::new(ApiKind::ChatCompletions, true);
        r.stream(&sse(&[r#"{"choices":[{"index":4000000000,"delta":{"content":"x"},"finish_reason":"stop"}]}"#]), true);
        assert!(r.choices.len() <= 1 && r.finish_reasons.len() <= 1);
    }
}
