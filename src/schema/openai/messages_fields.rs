//! OpenAI chat fields as Anthropic Messages fields, shared by the unary answer
//! (`messages_response`) and the stream (`messages_stream`); the rules are in
//! `messages_response`'s module documentation.

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's message id for an OpenAI completion id.
pub fn message_id(openai_id: Option<&str>) -> String {
    match openai_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("msg_{}", id.trim_start_matches("chatcmpl-")),
        None => format!("msg_{}", uuid::Uuid::new_v4().simple()),
    }
}
