//! OpenAI chat completion output, written by the translating schemas: the unary
//! `chat.completion` object and the `chat.completion.chunk` SSE stream.
//!
//! The stream writer holds the invariants clients depend on, so no translator can get
//! them wrong on its own: the first chunk carries `role: "assistant"`; each tool call
//! keeps one `index` and has its `id` and name on its first delta (even with empty
//! arguments); a finish chunk comes before the usage chunk, which is sent only when the
//! client asked; the stream ends with `data: [DONE]`, or with an error event when the
//! provider failed or cut it short.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::api::error::error_body;
use crate::framing::sse::{write_event, write_json_event};
use crate::usage::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// Seconds since the epoch, for `created` when the provider reports no time.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A completion id for providers that send none.
pub fn generated_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// OpenAI's `usage` object. `prompt_tokens` includes cached input, as OpenAI counts it.
pub fn usage_json(u: &Usage) -> Value {
    let mut usage = json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.total,
    });
    let mut prompt_details = Map::new();
    prompt_details.insert("cached_tokens".into(), u.cached_input.into());
    if u.cache_creation_input > 0 {
        prompt_details.insert(
            "cache_creation_tokens".into(),
            u.cache_creation_input.into(),
        );
    }
    usage["prompt_tokens_details"] = Value::Object(prompt_details);
    usage["completion_tokens_details"] = json!({"reasoning_tokens": u.reasoning});
    usage
}

/// One tool call of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallOut {
    pub id: String,
    pub name: String,
    /// JSON text.
    pub arguments: String,
    /// Gemini's `thoughtSignature` for this call.
    pub thought_signature: Option<String>,
}

fn tool_call_json(index: Option<usize>, call: &ToolCallOut) -> Value {
    let mut v = json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    });
    if let Some(i) = index {
        v["index"] = i.into();
    }
    if let Some(sig) = &call.thought_signature {
        v["extra_content"] = json!({"google": {"thought_signature": sig}});
    }
    v
}

/// A whole answer, as `chat.completion`.
#[derive(Debug, Default)]
pub struct Completion {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub text: String,
    pub reasoning: String,
    /// `thinking_blocks` entries (with signatures) to hand back on the next turn.
    pub thinking_blocks: Vec<Value>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCallOut>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Usage,
}

impl Completion {
    pub fn to_json(&self) -> Vec<u8> {
        let mut message = json!({
            "role": "assistant",
            "content": if self.text.is_empty() && !self.tool_calls.is_empty() {
                Value::Null
            } else {
                Value::String(self.text.clone())
            },
        });
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = self.reasoning.clone().into();
        }
        if !self.thinking_blocks.is_empty() {
            message["thinking_blocks"] = Value::Array(self.thinking_blocks.clone());
        }
        if let Some(r) = &self.refusal {
            message["refusal"] = r.clone().into();
        }
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| tool_call_json(None, c))
                .collect();
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": self.finish_reason.unwrap_or(FinishReason::Stop).as_str(),
            }],
            "usage": usage_json(&self.usage),
        })
        .to_string()
        .into_bytes()
    }
}

/// Writes a `chat.completion.chunk` stream, one event at a time.
#[derive(Debug)]
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    include_usage: bool,
    role_sent: bool,
    tool_calls: usize,
    finished: bool,
    ended: bool,
    /// The stream ended with an error event.
    failed: bool,
}

/// One `chat.completion.chunk`, serialized as it is written: a chunk per piece of a
/// translated stream, so no JSON tree is built for it. Fields in name order, the order a
/// `serde_json::Value` writes them in, so the bytes are what they were.
#[derive(serde::Serialize)]
struct StreamChunk<'a> {
    choices: &'a [StreamChoice<'a>],
    created: u64,
    id: &'a str,
    model: &'a str,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(serde::Serialize)]
struct StreamChoice<'a> {
    delta: &'a Value,
    finish_reason: Option<&'static str>,
    index: u32,
    /// Always `null`: no provider's logprobs are translated.
    logprobs: (),
}

impl ChunkWriter {
    pub fn new(include_usage: bool) -> Self {
        ChunkWriter {
            id: generated_id(),
            model: String::new(),
            created: now_unix(),
            include_usage,
            role_sent: false,
            tool_calls: 0,
            finished: false,
            ended: false,
            failed: false,
        }
    }

    /// Whether the stream has ended (`[DONE]` or an error was written).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether the stream ended with an error event.
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn event(&self, out: &mut Vec<u8>, choices: &[StreamChoice<'_>], usage: Option<Value>) {
        let chunk = StreamChunk {
            choices,
            created: self.created,
            id: &self.id,
            model: &self.model,
            object: "chat.completion.chunk",
            usage,
        };
        write_json_event(out, &chunk);
    }

    fn delta(&mut self, out: &mut Vec<u8>, mut delta: Value, finish: Option<FinishReason>) {
        if self.ended {
            return;
        }
        if !self.role_sent {
            delta["role"] = "assistant".into();
            self.role_sent = true;
        }
        let choice = StreamChoice {
            delta: &delta,
            finish_reason: finish.map(FinishReason::as_str),
            index: 0,
            logprobs: (),
        };
        self.event(out, &[choice], None);
    }

    /// Announces the assistant's turn before any content (Anthropic's `message_start`).
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if !self.role_sent {
            self.delta(out, json!({"content": ""}), None);
        }
    }

    pub fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.delta(out, json!({"content": text}), None);
        }
    }

    pub fn reasoning(&mut self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.delta(out, json!({"reasoning_content": text}), None);
        }
    }

    /// A thinking block's signature (or a redacted block), to be sent back next turn.
    pub fn thinking_block(&mut self, out: &mut Vec<u8>, block: Value) {
        self.delta(out, json!({"thinking_blocks": [block]}), None);
    }

    /// Starts a tool call; returns its OpenAI index, to pass to [`Self::tool_arguments`].
    pub fn tool_call(&mut self, out: &mut Vec<u8>, call: &ToolCallOut) -> usize {
        let index = self.tool_calls;
        self.tool_calls += 1;
        self.delta(
            out,
            json!({"tool_calls": [tool_call_json(Some(index), call)]}),
            None,
        );
        index
    }

    pub fn tool_arguments(&mut self, out: &mut Vec<u8>, index: usize, fragment: &str) {
        if !fragment.is_empty() {
            self.delta(
                out,
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                None,
            );
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason) {
        if !self.finished {
            self.finished = true;
            self.delta(out, json!({}), Some(reason));
        }
    }

    /// Ends the stream: the usage chunk when asked for, then `[DONE]`. A stream the
    /// provider never finished ends with an error event instead.
    pub fn end(&mut self, out: &mut Vec<u8>, usage: &Usage) {
        if self.ended {
            return;
        }
        if !self.finished {
            self.error(out, crate::schema::STREAM_CUT_MESSAGE, "upstream_error");
            return;
        }
        if self.include_usage {
            self.event(out, &[], Some(usage_json(usage)));
        }
        write_event(out, None, b"[DONE]");
        self.ended = true;
    }

    /// Ends the stream with an OpenAI error event (what the SDKs raise as an APIError).
    pub fn error(&mut self, out: &mut Vec<u8>, message: &str, error_type: &str) {
        if self.ended {
            return;
        }
        write_event(out, None, &error_body(message, error_type, error_type));
        self.ended = true;
        self.failed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn first_chunk_has_role_and_tool_calls_keep_their_index() {
        let mut w = ChunkWriter::new(true);
        let mut out = Vec::new();
        let call = ToolCallOut {
            id: "t1".into(),
            name: "f".into(),
            arguments: String::new(),
            thought_signature: None,
        };
        let i = w.tool_call(&mut out, &call);
        w.tool_arguments(&mut out, i, "{\"a\":");
        w.tool_arguments(&mut out, i, "1}");
        w.finish(&mut out, FinishReason::ToolCalls);
        w.end(&mut out, &Usage::default());
        let ev = events(&out);
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[0]["choices"][0]["delta"]["tool_calls"][0]["id"], "t1");
        assert_eq!(ev[1]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(ev[3]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[4]["choices"], json!([]));
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn unfinished_stream_ends_with_an_error() {
        let mut w = ChunkWriter::new(false);
        let mut out = Vec::new();
        w.text(&mut out, "partial");
        w.end(&mut out, &Usage::default());
        let ev = events(&out);
        assert!(ev[1]["error"]["message"].is_string());
        assert!(!out.ends_with(b"[DONE]\n\n"));
    }
}
