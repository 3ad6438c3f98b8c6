//! The Responses API's response object, built from a chat completion: output items
//! (reasoning, message, function calls), usage, and the request's settings echoed back
//! as OpenAI echoes them.

use serde_json::{json, Map, Value};

use super::signature::Signature;
use crate::schema::completion::now_unix;
use crate::usage::Usage;

/// A new id with the Responses API's prefix for its kind (`resp`, `msg`, `rs`, `fc`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// One output item.
#[derive(Debug, Clone)]
pub enum Item {
    Reasoning {
        id: String,
        summary: String,
        signature: Option<Signature>,
    },
    Message {
        id: String,
        text: String,
        refusal: Option<String>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    pub fn id(&self) -> &str {
        match self {
            Item::Reasoning { id, .. }
            | Item::Message { id, .. }
            | Item::FunctionCall { id, .. } => id,
        }
    }

    /// The item as the API shows it; `done` false is its state when a stream opens it.
    pub fn to_json(&self, done: bool) -> Value {
        let status = if done { "completed" } else { "in_progress" };
        match self {
            Item::Reasoning {
                id,
                summary,
                signature,
            } => {
                let mut item = json!({"type": "reasoning", "id": id, "summary": []});
                if done && !summary.is_empty() {
                    item["summary"] = json!([{"type": "summary_text", "text": summary}]);
                }
                if let Some(sig) = signature {
                    item["encrypted_content"] = sig.encode().into();
                }
                item
            }
            Item::Message { id, text, refusal } => {
                let content = match (done, refusal) {
                    (false, _) => json!([]),
                    (true, Some(r)) if text.is_empty() => {
                        json!([{"type": "refusal", "refusal": r}])
                    }
                    (true, _) => json!([Self::text_part(text)]),
                };
                json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
            }
            Item::FunctionCall {
                id,
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call", "id": id, "call_id": call_id, "name": name,
                "arguments": if done { arguments.as_str() } else { "" }, "status": status,
            }),
        }
    }

    pub fn text_part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }
}

/// The output items of a chat completion's message.
pub fn items_from_message(message: &Value) -> Vec<Item> {
    let mut items = Vec::new();
    let blocks = message
        .get("thinking_blocks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Signature::from_thinking_block)
        .collect::<Vec<_>>();
    if blocks.is_empty() {
        if let Some(text) = message.get("reasoning_content").and_then(Value::as_str) {
            if !text.is_empty() {
                items.push(Item::Reasoning {
                    id: new_id("rs"),
                    summary: text.to_string(),
                    signature: None,
                });
            }
        }
    }
    for sig in blocks {
        let summary = match &sig {
            Signature::Thinking { text, .. } => text.clone(),
            _ => String::new(),
        };
        items.push(Item::Reasoning {
            id: new_id("rs"),
            summary,
            signature: Some(sig),
        });
    }
    let text = message.get("content").and_then(Value::as_str).unwrap_or("");
    let refusal = message
        .get("refusal")
        .and_then(Value::as_str)
        .map(str::to_string);
    if !text.is_empty() || refusal.is_some() {
        items.push(Item::Message {
            id: new_id("msg"),
            text: text.to_string(),
            refusal,
        });
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(sig) = thought_signature(call) {
            items.push(gemini_reasoning(sig));
        }
        let s = |p: &str| {
            call.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        items.push(Item::FunctionCall {
            id: new_id("fc"),
            call_id: s("/id"),
            name: s("/function/name"),
            arguments: s("/function/arguments"),
        });
    }
    items
}

/// Gemini's signature on a chat tool call (or its first stream delta).
pub fn thought_signature(call: &Value) -> Option<String> {
    call.pointer("/extra_content/google/thought_signature")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The reasoning item that carries a Gemini function call's signature.
pub fn gemini_reasoning(signature: String) -> Item {
    Item::Reasoning {
        id: new_id("rs"),
        summary: String::new(),
        signature: Some(Signature::Gemini(signature)),
    }
}

/// The Responses API's `usage` object.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached_input},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.total,
    })
}

/// How a response ended, from the chat finish reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    /// `incomplete`, with the reason the API names.
    Incomplete(&'static str),
}

impl Ending {
    pub fn from_finish_reason(reason: Option<&str>) -> Self {
        match reason {
            Some("length") => Ending::Incomplete("max_output_tokens"),
            Some("content_filter") => Ending::Incomplete("content_filter"),
            _ => Ending::Completed,
        }
    }
}

/// One response: its identity and the request settings it echoes.
#[derive(Debug)]
pub struct ResponseHeader {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    echo: Map<String, Value>,
}

/// The request fields a response object repeats.
const ECHOED: [&str; 11] = [
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "user",
];

/// What OpenAI echoes for an echoed field the request left out.
fn echo_default(name: &str) -> Value {
    match name {
        "metadata" => json!({}),
        "parallel_tool_calls" => true.into(),
        "reasoning" => json!({"effort": null, "summary": null}),
        "temperature" | "top_p" => 1.0.into(),
        "text" => json!({"format": {"type": "text"}}),
        "tool_choice" => "auto".into(),
        "tools" => json!([]),
        _ => Value::Null,
    }
}

impl ResponseHeader {
    /// For a response to `request` (a Responses request body).
    pub fn new(request: &[u8], model: &str) -> Self {
        let sent: Map<String, Value> = serde_json::from_slice(request).unwrap_or_default();
        let echo = ECHOED
            .iter()
            .map(|name| {
                let value = sent.get(*name).filter(|v| !v.is_null()).cloned();
                (
                    name.to_string(),
                    value.unwrap_or_else(|| echo_default(name)),
                )
            })
            .collect();
        ResponseHeader {
            id: new_id("resp"),
            created_at: now_unix(),
            model: model.to_string(),
            echo,
        }
    }

    /// The response object. `ending` None is a response still in progress.
    pub fn response(&self, items: &[Item], usage: Option<&Usage>, ending: Option<Ending>) -> Value {
        let (status, incomplete) = match ending {
            None => ("in_progress", Value::Null),
            Some(Ending::Completed) => ("completed", Value::Null),
            Some(Ending::Incomplete(reason)) => ("incomplete", json!({"reason": reason})),
        };
        let mut response = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": items.iter().map(|i| i.to_json(true)).collect::<Vec<_>>(),
            "previous_response_id": null,
            "store": false,
            "truncation": "disabled",
            "usage": usage.map(usage_json),
        });
        for (name, value) in &self.echo {
            response[name.as_str()] = value.clone();
        }
        response
    }
}
