//! A Responses API request as the chat completions request the translating schemas
//! already read (`chat::ChatRequest`), so each provider's mapping is written once.
//!
//! | Responses field | chat field |
//! |---|---|
//! | `instructions` | a first `system` message |
//! | `input` string | one `user` message |
//! | `input` message items (`user`, `system`, `developer`, `assistant`; `input_text`, `input_image`, `output_text`, `refusal` parts) | messages of that role (`developer` is `system`) |
//! | `function_call` items | `tool_calls` of the assistant message they follow (`call_id` is the call's id) |
//! | `function_call_output` items | `tool` messages |
//! | `reasoning` items with `encrypted_content` | `thinking_blocks` of the next assistant message (the summary text is the thinking, the content its signature; see [`super::signature`]) or, for Gemini's, the next call's `extra_content.google.thought_signature`; without one they are dropped, as `reasoning_content` is |
//! | function `tools` | function tools; any other tool type (hosted tools) 422 |
//! | `tool_choice` `auto`, `none`, `required`, `{type: function, name}` | the same choice; another type 422 |
//! | `text.format` `json_schema`, `json_object` | `response_format` (the schema's own rule then holds) |
//! | `reasoning.effort` | `reasoning_effort` (`reasoning.summary` is not needed: summaries come whenever the provider gives them) |
//! | `max_output_tokens`, `temperature`, `top_p`, `parallel_tool_calls`, `user` | `max_completion_tokens`, `temperature`, `top_p`, `parallel_tool_calls`, `user` |
//! | `previous_response_id`, `conversation`, `store: true`, `background: true`, `prompt` | 422: no translating backend stores responses |
//! | `top_logprobs` > 0, `include` `message.output_text.logprobs`, `input_file` parts, `input_image` by `file_id` | 422 |
//! | `metadata`, `safety_identifier`, `prompt_cache_key`, `service_tier`, `truncation`, `text.verbosity`, `stream_options`, other `include` values | dropped: they do not change the answer |

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::signature::{self, Signature};
use crate::api::ApiError;

/// The fields the translation reads; the rest is checked by name below.
#[derive(Debug, Deserialize)]
pub(super) struct WireRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The chat completions body for `body` (a Responses request), or why `provider`
/// cannot answer it.
pub(super) fn chat_body(body: &[u8], provider: &str) -> Result<Vec<u8>, ApiError> {
    let wire: WireRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid Responses API request: {e}")))?;
    refuse_state(&wire, provider)?;
    let mut chat = Map::new();
    chat.insert("model".into(), wire.model.clone().into());
    let mut messages = Vec::new();
    if let Some(instructions) = wire.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    match &wire.input {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => messages.extend(Conversation::from_items(items)?),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`input` must be a string or an array of input items".into(),
            ))
        }
    }
    chat.insert("messages".into(), Value::Array(messages));
    if wire.stream == Some(true) {
        chat.insert("stream".into(), true.into());
    }
    if let Some(tools) = &wire.tools {
        let tools = tools
            .iter()
            .map(|t| function_tool(t, provider))
            .collect::<Result<Vec<_>, _>>()?;
        if !tools.is_empty() {
            chat.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = &wire.tool_choice {
        chat.insert("tool_choice".into(), tool_choice(choice, provider)?);
    }
    if let Some(format) = wire.text.as_ref().and_then(|t| t.get("format")) {
        if let Some(format) = response_format(format)? {
            chat.insert("response_format".into(), format);
        }
    }
    if let Some(effort) = wire.reasoning.as_ref().and_then(|r| r.get("effort")) {
        if !effort.is_null() {
            chat.insert("reasoning_effort".into(), effort.clone());
        }
    }
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(v) = value {
            chat.insert(name.into(), v);
        }
    };
    set(
        "max_completion_tokens",
        wire.max_output_tokens.map(Value::from),
    );
    set("temperature", wire.temperature.map(Value::from));
    set("top_p", wire.top_p.map(Value::from));
    set(
        "parallel_tool_calls",
        wire.parallel_tool_calls.map(Value::from),
    );
    set("user", wire.user.clone().map(Value::from));
    serde_json::to_vec(&Value::Object(chat)).map_err(|e| ApiError::Internal(e.to_string()))
}

/// What only a backend that stores responses (or OpenAI's own features) can do.
fn refuse_state(wire: &WireRequest, provider: &str) -> Result<(), ApiError> {
    let set = |name: &str| wire.other.get(name).filter(|v| !v.is_null());
    for field in ["previous_response_id", "conversation", "prompt"] {
        if set(field).is_some() {
            return Err(ApiError::Unprocessable(format!(
                "`{field}` needs a backend that stores responses; {provider} is served statelessly by the gateway: send the whole conversation in `input`"
            )));
        }
    }
    for field in ["store", "background"] {
        if set(field) == Some(&Value::Bool(true)) {
            return Err(ApiError::Unprocessable(format!(
                "`{field}: true` needs a backend that stores responses; {provider} is served statelessly by the gateway: send `{field}: false`"
            )));
        }
    }
    if set("top_logprobs").and_then(Value::as_u64).unwrap_or(0) > 0
        || wire
            .include
            .iter()
            .flatten()
            .any(|i| i == "message.output_text.logprobs")
    {
        return Err(ApiError::Unprocessable(format!(
            "log probabilities are not supported by {provider}"
        )));
    }
    Ok(())
}

/// A Responses function tool as a chat tool; hosted tools are OpenAI's alone.
fn function_tool(tool: &Value, provider: &str) -> Result<Value, ApiError> {
    let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "function" {
        return Err(ApiError::Unprocessable(format!(
            "the hosted tool `{kind}` is not supported by {provider}; only `function` tools are"
        )));
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::BadRequest("a function tool needs a `name`".into()))?;
    let mut function = json!({"name": name});
    for field in ["description", "parameters", "strict"] {
        if let Some(v) = tool.get(field).filter(|v| !v.is_null()) {
            function[field] = v.clone();
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value, provider: &str) -> Result<Value, ApiError> {
    match choice {
        Value::String(_) => Ok(choice.clone()),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o.get("name").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::BadRequest("`tool_choice` of type function needs a `name`".into())
                })?;
                Ok(json!({"type": "function", "function": {"name": name}}))
            }
            other => Err(ApiError::Unprocessable(format!(
                "`tool_choice` of type `{}` is not supported by {provider}",
                other.unwrap_or("")
            ))),
        },
        _ => Err(ApiError::BadRequest(
            "`tool_choice` must be a string or an object".into(),
        )),
    }
}

/// `text.format` as `response_format`; None for plain text.
fn response_format(format: &Value) -> Result<Option<Value>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for field in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.into(), v.clone());
                }
            }
            Ok(Some(
                json!({"type": "json_schema", "json_schema": Value::Object(schema)}),
            ))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "`text.format.type` must be text, json_object or json_schema; got `{other}`"
        ))),
    }
}

/// Input items folded into chat messages: an assistant turn collects the output
/// messages, reasoning and function calls that follow each other.
#[derive(Default)]
struct Conversation {
    messages: Vec<Value>,
    assistant: Option<Assistant>,
    /// A reasoning item's signature waiting for the assistant turn it belongs to.
    pending: Vec<Signature>,
}

#[derive(Default)]
struct Assistant {
    text: String,
    refusal: Option<String>,
    tool_calls: Vec<Value>,
    thinking_blocks: Vec<Value>,
}

impl Conversation {
    fn from_items(items: &[Value]) -> Result<Vec<Value>, ApiError> {
        let mut c = Conversation::default();
        for item in items {
            c.item(item)?;
        }
        c.flush();
        Ok(c.messages)
    }

    fn item(&mut self, item: &Value) -> Result<(), ApiError> {
        let kind = item.get("type").and_then(Value::as_str);
        let role = item.get("role").and_then(Value::as_str);
        match (kind, role) {
            (Some("message") | None, Some("assistant")) => {
                let turn = self.assistant_turn();
                for part in content_parts(item) {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text" | "input_text" | "text") => {
                            turn.text.push_str(str_field(&part, "text"))
                        }
                        Some("refusal") => turn.refusal = Some(str_field(&part, "refusal").into()),
                        other => {
                            return Err(ApiError::BadRequest(format!(
                                "an assistant message cannot hold a `{}` part",
                                other.unwrap_or("")
                            )))
                        }
                    }
                }
            }
            (Some("message") | None, Some(role @ ("user" | "system" | "developer"))) => {
                self.flush();
                let role = if role == "user" { "user" } else { "system" };
                let content = user_content(item)?;
                self.messages
                    .push(json!({"role": role, "content": content}));
            }
            (Some("function_call"), _) => {
                let id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::BadRequest("a `function_call` item needs a `call_id`".into())
                })?;
                let mut call = json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": str_field(item, "name"), "arguments": str_field(item, "arguments")},
                });
                let gemini = self.pending_gemini();
                let turn = self.assistant_turn();
                if let Some(sig) = gemini {
                    call["extra_content"] = json!({"google": {"thought_signature": sig}});
                }
                turn.tool_calls.push(call);
            }
            (Some("function_call_output"), _) => {
                self.flush();
                let id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::BadRequest("a `function_call_output` item needs a `call_id`".into())
                })?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => Value::String(s.clone()),
                    Some(Value::Array(parts)) => Value::String(
                        parts
                            .iter()
                            .map(|p| str_field(p, "text"))
                            .collect::<Vec<_>>()
                            .join(""),
                    ),
                    _ => Value::String(String::new()),
                };
                self.messages
                    .push(json!({"role": "tool", "tool_call_id": id, "content": output}));
            }
            (Some("reasoning"), _) => {
                if let Some(encrypted) = item.get("encrypted_content").and_then(Value::as_str) {
                    let summary: String = item
                        .get("summary")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|s| str_field(s, "text"))
                        .collect::<Vec<_>>()
                        .join("");
                    self.pending.push(signature::decode(encrypted, summary));
                }
            }
            (Some(other), _) => {
                return Err(ApiError::Unprocessable(format!(
                    "input items of type `{other}` are not supported by the gateway's translation"
                )))
            }
            (None, _) => {
                return Err(ApiError::BadRequest(
                    "an input item needs a `type`, or a `role` and `content`".into(),
                ))
            }
        }
        Ok(())
    }

    /// The signature of a Gemini function call, when the reasoning just before it was one.
    fn pending_gemini(&mut self) -> Option<String> {
        let at = self
            .pending
            .iter()
            .position(|s| matches!(s, Signature::Gemini(_)))?;
        match self.pending.remove(at) {
            Signature::Gemini(sig) => Some(sig),
            _ => None,
        }
    }

    /// The assistant turn being collected; Claude's thinking waiting for it joins it.
    fn assistant_turn(&mut self) -> &mut Assistant {
        let turn = self.assistant.get_or_insert_with(Assistant::default);
        self.pending.retain(|s| match s.thinking_block() {
            Some(block) => {
                turn.thinking_blocks.push(block);
                false
            }
            None => true,
        });
        turn
    }

    fn flush(&mut self) {
        let Some(turn) = self.assistant.take() else {
            return;
        };
        let mut message = json!({"role": "assistant", "content": turn.text});
        if !turn.tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(turn.tool_calls);
            if turn.text.is_empty() {
                message["content"] = Value::Null;
            }
        }
        if !turn.thinking_blocks.is_empty() {
            message["thinking_blocks"] = Value::Array(turn.thinking_blocks);
        }
        if let Some(refusal) = turn.refusal {
            message["refusal"] = refusal.into();
        }
        self.messages.push(message);
    }
}

fn str_field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// An item's content as parts (a string is one text part).
fn content_parts(item: &Value) -> Vec<Value> {
    match item.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "input_text", "text": s})],
        Some(Value::Array(parts)) => parts.clone(),
        _ => Vec::new(),
    }
}

/// A user, system or developer message's content in chat's form.
fn user_content(item: &Value) -> Result<Value, ApiError> {
    if let Some(Value::String(s)) = item.get("content") {
        return Ok(Value::String(s.clone()));
    }
    let mut parts = Vec::new();
    for part in content_parts(item) {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                parts.push(json!({"type": "text", "text": str_field(&part, "text")}))
            }
            Some("input_image") => {
                let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                    return Err(ApiError::Unprocessable(
                        "`input_image` by `file_id` needs OpenAI's file store; send `image_url` (a data URL or an http(s) URL)".into(),
                    ));
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("input_file") => {
                return Err(ApiError::Unprocessable(
                    "`input_file` parts are not supported by the gateway's translation".into(),
                ))
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown content part type `{}`",
                    other.unwrap_or("")
                )))
            }
        }
    }
    Ok(Value::Array(parts))
}
