//! OpenAI chat completions answers for Anthropic Messages clients: the unary
//! `chat.completion` as an Anthropic message, the chunk stream through
//! [`MessagesStream`], and OpenAI errors as Anthropic errors.
//!
//! - Content: `reasoning_content` (OpenAI-compatible servers that send it) → a `thinking`
//!   block (with no signature: none exists), the text → a `text` block, `refusal` → a
//!   `text` block, `tool_calls` → `tool_use` blocks (`arguments` parsed as the `input`).
//! - `finish_reason`: `stop` → `end_turn` (OpenAI does not say whether a stop sequence
//!   matched, so `stop_sequence` stays null), `length` → `max_tokens`, `tool_calls` and
//!   `function_call` → `tool_use`, `content_filter` (or a refusal) → `refusal`.
//! - `usage`: OpenAI's `prompt_tokens` includes cached input, Anthropic's
//!   `input_tokens` does not: `input_tokens` = prompt − cached − cache-written,
//!   `cache_read_input_tokens` = cached, `cache_creation_input_tokens` = cache-written,
//!   `output_tokens` = completion.
//! - `id`: OpenAI's, under Anthropic's `msg_` prefix; `model`: the provider's, else the
//!   one the request named.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::anthropic_error_body;
use crate::schema::anthropic::messages::usage_json;
use crate::schema::openai::messages_fields::{message_id, stop_reason};
use crate::schema::openai::messages_stream::MessagesStream;
use crate::schema::{ResponseHead, ResponseTranslator, UnreadableAnswer};
use crate::usage::Usage;

#[derive(Deserialize)]
pub(super) struct ChatCompletion {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct Choice {
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Message {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Deserialize)]
pub(super) struct ToolCall {
    pub id: String,
    pub function: Function,
}

#[derive(Deserialize)]
pub(super) struct Function {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// A tool call's `arguments` (a JSON text) as a `tool_use` input object.
pub(super) fn tool_input(arguments: &str) -> Result<Value, serde_json::Error> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(arguments)
}

/// Translates one attempt's answer for a Messages client.
pub struct MessagesFromChat {
    requested_model: String,
    stream: Option<MessagesStream>,
    usage: Usage,
    model: Option<String>,
    answered: bool,
}

impl MessagesFromChat {
    pub fn new(requested_model: &str) -> Self {
        MessagesFromChat {
            requested_model: requested_model.to_string(),
            // Made by the first streamed piece: a unary answer needs none.
            stream: None,
            usage: Usage::default(),
            model: None,
            answered: false,
        }
    }

    fn message(&mut self, completion: ChatCompletion) -> Result<Value, UnreadableAnswer> {
        let unreadable = |why: &str| UnreadableAnswer::new("an OpenAI chat completion", why);
        if let Some(usage) = completion.usage.as_ref().and_then(Usage::from_openai) {
            self.usage = usage;
        }
        self.model = completion.model.filter(|m| !m.is_empty());
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| unreadable("it has no choices"))?;
        let message = choice.message;
        let mut content = Vec::new();
        if let Some(thinking) = message.reasoning_content.filter(|t| !t.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
        }
        if let Some(text) = message.content.filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        let refused = message.refusal.is_some();
        if let Some(refusal) = message.refusal {
            content.push(json!({"type": "text", "text": refusal}));
        }
        for call in message.tool_calls {
            let input = tool_input(&call.function.arguments)
                .map_err(|e| unreadable(&format!("a tool call's arguments are not JSON: {e}")))?;
            content.push(json!({
                "type": "tool_use", "id": call.id, "name": call.function.name, "input": input,
            }));
        }
        self.answered = !content.is_empty();
        let stop = match choice.finish_reason.as_deref() {
            _ if refused => "refusal",
            Some(reason) => stop_reason(reason),
            None => "end_turn",
        };
        Ok(json!({
            "id": message_id(completion.id.as_deref()),
            "type": "message",
            "role": "assistant",
            "model": self.model.as_deref().unwrap_or(&self.requested_model),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": null,
            "usage": usage_json(&self.usage),
        }))
    }
}

#[derive(Deserialize)]
struct OpenAiError {
    error: OpenAiErrorBody,
}

#[derive(Deserialize)]
struct OpenAiErrorBody {
    message: String,
}

impl ResponseTranslator for MessagesFromChat {
    fn rewrites_body(&self) -> bool {
        true
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        let error: OpenAiError = serde_json::from_slice(body).ok()?;
        Some(anthropic_error_body(head.status, &error.error.message))
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let completion: ChatCompletion = serde_json::from_slice(body)
            .map_err(|e| UnreadableAnswer::new("an OpenAI chat completion", e))?;
        Ok(Some(self.message(completion)?.to_string().into_bytes()))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let stream = self
            .stream
            .get_or_insert_with(|| MessagesStream::new(&self.requested_model));
        Some(stream.push(chunk, end_of_stream))
    }

    fn usage(&self) -> Usage {
        self.stream
            .as_ref()
            .map_or(self.usage, MessagesStream::usage)
    }

    fn response_model(&self) -> Option<&str> {
        match &self.stream {
            Some(stream) => stream.model(),
            None => self.model.as_deref(),
        }
    }

    fn saw_output(&self) -> bool {
        self.stream
            .as_ref()
            .map_or(self.answered, MessagesStream::saw_output)
    }

    fn stream_failed(&self) -> bool {
        self.stream.as_ref().is_some_and(MessagesStream::failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            content_type: "application/json".into(),
            aws_error_type: None,
        }
    }

    #[test]
    fn a_completion_becomes_a_message() {
        let mut t = MessagesFromChat::new("gpt-4o");
        let body = br#"{"id":"chatcmpl-abc","object":"chat.completion","model":"gpt-4o-2024-08-06",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Checking.",
              "tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
              "finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let out: Value = serde_json::from_slice(&t.unary(body).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"id":"msg_abc","type":"message","role":"assistant","model":"gpt-4o-2024-08-06",
                "content":[{"type":"text","text":"Checking."},
                           {"type":"tool_use","id":"call_1","name":"weather","input":{"city":"Paris"}}],
                "stop_reason":"tool_use","stop_sequence":null,
                "usage":{"input_tokens":16,"output_tokens":7,"cache_read_input_tokens":4,"cache_creation_input_tokens":0}})
        );
        assert_eq!((t.usage().input, t.usage().output), (20, 7));
        assert_eq!(t.response_model(), Some("gpt-4o-2024-08-06"));
    }

    #[test]
    fn unreadable_answers_and_errors() {
        let mut t = MessagesFromChat::new("m");
        assert!(t.unary(b"").is_err());
        assert!(t.unary(br#"{"choices":[]}"#).is_err());
        let bad_args = br#"{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{"}}]}}]}"#;
        assert!(t.unary(bad_args).is_err());
        let e = t
            .error(
                &head(429),
                br#"{"error":{"message":"Rate limit reached","type":"requests"}}"#,
            )
            .unwrap();
        let e: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(
            e,
            json!({"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}})
        );
    }
}
