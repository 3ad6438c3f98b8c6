//! What a span reads of the answer the client got, in the client's API shape whatever
//! the provider's schema: the finish reasons (`gen_ai.response.finish_reasons`) and,
//! only when content capture is on, the output messages. Read only for traced requests.

use serde_json::{json, Value};

use super::content::{anthropic_parts, chat_message, output_message, responses_item};
use crate::api::ApiKind;
use crate::framing::sse::{event_data, SseSplitter};

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
    /// A Messages stream's content blocks (captured only).
    blocks: Vec<Value>,
}

#[derive(Default)]
struct StreamedChoice {
    text: String,
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
        }
    }

    /// A whole answer body, as the client receives it.
    pub fn unary(&mut self, body: &[u8]) {
        if let Ok(answer) = serde_json::from_slice::<Value>(body) {
            self.whole(&answer);
        }
    }

    /// A piece of a streamed answer, as the client receives it.
    pub fn stream(&mut self, piece: &[u8], end_of_stream: bool) {
        for raw in self.splitter.push_piece(piece, end_of_stream) {
            let Some(data) = event_data(&raw) else {
                continue;
            };
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
        if !self.choices.is_empty() {
            let messages = self.choices.iter().enumerate().map(|(i, c)| {
                let mut parts = Vec::new();
                if !c.text.is_empty() {
                    parts.push(json!({"type": "text", "content": c.text}));
                }
                parts.extend(c.tool_calls.iter().cloned());
                output_message(parts, self.reason(i))
            });
            return Some(Value::Array(messages.collect()));
        }
        if !self.blocks.is_empty() {
            let parts = anthropic_parts(&Value::Array(self.blocks.clone()));
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
        if self.finish_reasons.len() <= i {
            self.finish_reasons.resize(i + 1, None);
        }
        self.finish_reasons[i] = Some(reason.to_string());
    }

    /// A whole answer object: a chat completion, a completion, a message or a response.
    fn whole(&mut self, answer: &Value) {
        match self.api {
            ApiKind::ChatCompletions | ApiKind::Completions => {
                let choices = answer.get("choices").and_then(Value::as_array);
                let mut messages = Vec::new();
                for (i, choice) in choices.into_iter().flatten().enumerate() {
                    let i = index(choice).unwrap_or(i);
                    self.set_reason(i, choice.get("finish_reason"));
                    if self.capture {
                        let parts = match choice.get("message") {
                            Some(m) => chat_message(m)["parts"].clone(),
                            None => {
                                json!([{"type": "text", "content": choice.get("text").cloned().unwrap_or(Value::Null)}])
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
    }

    /// One event of a streamed answer.
    fn event(&mut self, event: &Value) {
        match self.api {
            ApiKind::ChatCompletions | ApiKind::Completions => {
                let choices = event.get("choices").and_then(Value::as_array);
                for (i, choice) in choices.into_iter().flatten().enumerate() {
                    let i = index(choice).unwrap_or(i);
                    self.set_reason(i, choice.get("finish_reason"));
                    if self.capture {
                        self.chat_delta(i, choice);
                    }
                }
            }
            ApiKind::Messages => match event.get("type").and_then(Value::as_str) {
                Some("message_delta") => self.set_reason(0, event.pointer("/delta/stop_reason")),
                Some("content_block_start") if self.capture => {
                    if let Some(block) = event.get("content_block") {
                        self.blocks.push(block.clone());
                    }
                }
                Some("content_block_delta") if self.capture => self.block_delta(event),
                _ => {}
            },
            // The event that ends a Responses stream carries the whole response.
            ApiKind::Responses => {
                if let Some(response) = event.get("response").filter(|_| {
                    matches!(
                        event.get("type").and_then(Value::as_str),
                        Some("response.completed" | "response.incomplete" | "response.failed")
                    )
                }) {
                    self.whole(response);
                }
            }
            _ => {}
        }
    }

    fn chat_delta(&mut self, i: usize, choice: &Value) {
        if self.choices.len() <= i {
            self.choices.resize_with(i + 1, StreamedChoice::default);
        }
        let c = &mut self.choices[i];
        let delta = choice.get("delta");
        let text = delta
            .and_then(|d| d.get("content"))
            .or_else(|| choice.get("text"));
        if let Some(t) = text.and_then(Value::as_str) {
            c.text.push_str(t);
        }
        let calls = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            let n = index(call).unwrap_or(c.tool_calls.len());
            if c.tool_calls.len() <= n {
                c.tool_calls.resize(
                    n + 1,
                    json!({"type": "tool_call", "id": null, "name": null, "arguments": ""}),
                );
            }
            let part = &mut c.tool_calls[n];
            if let Some(id) = call.get("id").filter(|v| v.is_string()) {
                part["id"] = id.clone();
            }
            if let Some(name) = call.pointer("/function/name").filter(|v| v.is_string()) {
                part["name"] = name.clone();
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                let so_far = part["arguments"].as_str().unwrap_or("").to_string();
                part["arguments"] = Value::String(so_far + args);
            }
        }
    }

    fn block_delta(&mut self, event: &Value) {
        let Some(block) = index(event).and_then(|i| self.blocks.get_mut(i)) else {
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
        let so_far = match &block[field] {
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        block[field] = Value::String(so_far + piece);
    }
}

fn index(v: &Value) -> Option<usize> {
    v.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        // A provider's index is not trusted to size memory.
        .filter(|&i| i < 128)
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
    fn a_provider_index_does_not_size_memory() {
        let mut r = AnswerReader::new(ApiKind::ChatCompletions, true);
        r.stream(&sse(&[r#"{"choices":[{"index":4000000000,"delta":{"content":"x"},"finish_reason":"stop"}]}"#]), true);
        assert!(r.choices.len() <= 1 && r.finish_reasons.len() <= 1);
    }
}
