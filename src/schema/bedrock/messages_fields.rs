//! Converse fields as Anthropic Messages fields, shared by the unary answer
//! (`messages_response`) and the stream (`messages_stream`); the rules are in
//! `messages_response`'s module documentation.

use serde_json::Value;

/// A Messages message id for an answer Bedrock gives none.
pub fn message_id() -> String {
    format!("msg_bdrk_{}", uuid::Uuid::new_v4().simple())
}

/// Converse `stopReason` as Anthropic's `stop_reason`.
pub fn stop_reason(converse: &str) -> &'static str {
    match converse {
        "max_tokens" => "max_tokens",
        "stop_sequence" => "stop_sequence",
        "tool_use" => "tool_use",
        "model_context_window_exceeded" => "model_context_window_exceeded",
        "guardrail_intervened" | "content_filtered" => "refusal",
        _ => "end_turn",
    }
}

/// The matched stop sequence from `additionalModelResponseFields`, or null.
pub fn matched_stop_sequence(fields: Option<&Value>) -> Value {
    fields
        .and_then(|f| f.get("stop_sequence"))
        .filter(|s| s.is_string())
        .cloned()
        .unwrap_or(Value::Null)
}
