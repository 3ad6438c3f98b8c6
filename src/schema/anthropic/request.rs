//! OpenAI chat request → Anthropic Messages request body, shared by the three ways to
//! reach Claude: Anthropic's own API, AWS Bedrock InvokeModel and GCP Vertex rawPredict.
//! They differ only in where the model goes and which `anthropic_version` the body names
//! ([`Flavor`]).
//!
//! Parameter rules (OpenAI → Anthropic):
//! - `system` and `developer` messages, wherever they appear, become `system` text blocks
//!   in order, one per text part (Anthropic takes the system prompt apart from the turns).
//! - `cache_control` on a text or image part (Anthropic's prompt-caching extension of
//!   OpenAI content parts) stays on the block it marks, so cached prefixes keep working.
//! - `user` text and images: data URLs → `base64` image sources; http(s) URLs → `url`
//!   sources where the flavor takes them (Anthropic's API), else 422 (the gateway never
//!   fetches).
//! - `assistant`: `thinking_blocks` first (signatures kept), then text, then `tool_calls`
//!   as `tool_use` blocks. `reasoning_content` alone (no signature) is dropped: Anthropic
//!   refuses unsigned thinking.
//! - `tool` (and legacy `function`) results → `tool_result` blocks in a user turn;
//!   consecutive turns of one role are merged, tool results first, as Anthropic requires.
//! - `max_tokens` is always sent: `max_completion_tokens`, else `max_tokens`, else
//!   [`DEFAULT_MAX_TOKENS`] (plus the thinking budget when thinking is on).
//! - `temperature`, `top_p` → same names; `stop` → `stop_sequences`; `user` →
//!   `metadata.user_id`.
//! - `tools` → `input_schema` tools; `tool_choice` none/auto/required/named → none/auto/
//!   any/tool; `parallel_tool_calls: false` → `disable_parallel_tool_use`.
//! - `reasoning_effort` → `thinking.budget_tokens` (`none` leaves thinking off).
//! - `n`, `logit_bias`, `modalities`, tool kinds, `tool_choice` modes and the thinking
//!   budget follow the shared rules of [`crate::schema::chat`].
//! - 422: `response_format` json_object/json_schema (no JSON mode on every Claude model;
//!   use a tool), `logprobs`/`top_logprobs`, non-zero
//!   `presence_penalty`/`frequency_penalty`, `audio`, `prediction`,
//!   `web_search_options`: each changes the answer in a way Claude cannot honour.
//! - Dropped as harmless: `seed` (no equivalent; sampling stays random), `stream_options`
//!   (usage always comes), `metadata`, `store`, `service_tier`, `prompt_cache_key`,
//!   `safety_identifier`.

use serde_json::{json, Map, Value};

use crate::api::ApiError;
use crate::schema::chat::{
    inline_images_only, ChatRequest, Image, Message, Part, ResponseFormat, Role, ThinkingBlock,
    ToolChoice,
};

/// Output tokens asked for when the client sets no limit (Anthropic requires one). 4096
/// is the largest value every Claude model accepts.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Fields refused with 422 (see the module documentation).
const REFUSED: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "audio",
    "prediction",
    "web_search_options",
];

/// How one hosting of the Messages API differs from the others.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    /// The provider's name, for error messages.
    pub provider: &'static str,
    /// `model` goes in the body (Anthropic); else it is in the path and the body names
    /// `anthropic_version` instead.
    pub model_in_body: bool,
    /// The `anthropic_version` body field (Bedrock and Vertex).
    pub body_version: Option<&'static str>,
    /// Whether http(s) image URLs may be passed for the provider to fetch.
    pub url_images: bool,
    /// Bedrock's InvokeModel: the operation says whether to stream (the body has no
    /// `stream` field) and beta flags go in the body (`anthropic_beta`).
    pub invoke: bool,
}

/// Builds the Messages request body.
pub fn messages_body(chat: &ChatRequest, flavor: &Flavor, model: &str) -> Result<Value, ApiError> {
    chat.refuse_unsupported(flavor.provider, REFUSED)?;
    if let Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }) =
        &chat.response_format
    {
        return Err(ApiError::Unprocessable(format!(
            "`response_format` is not supported by {}; ask for JSON in the prompt or use a tool",
            flavor.provider
        )));
    }
    let mut body = Map::new();
    if flavor.model_in_body {
        body.insert("model".into(), model.into());
    }
    if let Some(version) = flavor.body_version {
        body.insert("anthropic_version".into(), version.into());
    }
    let (system, messages) = turns(&chat.messages, flavor)?;
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    // A budget not below the client's limit was refused when parsing.
    let budget = chat.thinking_budget();
    let max_tokens = chat
        .max_output_tokens()
        .unwrap_or(DEFAULT_MAX_TOKENS + budget.unwrap_or(0));
    body.insert("max_tokens".into(), max_tokens.into());
    if let Some(budget) = budget {
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if let Some(t) = chat.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = chat.top_p {
        body.insert("top_p".into(), p.into());
    }
    let stops = chat.stop_sequences();
    if !stops.is_empty() {
        body.insert("stop_sequences".into(), stops.into());
    }
    if let Some(user) = &chat.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if !chat.tools.is_empty() {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|f| {
                let mut tool = json!({"name": f.name, "input_schema": f.schema()});
                if let Some(d) = &f.description {
                    tool["description"] = d.clone().into();
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice(chat) {
        body.insert("tool_choice".into(), choice);
    }
    if chat.stream && !flavor.invoke {
        body.insert("stream".into(), true.into());
    }
    Ok(Value::Object(body))
}

fn tool_choice(chat: &ChatRequest) -> Option<Value> {
    let mut choice = match &chat.tool_choice {
        None => json!({"type": "auto"}),
        Some(ToolChoice::None) => json!({"type": "none"}),
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
    };
    if chat.parallel_tool_calls == Some(false) && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = true.into();
    } else if chat.tool_choice.is_none() {
        // Anthropic's default is auto already: say nothing.
        return None;
    }
    Some(choice)
}

/// The system blocks and the alternating user/assistant turns.
fn turns(messages: &[Message], flavor: &Flavor) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.extend(system_blocks(message));
                continue;
            }
            Role::User => ("user", user_blocks(message, flavor)?),
            Role::Assistant => ("assistant", assistant_blocks(message)?),
            Role::Tool | Role::Function => ("user", vec![tool_result(message)?]),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => {
                if message.role == Role::Tool || message.role == Role::Function {
                    // Results answer the previous assistant turn: they come first.
                    let results = existing
                        .iter()
                        .take_while(|b| b["type"] == "tool_result")
                        .count();
                    existing.splice(results..results, blocks);
                } else {
                    existing.extend(blocks);
                }
            }
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

/// A block with the client's `cache_control`, when it set one.
fn cached(mut block: Value, cache_control: Option<Value>) -> Value {
    if let Some(control) = cache_control.filter(|c| !c.is_null()) {
        block["cache_control"] = control;
    }
    block
}

/// A system or developer message's text: one block for a string, or one per text part,
/// so that a part's `cache_control` marks where the cached prefix ends.
fn system_blocks(message: &Message) -> Vec<Value> {
    message
        .parts()
        .into_iter()
        .filter_map(|part| match part {
            Part::Text {
                text,
                cache_control,
            } if !text.is_empty() => {
                Some(cached(json!({"type": "text", "text": text}), cache_control))
            }
            _ => None,
        })
        .collect()
}

fn user_blocks(message: &Message, flavor: &Flavor) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    for part in message.parts() {
        match part {
            Part::Text {
                text,
                cache_control,
            } => blocks.push(cached(json!({"type": "text", "text": text}), cache_control)),
            Part::ImageUrl {
                image_url,
                cache_control,
            } => {
                let source = match image_url.image()? {
                    Image::Inline { media_type, data } => {
                        json!({"type": "base64", "media_type": media_type, "data": data})
                    }
                    Image::Url(url) if flavor.url_images => json!({"type": "url", "url": url}),
                    Image::Url(_) => return Err(inline_images_only(flavor.provider)),
                };
                let block = json!({"type": "image", "source": source});
                blocks.push(cached(block, cache_control));
            }
            Part::Refusal { refusal } => blocks.push(json!({"type": "text", "text": refusal})),
            Part::InputAudio { .. } | Part::File { .. } => {
                return Err(ApiError::Unprocessable(format!(
                    "audio and file content parts are not supported by {}",
                    flavor.provider
                )))
            }
        }
    }
    Ok(blocks)
}

fn assistant_blocks(message: &Message) -> Result<Vec<Value>, ApiError> {
    let mut blocks: Vec<Value> = message
        .thinking_blocks
        .iter()
        .filter_map(|b| match b {
            ThinkingBlock::Thinking {
                thinking,
                signature: Some(signature),
            } => Some(json!({"type": "thinking", "thinking": thinking, "signature": signature})),
            ThinkingBlock::Thinking { .. } => None,
            ThinkingBlock::RedactedThinking { data } => {
                Some(json!({"type": "redacted_thinking", "data": data}))
            }
        })
        .collect();
    let text = message.text();
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in &message.tool_calls {
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.function.name,
            "input": call.arguments()?,
        }));
    }
    Ok(blocks)
}

fn tool_result(message: &Message) -> Result<Value, ApiError> {
    let id = message.tool_call_id.as_deref().ok_or_else(|| {
        ApiError::BadRequest("a `tool` message needs the `tool_call_id` it answers".into())
    })?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": message.text()}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKind, ClientRequest};
    use bytes::Bytes;

    const ANTHROPIC: Flavor = Flavor {
        provider: "Anthropic",
        model_in_body: true,
        body_version: None,
        url_images: true,
        invoke: false,
    };
    const BEDROCK: Flavor = Flavor {
        provider: "AWS Bedrock (Anthropic)",
        model_in_body: false,
        body_version: Some("bedrock-2023-05-31"),
        url_images: false,
        invoke: true,
    };

    fn body(request: &str, flavor: &Flavor) -> Result<Value, ApiError> {
        let r = ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(request.to_string()))?;
        messages_body(&ChatRequest::parse(&r)?, flavor, "claude-x")
    }

    #[test]
    fn rich_conversation_follows_the_messages_api() {
        let b = body(
            r#"{"model":"c","max_completion_tokens":300,"stop":["END"],"temperature":0.2,"user":"u1","seed":7,
               "messages":[
                {"role":"system","content":"sys"},
                {"role":"developer","content":[{"type":"text","text":"dev"}]},
                {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},
                {"role":"assistant","content":"calling","thinking_blocks":[{"type":"thinking","thinking":"t","signature":"sig"}],
                 "tool_calls":[{"id":"tu1","type":"function","function":{"name":"w","arguments":"{\"c\":\"SF\"}"}},{"id":"tu2","type":"function","function":{"name":"t","arguments":""}}]},
                {"role":"tool","tool_call_id":"tu1","content":"sunny"},
                {"role":"tool","tool_call_id":"tu2","content":"noon"},
                {"role":"user","content":"thanks"}],
               "tools":[{"type":"function","function":{"name":"w","description":"weather","parameters":{"type":"object","properties":{"c":{"type":"string"}}}}}],
               "tool_choice":"required","parallel_tool_calls":false,"stream_options":{"include_usage":true}}"#,
            &ANTHROPIC,
        )
        .unwrap();
        assert_eq!(
            b,
            json!({
                "model": "claude-x",
                "system": [{"type":"text","text":"sys"},{"type":"text","text":"dev"}],
                "messages": [
                    {"role":"user","content":[
                        {"type":"text","text":"look"},
                        {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},
                        {"type":"image","source":{"type":"url","url":"https://x/y.png"}}]},
                    {"role":"assistant","content":[
                        {"type":"thinking","thinking":"t","signature":"sig"},
                        {"type":"text","text":"calling"},
                        {"type":"tool_use","id":"tu1","name":"w","input":{"c":"SF"}},
                        {"type":"tool_use","id":"tu2","name":"t","input":{}}]},
                    {"role":"user","content":[
                        {"type":"tool_result","tool_use_id":"tu1","content":"sunny"},
                        {"type":"tool_result","tool_use_id":"tu2","content":"noon"},
                        {"type":"text","text":"thanks"}]}],
                "max_tokens": 300,
                "temperature": 0.2,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u1"},
                "tools": [{"name":"w","description":"weather","input_schema":{"type":"object","properties":{"c":{"type":"string"}}}}],
                "tool_choice": {"type":"any","disable_parallel_tool_use":true}
            })
        );
    }

    #[test]
    fn flavors_place_model_and_version() {
        let b = body(
            r#"{"model":"c","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            &BEDROCK,
        )
        .unwrap();
        assert_eq!(b.get("model"), None);
        assert_eq!(b["anthropic_version"], "bedrock-2023-05-31");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        // InvokeModel streams by its operation, not by a body field.
        assert!(b.get("stream").is_none());
        let e = body(
            r#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x"}}]}]}"#,
            &BEDROCK,
        )
        .unwrap_err();
        assert_eq!(e.status(), 422);
    }

    #[test]
    fn reasoning_effort_sets_a_budget_below_max_tokens() {
        let b = body(
            r#"{"model":"c","reasoning_effort":"low","messages":[{"role":"user","content":"hi"}]}"#,
            &ANTHROPIC,
        )
        .unwrap();
        assert_eq!(
            b["thinking"],
            json!({"type":"enabled","budget_tokens":2048})
        );
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS + 2048);
        let e = body(
            r#"{"model":"c","reasoning_effort":"high","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#,
            &ANTHROPIC,
        )
        .unwrap_err();
        assert_eq!(e.status(), 422);
    }

    #[test]
    fn unsupported_parameters_are_named() {
        for extra in [
            r#""n":2"#,
            r#""logprobs":true"#,
            r#""presence_penalty":0.5"#,
            r#""response_format":{"type":"json_object"}"#,
        ] {
            let e = body(
                &format!(
                    r#"{{"model":"c",{extra},"messages":[{{"role":"user","content":"hi"}}]}}"#
                ),
                &ANTHROPIC,
            )
            .unwrap_err();
            assert_eq!(e.status(), 422, "{extra}");
        }
        // Zero penalties are what many SDKs send by default: harmless.
        body(
            r#"{"model":"c","presence_penalty":0,"messages":[{"role":"user","content":"hi"}]}"#,
            &ANTHROPIC,
        )
        .unwrap();
    }
}
