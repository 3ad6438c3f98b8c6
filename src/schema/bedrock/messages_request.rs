//! An Anthropic Messages request (from an Anthropic SDK client) as a Converse request
//! body.
//!
//! # Rules
//! - `system` (a string or text blocks) → `system` text blocks.
//! - `messages`: roles `user` and `assistant` only; consecutive turns of one role are
//!   merged (Anthropic merges them itself, Converse requires alternation). Content is a
//!   string or blocks:
//!   - `text` → `{text}` (`citations` on replayed text are dropped);
//!   - `image` with a `base64` source → `{image: {format, source: {bytes}}}` (png, jpeg,
//!     gif, webp); `url` and `file` sources are 422 (the gateway never fetches);
//!   - `tool_use` → `toolUse`; `tool_result` (content a string or text/image blocks,
//!     `is_error` → `status: error`) → `toolResult`;
//!   - `thinking` (with its `signature`) → `reasoningContent.reasoningText`;
//!     `redacted_thinking` → `reasoningContent.redactedContent`;
//!   - any other block type (documents, server tool blocks, search results…) is 422.
//! - `cache_control` (`ephemeral`, TTL absent or `5m`) on a system block, content block
//!   or tool → a `cachePoint` block right after it; another type or TTL is 422.
//! - `max_tokens`, `temperature`, `top_p`, `stop_sequences` → `inferenceConfig`; with stop
//!   sequences the body asks for `/stop_sequence` in `additionalModelResponseFieldPaths`
//!   so the answer can say which one matched.
//! - `top_k` → `additionalModelRequestFields.top_k`; `thinking` (unless `disabled`) →
//!   `additionalModelRequestFields.thinking` as sent; the client's `anthropic-beta`
//!   header → `additionalModelRequestFields.anthropic_beta` (a list): Claude on Bedrock
//!   reads all three there.
//! - `tools` (custom tools: `name`, `description`, `input_schema`) →
//!   `toolConfig.tools[].toolSpec`; server tools (any other `type`) are 422.
//! - `tool_choice`: `auto` → `{auto:{}}`, `any` → `{any:{}}`, `tool` → `{tool:{name}}`;
//!   `none` leaves the tools out, which is 422 once the conversation holds tool blocks
//!   (Converse rejects them without a `toolConfig`); `any`/`tool` without tools is 400;
//!   `disable_parallel_tool_use: true` is 422 (Converse cannot forbid parallel calls).
//! - Dropped, harmless: `model` (it is in the path), `stream` (the operation says it),
//!   `metadata`, `service_tier`, `anthropic_version`. Any other field is 422 naming it:
//!   it would change the answer and Converse cannot express it.

use serde_json::{json, Map, Value};

use crate::api::{ApiError, ClientRequest};
use crate::schema::messages_request::{
    block_type, fields, Content, ImageBlock, InputMessage, MessagesRequest, RedactedThinkingBlock,
    TextBlock, ThinkingBlock, ToolMode, ToolResultBlock, ToolUseBlock,
};

use super::PROVIDER;

/// Top-level fields dropped without changing the answer.
const DROPPED: &[&str] = &[
    "model",
    "stream",
    "metadata",
    "service_tier",
    "anthropic_version",
];

/// The Converse body for a Messages `request`.
pub fn converse_body(request: &ClientRequest) -> Result<Value, ApiError> {
    let r = MessagesRequest::parse(request)?;
    refuse_unknown(&r.other)?;
    let mut body = Map::new();
    if let Some(system) = &r.system {
        let blocks = system_blocks(system)?;
        if !blocks.is_empty() {
            body.insert("system".into(), Value::Array(blocks));
        }
    }
    let (messages, holds_tool_blocks) = turns(&r.messages)?;
    body.insert("messages".into(), Value::Array(messages));
    if let Some(config) = tool_config(&r, holds_tool_blocks)? {
        body.insert("toolConfig".into(), config);
    }
    let inference = inference_config(&r);
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let additional = additional_fields(&r, request.anthropic_beta.as_deref());
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }
    if r.stop_sequences.as_ref().is_some_and(|s| !s.is_empty()) {
        // Converse does not say which stop sequence matched unless asked.
        body.insert(
            "additionalModelResponseFieldPaths".into(),
            json!(["/stop_sequence"]),
        );
    }
    Ok(Value::Object(body))
}

fn unsupported(what: &str) -> ApiError {
    ApiError::Unprocessable(format!(
        "`{what}` is not supported by {PROVIDER} (Converse)"
    ))
}

fn unsupported_block(kind: &str, at: &str) -> ApiError {
    ApiError::Unprocessable(format!(
        "`{kind}` blocks (at {at}) are not supported by {PROVIDER} (Converse)"
    ))
}

fn refuse_unknown(other: &Map<String, Value>) -> Result<(), ApiError> {
    match other
        .iter()
        .find(|(k, v)| !v.is_null() && !DROPPED.contains(&k.as_str()))
    {
        Some((field, _)) => Err(unsupported(field)),
        None => Ok(()),
    }
}

/// The `cachePoint` that follows a block carrying `cache_control`, if it does.
fn cache_point(block: &Value, at: &str) -> Result<Option<Value>, ApiError> {
    match block.get("cache_control").filter(|c| !c.is_null()) {
        Some(control) => super::converse_request::cache_point(control, at).map(Some),
        None => Ok(None),
    }
}

fn system_blocks(system: &Content) -> Result<Vec<Value>, ApiError> {
    let blocks = match system {
        Content::Text(text) if text.is_empty() => return Ok(Vec::new()),
        Content::Text(text) => return Ok(vec![json!({ "text": text })]),
        Content::Blocks(blocks) => blocks,
    };
    let mut out = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("system[{i}]");
        if block_type(block) != "text" {
            return Err(ApiError::BadRequest(format!(
                "{at} must be a text block; got `{}`",
                block_type(block)
            )));
        }
        let text: TextBlock = fields(block, &at)?;
        out.push(json!({ "text": text.text }));
        out.extend(cache_point(block, &at)?);
    }
    Ok(out)
}

/// The Converse turns, and whether any holds tool blocks.
fn turns(messages: &[InputMessage]) -> Result<(Vec<Value>, bool), ApiError> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut holds_tool_blocks = false;
    for (i, message) in messages.iter().enumerate() {
        let role = match message.role.as_str() {
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::BadRequest(format!(
                    "messages[{i}].role must be `user` or `assistant`; got `{other}`"
                )))
            }
        };
        let blocks = match &message.content {
            Content::Text(text) => vec![json!({ "text": text })],
            Content::Blocks(blocks) => {
                let mut out = Vec::with_capacity(blocks.len());
                for (j, block) in blocks.iter().enumerate() {
                    let at = format!("messages[{i}].content[{j}]");
                    holds_tool_blocks |= matches!(block_type(block), "tool_use" | "tool_result");
                    out.push(content_block(block, &at)?);
                    out.extend(cache_point(block, &at)?);
                }
                out
            }
        };
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((turns, holds_tool_blocks))
}

fn content_block(block: &Value, at: &str) -> Result<Value, ApiError> {
    Ok(match block_type(block) {
        "text" => json!({"text": fields::<TextBlock>(block, at)?.text}),
        "image" => image(fields(block, at)?)?,
        "tool_use" => {
            let b: ToolUseBlock = fields(block, at)?;
            let input = match b.input {
                Value::Null => json!({}),
                input => input,
            };
            json!({"toolUse": {"toolUseId": b.id, "name": b.name, "input": input}})
        }
        "tool_result" => tool_result(fields(block, at)?, at)?,
        "thinking" => {
            let b: ThinkingBlock = fields(block, at)?;
            let mut text = json!({ "text": b.thinking });
            if let Some(signature) = b.signature {
                text["signature"] = signature.into();
            }
            json!({"reasoningContent": {"reasoningText": text}})
        }
        "redacted_thinking" => {
            let b: RedactedThinkingBlock = fields(block, at)?;
            json!({"reasoningContent": {"redactedContent": b.data}})
        }
        "" => return Err(ApiError::BadRequest(format!("{at} has no `type`"))),
        other => return Err(unsupported_block(other, at)),
    })
}

fn image(block: ImageBlock) -> Result<Value, ApiError> {
    let source = block.source;
    let (Some(media_type), Some(data), "base64") = (
        source.media_type.as_deref(),
        source.data,
        source.kind.as_str(),
    ) else {
        return Err(ApiError::Unprocessable(format!(
            "{PROVIDER} takes images only as base64 sources; got a `{}` source, and the gateway does not fetch images",
            source.kind
        )));
    };
    super::converse_request::converse_image(media_type, &data)
}

fn tool_result(block: ToolResultBlock, at: &str) -> Result<Value, ApiError> {
    let content = match &block.content {
        None => vec![json!({"text": ""})],
        Some(Content::Text(text)) => vec![json!({ "text": text })],
        Some(Content::Blocks(blocks)) => {
            let mut out = Vec::with_capacity(blocks.len());
            for (k, b) in blocks.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                out.push(match block_type(b) {
                    "text" => json!({"text": fields::<TextBlock>(b, &at)?.text}),
                    "image" => image(fields(b, &at)?)?,
                    other => return Err(unsupported_block(other, &at)),
                });
            }
            out
        }
    };
    let mut result = json!({"toolUseId": block.tool_use_id, "content": content});
    if block.is_error == Some(true) {
        result["status"] = "error".into();
    }
    Ok(json!({ "toolResult": result }))
}

fn tool_config(r: &MessagesRequest, holds_tool_blocks: bool) -> Result<Option<Value>, ApiError> {
    let choice = match r.tool_mode()? {
        Some((_, true)) if r.tool_choice.as_ref().is_some_and(|c| c.kind != "none") => {
            return Err(ApiError::Unprocessable(format!(
                "`tool_choice.disable_parallel_tool_use` is not supported by {PROVIDER}: Converse cannot forbid parallel tool calls"
            )))
        }
        None => None,
        Some((ToolMode::Auto, _)) => Some(json!({"auto": {}})),
        Some((ToolMode::Any, _)) => Some(json!({"any": {}})),
        Some((ToolMode::Tool(name), _)) => Some(json!({"tool": {"name": name}})),
        Some((ToolMode::None, _)) if holds_tool_blocks => {
            return Err(ApiError::Unprocessable(format!(
                "`tool_choice: none` is not supported by {PROVIDER} once the conversation holds tool blocks; use `auto`"
            )))
        }
        // Converse has no `none`: the tools are left out.
        Some((ToolMode::None, _)) => return Ok(None),
    };
    let tools = r.custom_tools(PROVIDER)?;
    if tools.is_empty() {
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(tools.len());
    for (i, (mut tool, value)) in tools.into_iter().enumerate() {
        let mut spec = json!({"name": tool.name, "inputSchema": {"json": tool.schema()}});
        if let Some(description) = tool.description {
            spec["description"] = description.into();
        }
        specs.push(json!({ "toolSpec": spec }));
        specs.extend(cache_point(value, &format!("tools[{i}]"))?);
    }
    let mut config = json!({ "tools": specs });
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

fn inference_config(r: &MessagesRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(max) = r.max_tokens {
        config.insert("maxTokens".into(), max.into());
    }
    if let Some(t) = r.temperature {
        config.insert("temperature".into(), t.into());
    }
    if let Some(p) = r.top_p {
        config.insert("topP".into(), p.into());
    }
    if let Some(stop) = r.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        config.insert("stopSequences".into(), stop.clone().into());
    }
    config
}

fn additional_fields(r: &MessagesRequest, beta: Option<&str>) -> Map<String, Value> {
    let mut fields = Map::new();
    if let Some(thinking) = &r.thinking {
        if thinking.get("type").and_then(Value::as_str) != Some("disabled") && !thinking.is_null() {
            fields.insert("thinking".into(), thinking.clone());
        }
    }
    if let Some(k) = r.top_k {
        fields.insert("top_k".into(), k.into());
    }
    let flags: Vec<Value> = beta
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(Value::from)
        .collect();
    if !flags.is_empty() {
        fields.insert("anthropic_beta".into(), Value::Array(flags));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use crate::schema::fixtures::load;
    use bytes::Bytes;

    fn body_with_beta(request: &str, beta: Option<&str>) -> Result<Value, ApiError> {
        let mut r = ClientRequest::parse(
            ApiKind::Messages,
            Bytes::copy_from_slice(request.as_bytes()),
        )?;
        r.anthropic_beta = beta.map(str::to_string);
        converse_body(&r)
    }

    fn body(request: &str) -> Result<Value, ApiError> {
        body_with_beta(request, None)
    }

    #[test]
    fn rich_request_has_the_converse_shape() {
        let b = body_with_beta(
            r#"{"model":"claude","max_tokens":2048,"stream":true,"temperature":1,"top_p":0.9,"top_k":40,
              "stop_sequences":["END","STOP"],"metadata":{"user_id":"u1"},"service_tier":"auto",
              "system":[{"type":"text","text":"You are terse."},
                        {"type":"text","text":"Long rules.","cache_control":{"type":"ephemeral"}}],
              "thinking":{"type":"enabled","budget_tokens":1024},
              "messages":[
                {"role":"user","content":[{"type":"text","text":"What is this?"},
                  {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},
                {"role":"user","content":"And the weather in Paris?"},
                {"role":"assistant","content":[
                  {"type":"thinking","thinking":"need tools","signature":"sig1"},
                  {"type":"redacted_thinking","data":"UkVE"},
                  {"type":"text","text":"Let me check.","citations":null},
                  {"type":"tool_use","id":"tu1","name":"weather","input":{"city":"Paris"}},
                  {"type":"tool_use","id":"tu2","name":"time","input":{}}]},
                {"role":"user","content":[
                  {"type":"tool_result","tool_use_id":"tu1","content":"18C"},
                  {"type":"tool_result","tool_use_id":"tu2","is_error":true,
                   "content":[{"type":"text","text":"clock broken"},
                              {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/"}}]},
                  {"type":"text","text":"Thanks","cache_control":{"type":"ephemeral","ttl":"5m"}}]}],
              "tools":[{"name":"weather","description":"Weather by city",
                        "input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},
                       {"type":"custom","name":"time","input_schema":{"type":"object"},
                        "cache_control":{"type":"ephemeral"}}],
              "tool_choice":{"type":"any"}}"#,
            Some("interleaved-thinking-2025-05-14, token-efficient-tools-2025-02-19"),
        )
        .unwrap();
        let expected = json!({
            "system": [
                {"text": "You are terse."},
                {"text": "Long rules."},
                {"cachePoint": {"type": "default"}}],
            "messages": [
                {"role": "user", "content": [
                    {"text": "What is this?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                    {"text": "And the weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": "need tools", "signature": "sig1"}}},
                    {"reasoningContent": {"redactedContent": "UkVE"}},
                    {"text": "Let me check."},
                    {"toolUse": {"toolUseId": "tu1", "name": "weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "tu2", "name": "time", "input": {}}}]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tu1", "content": [{"text": "18C"}]}},
                    {"toolResult": {"toolUseId": "tu2", "status": "error", "content": [
                        {"text": "clock broken"},
                        {"image": {"format": "jpeg", "source": {"bytes": "/9j/"}}}]}},
                    {"text": "Thanks"},
                    {"cachePoint": {"type": "default"}}]}],
            "toolConfig": {
                "tools": [
                    {"toolSpec": {"name": "weather", "description": "Weather by city",
                        "inputSchema": {"json": {"type": "object",
                            "properties": {"city": {"type": "string"}}, "required": ["city"]}}}},
                    {"toolSpec": {"name": "time", "inputSchema": {"json": {"type": "object"}}}},
                    {"cachePoint": {"type": "default"}}],
                "toolChoice": {"any": {}}},
            "inferenceConfig": {"maxTokens": 2048, "temperature": 1.0, "topP": 0.9,
                "stopSequences": ["END", "STOP"]},
            "additionalModelRequestFields": {
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "top_k": 40,
                "anthropic_beta": ["interleaved-thinking-2025-05-14", "token-efficient-tools-2025-02-19"]},
            "additionalModelResponseFieldPaths": ["/stop_sequence"],
        });
        assert_eq!(b, expected);
    }

    #[test]
    fn recorded_requests_are_reproduced() {
        let recorded = load("bedrock/converse-stream-tool-use.json");
        let b = body(
            r#"{"model":"m","stream":true,"max_tokens":300,"temperature":0.5,
              "messages":[{"role":"user","content":"What is the weather in Barcelona?"}],
              "tools":[{"name":"get_weather","description":"Get the current weather for a location",
                "input_schema":{"type":"object","properties":{"location":{"type":"string","description":"The city name"}},"required":["location"]}}]}"#,
        )
        .unwrap();
        assert_eq!(b, recorded["request"]["body"]);

        let recorded = load("bedrock/converse-stream-reasoning.json");
        let b = body(
            r#"{"model":"m","max_tokens":2048,"thinking":{"type":"enabled","budget_tokens":1024},
              "messages":[{"role":"user","content":"Hello"}]}"#,
        )
        .unwrap();
        assert_eq!(
            b["additionalModelRequestFields"],
            recorded["request"]["body"]["additionalModelRequestFields"]
        );
        let b = body(
            r#"{"model":"m","max_tokens":5,"thinking":{"type":"disabled"},"system":"",
              "messages":[{"role":"user","content":"Hello"}]}"#,
        )
        .unwrap();
        assert_eq!(
            b,
            json!({"messages": [{"role": "user", "content": [{"text": "Hello"}]}],
                   "inferenceConfig": {"maxTokens": 5}})
        );
    }

    #[test]
    fn cache_point_after_a_system_prompt_as_recorded() {
        let recorded = load("bedrock/converse-cache-usage.json");
        let system = &recorded["request"]["body"]["system"];
        let text = system[0]["text"].as_str().unwrap();
        let request = json!({"model": "m", "max_tokens": 1000,
            "system": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "What is a ml app"}]});
        let b = body(&request.to_string()).unwrap();
        assert_eq!(&b["system"], system);
    }

    #[test]
    fn tool_choice_modes() {
        let with = |choice: &str, messages: &str| {
            body(&format!(
                r#"{{"model":"m","max_tokens":5,"messages":{messages},
                  "tools":[{{"name":"f","input_schema":{{"type":"object"}}}}],"tool_choice":{choice}}}"#
            ))
        };
        let plain = r#"[{"role":"user","content":"x"}]"#;
        assert_eq!(
            with(r#"{"type":"auto"}"#, plain).unwrap()["toolConfig"]["toolChoice"],
            json!({"auto": {}})
        );
        assert_eq!(
            with(r#"{"type":"tool","name":"f"}"#, plain).unwrap()["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        assert!(with(r#"{"type":"none"}"#, plain)
            .unwrap()
            .get("toolConfig")
            .is_none());
        let with_tools = r#"[{"role":"user","content":"x"},
            {"role":"assistant","content":[{"type":"tool_use","id":"a","name":"f","input":{}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"a","content":"1"}]}]"#;
        assert_eq!(
            with(r#"{"type":"none"}"#, with_tools).unwrap_err().status(),
            422
        );
        let e = with(r#"{"type":"auto","disable_parallel_tool_use":true}"#, plain).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.to_string().contains("disable_parallel_tool_use"));
        let e = body(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"any"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn what_converse_cannot_express_is_422_naming_it() {
        let with_message = |content: &str| {
            body(&format!(
                r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":[{content}]}}]}}"#
            ))
        };
        for (content, name) in [
            (
                r#"{"type":"image","source":{"type":"url","url":"https://x/y.png"}}"#,
                "base64",
            ),
            (
                r#"{"type":"image","source":{"type":"base64","media_type":"image/tiff","data":"AA"}}"#,
                "image/tiff",
            ),
            (
                r#"{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"AA"}}"#,
                "document",
            ),
            (
                r#"{"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"1h"}}"#,
                "ttl",
            ),
            (
                r#"{"type":"tool_result","tool_use_id":"a","content":[{"type":"search_result"}]}"#,
                "search_result",
            ),
        ] {
            let e = with_message(content).unwrap_err();
            assert_eq!(e.status(), 422, "{content}");
            assert!(e.to_string().contains(name), "{content}: {e}");
        }
        for (extra, name) in [
            (
                r#""mcp_servers":[{"type":"url","url":"https://x"}]"#,
                "mcp_servers",
            ),
            (r#""container":"c1""#, "container"),
            (
                r#""tools":[{"type":"web_search_20250305","name":"web_search"}]"#,
                "web_search_20250305",
            ),
        ] {
            let e = body(&format!(
                r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"x"}}],{extra}}}"#
            ))
            .unwrap_err();
            assert_eq!(e.status(), 422, "{extra}");
            assert!(e.to_string().contains(name), "{extra}: {e}");
        }
        let e = body(r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#).unwrap_err();
        assert_eq!(e.status(), 400);
        let e = body(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#)
            .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("messages[0].content[0]"), "{e}");
    }
}
