//! Prompt and completion content in the OpenTelemetry GenAI shape
//! (`gen_ai.input.messages`, `gen_ai.system_instructions`, `gen_ai.output.messages`: a
//! role and a list of typed parts), read from what the client sent and what it got, in
//! its own API's shape. Recorded only when
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`, the variable OpenTelemetry's
//! GenAI instrumentations use: content is personal data, so it is off by default. Binary
//! parts (images, audio, files) are named by their type only, never copied.

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::api::ApiKind;

pub const CAPTURE_VARIABLE: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

static CAPTURE: OnceLock<bool> = OnceLock::new();

/// Whether content is recorded on spans; read once.
pub fn capture_enabled() -> bool {
    *CAPTURE
        .get_or_init(|| std::env::var(CAPTURE_VARIABLE).is_ok_and(|v| capture_value_enables(&v)))
}

/// `true`, or the newer GenAI utilities' `SPAN_ONLY` / `SPAN_AND_EVENT` (content on the
/// span; this gateway records no separate events). Anything else leaves it off.
fn capture_value_enables(value: &str) -> bool {
    ["true", "span_only", "span_and_event"]
        .iter()
        .any(|on| value.trim().eq_ignore_ascii_case(on))
}

/// Most bytes of text one content attribute keeps; longer text is cut, marked with
/// [`TRUNCATED`], and the JSON stays whole. Streamed output stops growing there too.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
pub const TRUNCATED: &str = "…[truncated]";

/// Cuts the text of `messages` (parts' `content`, `arguments` and `response`) so that all
/// of it fits in [`MAX_CONTENT_BYTES`]; roles and types stay as they are.
pub fn fit(messages: &mut Value) {
    let mut budget = MAX_CONTENT_BYTES;
    fit_within(messages, &mut budget, false);
}

fn fit_within(v: &mut Value, budget: &mut usize, text: bool) {
    match v {
        Value::String(s) if text => {
            if s.len() > *budget {
                let mut end = *budget;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push_str(TRUNCATED);
                *budget = 0;
            } else {
                *budget -= s.len();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| fit_within(i, budget, text)),
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let text = match key.as_str() {
                    "content" | "arguments" | "response" => true,
                    "type" | "role" | "id" | "name" | "finish_reason" => false,
                    _ => text,
                };
                fit_within(value, budget, text);
            }
        }
        _ => {}
    }
}

/// What the client asked, as span attributes' values: the system instructions (when
/// its API carries them apart) and the input messages. None for APIs without messages.
pub struct Prompt {
    pub system_instructions: Option<Value>,
    pub messages: Value,
}

/// Reads the prompt of a request body in `api`'s shape.
pub fn prompt(api: ApiKind, body: &[u8]) -> Option<Prompt> {
    let mut prompt = read_prompt(api, body)?;
    fit(&mut prompt.messages);
    if let Some(system) = prompt.system_instructions.as_mut() {
        fit(system);
    }
    Some(prompt)
}

fn read_prompt(api: ApiKind, body: &[u8]) -> Option<Prompt> {
    let request: Value = serde_json::from_slice(body).ok()?;
    match api {
        ApiKind::ChatCompletions => Some(Prompt {
            system_instructions: None,
            messages: chat_messages(request.get("messages")?),
        }),
        ApiKind::Completions => Some(Prompt {
            system_instructions: None,
            messages: json!([message("user", text_parts(request.get("prompt")?))]),
        }),
        ApiKind::Messages => Some(Prompt {
            system_instructions: request.get("system").map(anthropic_parts).map(Value::Array),
            messages: anthropic_messages(request.get("messages")?),
        }),
        ApiKind::Responses => Some(Prompt {
            system_instructions: request
                .get("instructions")
                .map(|i| Value::Array(text_parts(i))),
            messages: responses_input(request.get("input")?),
        }),
        _ => None,
    }
}

fn message(role: &str, parts: Vec<Value>) -> Value {
    json!({"role": role, "parts": parts})
}

fn text(content: &str) -> Value {
    json!({"type": "text", "content": content})
}

/// A part kept by its type only: its data is not content the trace should hold.
fn named(kind: &str) -> Value {
    json!({"type": kind})
}

/// A string, or a list of strings or text parts.
fn text_parts(value: &Value) -> Vec<Value> {
    match value {
        Value::String(s) => vec![text(s)],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => text(s),
                other => match other.get("text").and_then(Value::as_str) {
                    Some(t) => text(t),
                    None => named(
                        other
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown"),
                    ),
                },
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// OpenAI chat messages: content as a string or parts, tool calls, tool results.
pub fn chat_messages(messages: &Value) -> Value {
    let Some(list) = messages.as_array() else {
        return json!([]);
    };
    Value::Array(list.iter().map(chat_message).collect())
}

pub fn chat_message(m: &Value) -> Value {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    let mut parts = Vec::new();
    if role == "tool" {
        parts.push(json!({
            "type": "tool_call_response",
            "id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
            "response": tool_response(m.get("content"), text_parts),
        }));
    } else if let Some(content) = m.get("content") {
        parts.extend(text_parts(content));
    }
    for (field, kind) in [("reasoning_content", "reasoning"), ("refusal", "refusal")] {
        if let Some(t) = m.get(field).and_then(Value::as_str) {
            parts.push(json!({"type": kind, "content": t}));
        }
    }
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        parts.push(json!({
            "type": "tool_call",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "arguments": call.pointer("/function/arguments").cloned().unwrap_or(Value::Null),
        }));
    }
    message(role, parts)
}

/// A tool's result: text as it is; a list of blocks as parts, so that an image or a
/// file in it is named by its type, not copied.
fn tool_response(value: Option<&Value>, parts: fn(&Value) -> Vec<Value>) -> Value {
    match value {
        Some(list @ Value::Array(_)) => Value::Array(parts(list)),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// Anthropic content: a string or blocks (text, thinking, tool use and results).
pub fn anthropic_parts(content: &Value) -> Vec<Value> {
    let Some(blocks) = content.as_array() else {
        return text_parts(content);
    };
    blocks
        .iter()
        .map(|block| {
            let kind = block.get("type").and_then(Value::as_str).unwrap_or("unknown");
            match kind {
                "text" => text(block.get("text").and_then(Value::as_str).unwrap_or("")),
                "thinking" => json!({"type": "reasoning", "content": block.get("thinking").cloned().unwrap_or(Value::Null)}),
                "tool_use" => json!({
                    "type": "tool_call",
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").cloned().unwrap_or(Value::Null),
                }),
                "tool_result" => json!({
                    "type": "tool_call_response",
                    "id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "response": tool_response(block.get("content"), anthropic_parts),
                }),
                other => named(other),
            }
        })
        .collect()
}

fn anthropic_messages(messages: &Value) -> Value {
    let Some(list) = messages.as_array() else {
        return json!([]);
    };
    Value::Array(
        list.iter()
            .map(|m| {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                message(
                    role,
                    m.get("content").map(anthropic_parts).unwrap_or_default(),
                )
            })
            .collect(),
    )
}

/// A Responses API `input`: a string, or items (messages, function calls and outputs).
fn responses_input(input: &Value) -> Value {
    match input {
        Value::Array(items) => Value::Array(items.iter().map(responses_item).collect()),
        other => json!([message("user", text_parts(other))]),
    }
}

/// One Responses API item, input or output.
pub fn responses_item(item: &Value) -> Value {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "function_call" => message(
            "assistant",
            vec![json!({
                "type": "tool_call",
                "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                "name": item.get("name").cloned().unwrap_or(Value::Null),
                "arguments": item.get("arguments").cloned().unwrap_or(Value::Null),
            })],
        ),
        "function_call_output" => message(
            "tool",
            vec![json!({
                "type": "tool_call_response",
                "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                "response": tool_response(item.get("output"), text_parts),
            })],
        ),
        "reasoning" => {
            let summary = item.get("summary").map(text_parts).unwrap_or_default();
            let content = summary
                .iter()
                .filter_map(|p| p.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n");
            message(
                "assistant",
                vec![json!({"type": "reasoning", "content": content})],
            )
        }
        "message" => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
            message(
                role,
                item.get("content").map(text_parts).unwrap_or_default(),
            )
        }
        other => message("assistant", vec![named(other)]),
    }
}

/// An output message with its finish reason, as `gen_ai.output.messages` lists them.
/// The conventions require a reason: an answer that gave none did not end as its API
/// ends one, which they call `error`.
pub fn output_message(parts: Vec<Value>, finish_reason: Option<&str>) -> Value {
    json!({"role": "assistant", "parts": parts, "finish_reason": finish_reason.unwrap_or("error")})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_prompt_keeps_text_tool_calls_and_results_but_no_image_data() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"look","arguments":"{\"x\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"a cat"}]}"#;
        let p = prompt(ApiKind::ChatCompletions, body).unwrap();
        assert!(p.system_instructions.is_none());
        assert_eq!(
            p.messages,
            json!([
                {"role":"system","parts":[{"type":"text","content":"be brief"}]},
                {"role":"user","parts":[{"type":"text","content":"what is this?"},{"type":"image_url"}]},
                {"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"look","arguments":"{\"x\":1}"}]},
                {"role":"tool","parts":[{"type":"tool_call_response","id":"c1","response":"a cat"}]}
            ])
        );
        assert!(!p.messages.to_string().contains("AAAA"));
    }

    #[test]
    fn a_messages_prompt_has_its_system_apart() {
        let body = br#"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"be brief"}],
            "messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":1}}]}]}"#;
        let p = prompt(ApiKind::Messages, body).unwrap();
        assert_eq!(
            p.system_instructions,
            Some(json!([{"type":"text","content":"be brief"}]))
        );
        assert_eq!(
            p.messages[1]["parts"][0],
            json!({"type":"tool_call","id":"t","name":"f","arguments":{"a":1}})
        );
    }

    #[test]
    fn a_responses_prompt_reads_instructions_and_items() {
        let body = br#"{"model":"m","instructions":"be brief","input":[
            {"role":"user","content":[{"type":"input_text","text":"hi"}]},
            {"type":"function_call_output","call_id":"c","output":"42"}]}"#;
        let p = prompt(ApiKind::Responses, body).unwrap();
        assert_eq!(
            p.system_instructions,
            Some(json!([{"type":"text","content":"be brief"}]))
        );
        assert_eq!(
            p.messages[0],
            json!({"role":"user","parts":[{"type":"text","content":"hi"}]})
        );
        assert_eq!(p.messages[1]["parts"][0]["type"], "tool_call_response");
        let simple = prompt(ApiKind::Responses, br#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(
            simple.messages,
            json!([{"role":"user","parts":[{"type":"text","content":"hi"}]}])
        );
    }

    #[test]
    fn images_in_tool_results_are_named_not_copied() {
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"see"},{"type":"image","source":{"type":"base64","data":"QUJDRA=="}}]}]}]}"#;
        let p = prompt(ApiKind::Messages, body).unwrap();
        assert_eq!(
            p.messages[0]["parts"][0]["response"],
            json!([{"type":"text","content":"see"},{"type":"image"}])
        );
        assert!(!p.messages.to_string().contains("QUJDRA"));
    }

    #[test]
    fn long_text_is_cut_and_the_json_stays_whole() {
        let long = "é".repeat(MAX_CONTENT_BYTES);
        let body = serde_json::to_vec(&json!({"model":"m","messages":[
            {"role":"user","content": long},{"role":"user","content":"later"}]}))
        .unwrap();
        let p = prompt(ApiKind::ChatCompletions, &body).unwrap();
        let first = p.messages[0]["parts"][0]["content"].as_str().unwrap();
        assert!(first.ends_with(TRUNCATED));
        assert!(first.len() <= MAX_CONTENT_BYTES + TRUNCATED.len());
        assert_eq!(p.messages[1]["parts"][0]["content"], "…[truncated]");
        assert!(serde_json::from_str::<Value>(&p.messages.to_string()).is_ok());
    }

    #[test]
    fn the_capture_variable_takes_the_conventions_values() {
        for on in ["true", "TRUE", " span_only", "SPAN_AND_EVENT"] {
            assert!(capture_value_enables(on), "{on}");
        }
        for off in ["", "false", "EVENT_ONLY", "NO_CONTENT", "1"] {
            assert!(!capture_value_enables(off), "{off}");
        }
    }

    #[test]
    fn apis_without_messages_have_no_prompt() {
        assert!(prompt(ApiKind::Embeddings, br#"{"model":"m","input":"hi"}"#).is_none());
        assert!(prompt(ApiKind::ChatCompletions, b"not json").is_none());
    }
}
