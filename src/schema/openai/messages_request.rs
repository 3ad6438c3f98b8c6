//! An Anthropic Messages request (from an Anthropic SDK client) as an OpenAI chat
//! completions request, for the `OpenAI` and `AzureOpenAI` schemas.
//!
//! # Rules
//! - `system` (a string or text blocks) → a first `system` message.
//! - `messages`: roles `user` and `assistant`. Content is a string or blocks:
//!   - `text` → a text part (`citations` on replayed text are dropped);
//!   - `image` → an `image_url` part: a `base64` source as a data URL, a `url` source as
//!     its URL (OpenAI fetches it itself);
//!   - `document` with a base64 PDF source → a `file` part (`file_data` data URL);
//!   - `tool_use` (assistant) → `tool_calls[]` (`input` as the JSON `arguments`);
//!   - `tool_result` (user) → a `tool` message for its `tool_use_id`, placed before the
//!     rest of that turn (OpenAI wants tool results right after the call); its content is
//!     text (a string or text blocks; `is_error` is dropped, the text says it);
//!   - `thinking` and `redacted_thinking` (assistant) are dropped: OpenAI keeps reasoning
//!     to itself and takes none back;
//!   - any other block type (server tool blocks, search results, image tool results…) is
//!     422 naming it.
//! - `max_tokens` → `max_completion_tokens` (the field every current OpenAI model takes;
//!   `max_tokens` for an Azure api-version older than 2024-09-01, which lacks it);
//!   `temperature`, `top_p` as they are; `stop_sequences` → `stop` (at most 4, OpenAI's
//!   limit, else 422); `metadata.user_id` → `user`.
//! - `stream` → `stream` with `stream_options.include_usage` (the usage Anthropic's
//!   `message_delta` reports comes in OpenAI's last chunk; an Azure api-version older than
//!   2024-09-01 takes no `stream_options`, and its streams report no usage).
//! - `tools` (custom tools) → function tools (`input_schema` → `parameters`); server tools
//!   (any other `type`) are 422. `tool_choice`: `auto` → `auto`, `any` → `required`,
//!   `tool` → that function, `none` → `none`; `disable_parallel_tool_use: true` →
//!   `parallel_tool_calls: false`.
//! - `thinking` (`enabled`, with `budget_tokens`) → `reasoning_effort`: under 4096 tokens
//!   `low`, under 16384 `medium`, else `high`; `disabled` is dropped.
//! - `cache_control` is dropped (OpenAI caches prompts by itself), as are `service_tier`
//!   and `anthropic_version`. `top_k` and any other field are 422 naming them: OpenAI
//!   cannot honour them and they would change the answer.

use serde_json::{json, Map, Value};

use crate::api::{ApiError, ClientRequest};
use crate::schema::chat::Thinking;
use crate::schema::messages_request::{
    block_type, fields, Content, ImageBlock, InputMessage, MessagesRequest, TextBlock, ToolMode,
    ToolResultBlock, ToolUseBlock,
};

/// Top-level fields dropped without changing the answer.
const DROPPED: &[&str] = &["model", "stream", "service_tier", "anthropic_version"];
/// OpenAI takes at most this many stop sequences.
const MAX_STOP: usize = 4;

/// Where the chat request goes.
pub struct ChatTarget<'a> {
    /// The provider, for messages.
    pub provider: &'a str,
    /// It takes `max_completion_tokens` and `stream_options` (OpenAI; Azure since
    /// api-version 2024-09-01).
    pub current_api: bool,
}

/// The chat completions body for a Messages `request`, for the model `model`.
pub fn chat_body(
    request: &ClientRequest,
    model: &str,
    target: &ChatTarget,
) -> Result<Vec<u8>, ApiError> {
    let provider = target.provider;
    let r = MessagesRequest::parse(request)?;
    let unsupported = |what: &str| {
        ApiError::Unprocessable(format!(
            "`{what}` is not supported by {provider} (chat completions)"
        ))
    };
    if r.top_k.is_some() {
        return Err(unsupported("top_k"));
    }
    if let Some((field, _)) = r
        .other
        .iter()
        .find(|(k, v)| !v.is_null() && !DROPPED.contains(&k.as_str()))
    {
        return Err(unsupported(field));
    }
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    let mut messages = Vec::new();
    if let Some(system) = &r.system {
        if let Some(content) = system_content(system)? {
            messages.push(json!({"role": "system", "content": content}));
        }
    }
    for (i, message) in r.messages.iter().enumerate() {
        turn(message, i, provider, &mut messages)?;
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(max) = r.max_tokens {
        let field = if target.current_api {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body.insert(field.into(), max.into());
    }
    if let Some(t) = r.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = r.top_p {
        body.insert("top_p".into(), p.into());
    }
    if let Some(stop) = r.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        if stop.len() > MAX_STOP {
            return Err(ApiError::Unprocessable(format!(
                "{provider} takes at most {MAX_STOP} `stop_sequences`; got {}",
                stop.len()
            )));
        }
        body.insert("stop".into(), stop.clone().into());
    }
    if let Some(user) = r.metadata.as_ref().and_then(|m| m.user_id.as_ref()) {
        body.insert("user".into(), user.clone().into());
    }
    if request.stream {
        body.insert("stream".into(), true.into());
        if target.current_api {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    tools(&r, provider, &mut body)?;
    if let Some(effort) = reasoning_effort(r.thinking.as_ref())? {
        body.insert("reasoning_effort".into(), effort.into());
    }
    serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))
}

fn unsupported_block(kind: &str, at: &str, provider: &str) -> ApiError {
    ApiError::Unprocessable(format!(
        "`{kind}` blocks (at {at}) are not supported by {provider} (chat completions)"
    ))
}

/// A text block's text; any other block is a 400 naming where it sits.
fn text_of(block: &Value, at: &str) -> Result<String, ApiError> {
    if block_type(block) != "text" {
        return Err(ApiError::BadRequest(format!(
            "{at} must be a text block; got `{}`",
            block_type(block)
        )));
    }
    Ok(fields::<TextBlock>(block, at)?.text)
}

fn system_content(system: &Content) -> Result<Option<Value>, ApiError> {
    match system {
        Content::Text(text) if text.is_empty() => Ok(None),
        Content::Text(text) => Ok(Some(text.clone().into())),
        Content::Blocks(blocks) if blocks.is_empty() => Ok(None),
        Content::Blocks(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let text = text_of(block, &format!("system[{i}]"))?;
                parts.push(json!({"type": "text", "text": text}));
            }
            Ok(Some(Value::Array(parts)))
        }
    }
}

/// Appends the OpenAI messages of one Messages turn.
fn turn(
    message: &InputMessage,
    i: usize,
    provider: &str,
    out: &mut Vec<Value>,
) -> Result<(), ApiError> {
    let assistant = match message.role.as_str() {
        "user" => false,
        "assistant" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "messages[{i}].role must be `user` or `assistant`; got `{other}`"
            )))
        }
    };
    let blocks = match &message.content {
        Content::Text(text) => {
            let role = if assistant { "assistant" } else { "user" };
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match (block_type(block), assistant) {
            ("text", _) => parts.push(json!({"type": "text", "text": text_of(block, &at)?})),
            ("image", false) => parts.push(image_part(fields(block, &at)?, provider)?),
            ("document", false) => parts.push(document_part(block, &at, provider)?),
            ("tool_result", false) => out.push(tool_message(fields(block, &at)?, &at, provider)?),
            ("tool_use", true) => {
                let call: ToolUseBlock = fields(block, &at)?;
                let input = match call.input {
                    Value::Null => json!({}),
                    input => input,
                };
                tool_calls.push(json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": input.to_string()},
                }));
            }
            ("thinking" | "redacted_thinking", true) => {}
            ("", _) => return Err(ApiError::BadRequest(format!("{at} has no `type`"))),
            (kind, _) => return Err(unsupported_block(kind, &at, provider)),
        }
    }
    if assistant {
        // OpenAI's assistant content is text only.
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut message = json!({"role": "assistant"});
        message["content"] = if text.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            text.into()
        };
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        out.push(message);
    } else if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn image_part(block: ImageBlock, provider: &str) -> Result<Value, ApiError> {
    let source = block.source;
    let url = match (source.kind.as_str(), source.media_type, source.data) {
        ("base64", Some(media_type), Some(data)) => format!("data:{media_type};base64,{data}"),
        ("url", _, _) => source
            .url
            .ok_or_else(|| ApiError::BadRequest("an image `url` source needs a `url`".into()))?,
        (kind, _, _) => {
            return Err(ApiError::Unprocessable(format!(
                "{provider} takes images as base64 or url sources; got a `{kind}` source"
            )))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A base64 PDF document as a `file` part; any other document is 422.
fn document_part(block: &Value, at: &str, provider: &str) -> Result<Value, ApiError> {
    let source = block.get("source");
    let get = |key: &str| source.and_then(|s| s.get(key)).and_then(Value::as_str);
    match (get("type"), get("media_type"), get("data")) {
        (Some("base64"), Some("application/pdf"), Some(data)) => {
            let mut file = json!({"file_data": format!("data:application/pdf;base64,{data}")});
            if let Some(title) = block.get("title").and_then(Value::as_str) {
                file["filename"] = title.into();
            }
            Ok(json!({"type": "file", "file": file}))
        }
        _ => Err(ApiError::Unprocessable(format!(
            "{provider} takes documents only as base64 PDF sources (at {at})"
        ))),
    }
}

fn tool_message(block: ToolResultBlock, at: &str, provider: &str) -> Result<Value, ApiError> {
    let text = match &block.content {
        None => String::new(),
        Some(Content::Text(text)) => text.clone(),
        Some(Content::Blocks(blocks)) => {
            let mut text = String::new();
            for (k, b) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                match block_type(b) {
                    "text" => text.push_str(&fields::<TextBlock>(b, &at)?.text),
                    // OpenAI tool messages carry text only.
                    other => return Err(unsupported_block(other, &at, provider)),
                }
            }
            text
        }
    };
    Ok(json!({"role": "tool", "tool_call_id": block.tool_use_id, "content": text}))
}

fn tools(
    r: &MessagesRequest,
    provider: &str,
    body: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let mode = r.tool_mode()?;
    let tools = r.custom_tools(provider)?;
    if tools.is_empty() {
        return Ok(());
    }
    let functions: Vec<Value> = tools
        .into_iter()
        .map(|(mut tool, _)| {
            let mut function = json!({"name": tool.name, "parameters": tool.schema()});
            if let Some(description) = tool.description.take() {
                function["description"] = description.into();
            }
            json!({"type": "function", "function": function})
        })
        .collect();
    body.insert("tools".into(), Value::Array(functions));
    let Some((mode, no_parallel)) = mode else {
        return Ok(());
    };
    let choice = match mode {
        ToolMode::Auto => "auto".into(),
        ToolMode::Any => "required".into(),
        ToolMode::None => "none".into(),
        ToolMode::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    };
    body.insert("tool_choice".into(), choice);
    if no_parallel {
        body.insert("parallel_tool_calls".into(), false.into());
    }
    Ok(())
}

/// OpenAI's reasoning effort for Anthropic's thinking budget (parsed by the shared rule
/// of [`Thinking`]).
fn reasoning_effort(thinking: Option<&Value>) -> Result<Option<&'static str>, ApiError> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    Ok(match Thinking::parse(thinking)? {
        Thinking::Off => None,
        Thinking::Budget(0..4096) => Some("low"),
        Thinking::Budget(4096..16384) => Some("medium"),
        Thinking::Budget(_) => Some("high"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use bytes::Bytes;

    const TARGET: ChatTarget = ChatTarget {
        provider: "OpenAI",
        current_api: true,
    };

    fn translate(body: Value) -> Result<Value, ApiError> {
        let request = ClientRequest::parse(ApiKind::Messages, Bytes::from(body.to_string()))?;
        let bytes = chat_body(&request, "gpt-x", &TARGET)?;
        Ok(serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn content_blocks_sampling_and_thinking() {
        let out = translate(json!({
            "model": "m", "max_tokens": 50, "temperature": 0.2, "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"}, "service_tier": "auto",
            "system": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "document", "title": "t.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVB"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                                  {"type": "text", "text": "ok"}]}]
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "model": "gpt-x", "max_completion_tokens": 50, "temperature": 0.2, "stop": ["END"],
                "user": "u1", "reasoning_effort": "medium",
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": "a"}]},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVB", "filename": "t.pdf"}}]},
                    {"role": "assistant", "content": "ok"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "parallel_tool_calls": false,
            })
        );
    }

    #[test]
    fn what_openai_cannot_honour_is_refused_by_name() {
        let base =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let with = |field: &str, value: Value| {
            let mut b = base.clone();
            b[field] = value;
            translate(b).unwrap_err()
        };
        for (field, value, status, named) in [
            ("top_k", json!(5), 422, "top_k"),
            ("container", json!("c"), 422, "container"),
            (
                "stop_sequences",
                json!(["a", "b", "c", "d", "e"]),
                422,
                "stop_sequences",
            ),
            (
                "tools",
                json!([{"type": "web_search_20250305", "name": "web_search"}]),
                422,
                "web_search",
            ),
            ("tool_choice", json!({"type": "any"}), 400, "no `tools`"),
            ("thinking", json!({"type": "enabled"}), 400, "budget_tokens"),
        ] {
            let e = with(field, value);
            assert_eq!(e.status(), status, "{field}: {e}");
            assert!(e.to_string().contains(named), "{field}: {e}");
        }
        let e = translate(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}]}]}))
        .unwrap_err();
        assert_eq!(e.status(), 422);
    }
}
