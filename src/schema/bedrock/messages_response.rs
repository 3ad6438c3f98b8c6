//! Converse answers for Anthropic Messages clients: the unary answer as an Anthropic
//! message, the stream through [`MessagesStream`], and Bedrock errors as Anthropic
//! errors.
//!
//! - Content: `text` → `text`, `toolUse` → `tool_use` (id, name, input),
//!   `reasoningContent` → `thinking` (with its signature) or `redacted_thinking`; other
//!   blocks have no Messages equivalent in an answer and are left out.
//! - `stopReason`: end_turn, max_tokens, stop_sequence, tool_use and
//!   model_context_window_exceeded keep their names; guardrail_intervened and
//!   content_filtered → `refusal`; anything else → end_turn. `stop_sequence` is the one
//!   Bedrock reports in `additionalModelResponseFields` (asked for by the request), else
//!   null.
//! - `usage`: Converse's `inputTokens` excludes cache reads and writes, as Anthropic's
//!   `input_tokens` does, so the counts map one to one (`cacheWriteInputTokens` →
//!   `cache_creation_input_tokens`). Metering counts input with cache, as OpenAI does.
//! - `id` is generated (`msg_…`); `model` is the one the client sent.

use crate::schema::UnreadableAnswer;
use serde_json::{json, Value};

use crate::api::error::anthropic_error_body;
use crate::api::ClientRequest;
use crate::schema::{ResponseHead, ResponseTranslator};
use crate::usage::Usage;

use super::converse_types::{ContentBlock, ConverseOutput, TokenUsage};
use super::errors;
use super::messages_fields::{matched_stop_sequence, message_id, stop_reason};
use super::messages_stream::MessagesStream;
use crate::schema::anthropic::messages::usage_json;

fn content_blocks(block: ContentBlock) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(text) = block.text {
        out.push(json!({"type": "text", "text": text}));
    }
    if let Some(tool) = block.tool_use {
        let input = match tool.input {
            Value::Null => json!({}),
            input => input,
        };
        out.push(
            json!({"type": "tool_use", "id": tool.tool_use_id, "name": tool.name, "input": input}),
        );
    }
    if let Some(reasoning) = block.reasoning_content {
        if let Some(r) = reasoning.reasoning_text {
            out.push(json!({"type": "thinking", "thinking": r.text, "signature": r.signature.unwrap_or_default()}));
        }
        if let Some(data) = reasoning.redacted_content {
            out.push(json!({"type": "redacted_thinking", "data": data}));
        }
    }
    out
}

/// The Anthropic message for a Converse answer, and its usage.
fn message_of(output: ConverseOutput, model: &str) -> (Value, TokenUsage) {
    let usage = output.usage.unwrap_or_default();
    let content: Vec<Value> = output
        .output
        .message
        .content
        .into_iter()
        .flat_map(content_blocks)
        .collect();
    let message = json!({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(output.stop_reason.as_deref().unwrap_or("")),
        "stop_sequence": matched_stop_sequence(output.additional_model_response_fields.as_ref()),
        "usage": usage_json(&usage.to_usage()),
    });
    (message, usage)
}

/// Translates a Converse or ConverseStream answer for a Messages client.
pub struct MessagesResponse {
    model: String,
    stream: MessagesStream,
    /// The unary answer's usage (a stream keeps its own).
    unary: Option<TokenUsage>,
}

impl MessagesResponse {
    pub fn new(request: &ClientRequest) -> Self {
        MessagesResponse {
            model: request.model.clone(),
            stream: MessagesStream::new(&request.model),
            unary: None,
        }
    }
}

impl ResponseTranslator for MessagesResponse {
    fn stream_content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        let v: Value = serde_json::from_slice(body).ok()?;
        // Already Anthropic-shaped (or an OpenAI error from Envoy's side): generic path.
        if v.get("type").and_then(Value::as_str) == Some("error") || v.get("error").is_some() {
            return None;
        }
        let message = errors::aws_message(&v)?;
        Some(anthropic_error_body(head.status, message))
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let output: ConverseOutput = serde_json::from_slice(body)
            .map_err(|e| UnreadableAnswer::new("a Converse answer", e))?;
        let (message, usage) = message_of(output, &self.model);
        self.unary = Some(usage);
        Ok(Some(message.to_string().into_bytes()))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        Some(self.stream.push(chunk, end_of_stream))
    }

    fn usage(&self) -> Usage {
        match &self.unary {
            Some(u) => u.to_usage(),
            None => self.stream.usage(),
        }
    }

    fn response_model(&self) -> Option<&str> {
        // Bedrock does not name the model that answered.
        None
    }

    fn saw_output(&self) -> bool {
        self.unary.is_some() || self.stream.saw_output()
    }

    fn stream_failed(&self) -> bool {
        self.stream.failed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use crate::schema::fixtures::load;
    use bytes::Bytes;

    fn translator() -> MessagesResponse {
        let r = ClientRequest::parse(
            ApiKind::Messages,
            Bytes::from_static(br#"{"model":"claude","max_tokens":5,"messages":[]}"#),
        )
        .unwrap();
        MessagesResponse::new(&r)
    }

    fn unary(body: &Value) -> (Value, MessagesResponse) {
        let mut t = translator();
        let out = t.unary(body.to_string().as_bytes()).unwrap().unwrap();
        (serde_json::from_slice(&out).unwrap(), t)
    }

    #[test]
    fn recorded_tool_use_answer() {
        let recorded = load("bedrock/converse-tool-use.json");
        let body = &recorded["response"]["body"];
        let (m, t) = unary(body);
        let blocks = &body["output"]["message"]["content"];
        let tool = &blocks[1]["toolUse"];
        assert!(m["id"].as_str().unwrap().starts_with("msg_"));
        let expected = json!({
            "id": m["id"], "type": "message", "role": "assistant", "model": "claude",
            "content": [
                {"type": "text", "text": blocks[0]["text"]},
                {"type": "tool_use", "id": tool["toolUseId"], "name": tool["name"], "input": tool["input"]}],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": body["usage"]["inputTokens"],
                      "output_tokens": body["usage"]["outputTokens"],
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
        });
        assert_eq!(m, expected);
        assert!(t.saw_output() && t.rewrites_body());
        assert_eq!(
            t.usage().total,
            body["usage"]["totalTokens"].as_u64().unwrap()
        );
    }

    #[test]
    fn recorded_cache_usage_answer() {
        let recorded = load("bedrock/converse-cache-usage.json");
        let body = &recorded["response"]["body"];
        let (m, t) = unary(body);
        let n = |k: &str| body["usage"][k].as_u64().unwrap();
        assert_eq!(
            m["usage"],
            json!({"input_tokens": n("inputTokens"), "output_tokens": n("outputTokens"),
                   "cache_read_input_tokens": n("cacheReadInputTokens"),
                   "cache_creation_input_tokens": n("cacheWriteInputTokens")})
        );
        assert_eq!(m["stop_reason"], "end_turn");
        assert_eq!(
            m["content"][0]["text"],
            body["output"]["message"]["content"][0]["text"]
        );
        // Metered as OpenAI counts: cached input is part of the input.
        let u = t.usage();
        assert_eq!(
            u.input,
            n("inputTokens") + n("cacheReadInputTokens") + n("cacheWriteInputTokens")
        );
        assert_eq!(u.cached_input, n("cacheReadInputTokens"));
        assert_eq!(u.output, n("outputTokens"));
    }

    #[test]
    fn reasoning_refusal_and_stop_sequence() {
        let (m, _) = unary(&json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "think", "signature": "sig"}}},
                {"reasoningContent": {"redactedContent": "UkVE"}},
                {"text": "answer"}]}},
            "stopReason": "stop_sequence",
            "additionalModelResponseFields": {"stop_sequence": "END"},
            "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
        }));
        assert_eq!(
            m["content"],
            json!([{"type": "thinking", "thinking": "think", "signature": "sig"},
                   {"type": "redacted_thinking", "data": "UkVE"},
                   {"type": "text", "text": "answer"}])
        );
        assert_eq!(m["stop_reason"], "stop_sequence");
        assert_eq!(m["stop_sequence"], "END");
        for (converse, anthropic) in [
            ("end_turn", "end_turn"),
            ("max_tokens", "max_tokens"),
            ("tool_use", "tool_use"),
            ("guardrail_intervened", "refusal"),
            ("content_filtered", "refusal"),
            (
                "model_context_window_exceeded",
                "model_context_window_exceeded",
            ),
            ("something_new", "end_turn"),
        ] {
            assert_eq!(stop_reason(converse), anthropic);
        }
    }

    #[test]
    fn bedrock_errors_become_anthropic_errors() {
        let recorded = load("bedrock/converse-error-400-invalid-model.json");
        let head = ResponseHead {
            status: 400,
            content_type: "application/json".into(),
            aws_error_type: Some("ValidationException".into()),
        };
        let body = recorded["response"]["body"].to_string();
        let e: Value =
            serde_json::from_slice(&translator().error(&head, body.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "invalid_request_error",
                   "message": "The provided model identifier is invalid."}})
        );
        let head = ResponseHead {
            status: 429,
            ..head
        };
        let e: Value = serde_json::from_slice(
            &translator()
                .error(&head, br#"{"Message":"Too many requests"}"#)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(e["error"]["type"], "rate_limit_error");
        // Anthropic-shaped errors and non-JSON bodies take the generic path.
        let anthropic = br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#;
        assert!(translator().error(&head, anthropic).is_none());
        assert!(translator()
            .error(&head, b"upstream connect error")
            .is_none());
    }
}
