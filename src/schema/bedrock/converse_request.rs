//! An OpenAI chat request as a Converse request body (rules in the parent module).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::ApiError;
use crate::schema::chat::{
    self, ChatRequest, Image, Message, Part, ResponseFormat, Role, ThinkingBlock, ToolChoice,
};
use crate::schema::messages_request::CacheControl;

use super::PROVIDER;

/// The Converse body for `chat`.
pub fn converse_body(chat: &ChatRequest) -> Result<Value, ApiError> {
    refuse_unsupported(chat)?;
    let Conversation {
        system,
        turns,
        holds_tool_blocks,
    } = Conversation::from_messages(&chat.messages)?;
    let mut body = Map::new();
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), messages_json(turns));
    if let Some(tool_config) = tool_config(chat, holds_tool_blocks)? {
        body.insert("toolConfig".into(), tool_config);
    }
    let inference = inference_config(chat);
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(thinking) = thinking(chat) {
        body.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": thinking}),
        );
    }
    if let Some(output) = output_config(chat)? {
        body.insert("outputConfig".into(), output);
    }
    Ok(Value::Object(body))
}

fn unsupported(field: &str) -> ApiError {
    ApiError::Unprocessable(format!("`{field}` is not supported by {PROVIDER}"))
}

/// Refuses what changes the answer and has no Converse equivalent.
fn refuse_unsupported(chat: &ChatRequest) -> Result<(), ApiError> {
    chat.refuse_unsupported(
        PROVIDER,
        &[
            "logprobs",
            "audio",
            "web_search_options",
            "functions",
            "function_call",
        ],
    )?;
    let other = |k: &str| chat.other.get(k).filter(|v| !v.is_null());
    let nonzero = |k: &str| other(k).and_then(Value::as_f64).is_some_and(|n| n != 0.0);
    for field in ["top_logprobs", "frequency_penalty", "presence_penalty"] {
        if nonzero(field) {
            return Err(unsupported(field));
        }
    }
    if !chat.tools.is_empty() && chat.parallel_tool_calls == Some(false) {
        return Err(ApiError::Unprocessable(format!(
            "`parallel_tool_calls: false` is not supported by {PROVIDER}: Converse cannot forbid parallel tool calls"
        )));
    }
    Ok(())
}

/// The system blocks and the alternating user/assistant turns.
#[derive(Default)]
struct Conversation {
    system: Vec<Value>,
    turns: Vec<(&'static str, Vec<Value>)>,
    holds_tool_blocks: bool,
}

impl Conversation {
    fn from_messages(messages: &[Message]) -> Result<Self, ApiError> {
        let mut c = Conversation::default();
        for message in messages {
            match message.role {
                Role::System | Role::Developer => {
                    for part in message.parts() {
                        if let Part::Text {
                            text,
                            cache_control,
                        } = part
                        {
                            c.system.extend(text_block(&text));
                            c.system
                                .extend(cache_point_after(cache_control.as_ref(), "system")?);
                        }
                    }
                }
                Role::User => c.push("user", user_blocks(message)?),
                Role::Assistant => {
                    c.holds_tool_blocks |= !message.tool_calls.is_empty();
                    c.push("assistant", assistant_blocks(message)?);
                }
                Role::Tool => {
                    c.holds_tool_blocks = true;
                    c.push("user", vec![tool_result_block(message)?]);
                }
                Role::Function => {
                    return Err(ApiError::Unprocessable(format!(
                        "`function` role messages (the legacy functions API) are not supported by {PROVIDER}; use tools"
                    )))
                }
            }
        }
        Ok(c)
    }

    /// Appends a turn, merging it into the previous one of the same role.
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }
}

fn messages_json(turns: Vec<(&'static str, Vec<Value>)>) -> Value {
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({ "text": text }))
}

fn user_blocks(message: &Message) -> Result<Vec<Value>, ApiError> {
    let mut blocks = Vec::new();
    for part in message.parts() {
        match part {
            Part::Text {
                text,
                cache_control,
            } => {
                blocks.extend(text_block(&text));
                blocks.extend(cache_point_after(cache_control.as_ref(), "content")?);
            }
            Part::Refusal { refusal } => blocks.extend(text_block(&refusal)),
            Part::ImageUrl {
                image_url,
                cache_control,
            } => {
                blocks.push(image_block(image_url.image()?)?);
                blocks.extend(cache_point_after(cache_control.as_ref(), "content")?);
            }
            Part::InputAudio { .. } => return Err(unsupported("input_audio")),
            Part::File { .. } => return Err(unsupported("file")),
        }
    }
    Ok(blocks)
}

fn image_block(image: Image) -> Result<Value, ApiError> {
    match image {
        Image::Inline { media_type, data } => converse_image(&media_type, &data),
        Image::Url(_) => Err(chat::inline_images_only(PROVIDER)),
    }
}

/// The Converse `cachePoint` for an Anthropic-style `cache_control` mark at `at`: only
/// `ephemeral` with Bedrock's five-minute lifetime exists there, anything else is 422.
pub(super) fn cache_point(control: &Value, at: &str) -> Result<Value, ApiError> {
    let control: CacheControl = CacheControl::deserialize(control)
        .map_err(|e| ApiError::BadRequest(format!("invalid {at}.cache_control: {e}")))?;
    let refused = |what: String| {
        ApiError::Unprocessable(format!(
            "`{what}` is not supported by {PROVIDER} (Converse)"
        ))
    };
    if control.kind != "ephemeral" {
        return Err(refused(format!("cache_control type {}", control.kind)));
    }
    if control.ttl.as_deref().is_some_and(|t| t != "5m") {
        return Err(refused("cache_control.ttl other than 5m".into()));
    }
    Ok(json!({"cachePoint": {"type": "default"}}))
}

/// The cache point after a part the client marked, if it did.
fn cache_point_after(control: Option<&Value>, at: &str) -> Result<Option<Value>, ApiError> {
    control
        .filter(|c| !c.is_null())
        .map(|c| cache_point(c, at))
        .transpose()
}

/// A Converse image block from base64 bytes; Converse takes four formats.
pub(super) fn converse_image(media_type: &str, data: &str) -> Result<Value, ApiError> {
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(ApiError::Unprocessable(format!(
                "{PROVIDER} takes png, jpeg, gif and webp images; got `{other}`"
            )))
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn assistant_blocks(message: &Message) -> Result<Vec<Value>, ApiError> {
    let mut blocks: Vec<Value> = message
        .thinking_blocks
        .iter()
        .filter_map(reasoning_block)
        .collect();
    for part in message.parts() {
        match part {
            Part::Text { text, .. } | Part::Refusal { refusal: text } => {
                blocks.extend(text_block(&text));
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "assistant messages may hold only text and refusal parts".into(),
                ))
            }
        }
    }
    for call in &message.tool_calls {
        blocks.push(json!({"toolUse": {
            "toolUseId": call.id,
            "name": call.function.name,
            "input": call.arguments()?,
        }}));
    }
    Ok(blocks)
}

/// A thinking block to replay; unsigned thinking is dropped, as the model refuses it.
fn reasoning_block(block: &ThinkingBlock) -> Option<Value> {
    match block {
        ThinkingBlock::Thinking {
            thinking,
            signature: Some(signature),
        } => Some(
            json!({"reasoningContent": {"reasoningText": {"text": thinking, "signature": signature}}}),
        ),
        ThinkingBlock::Thinking { .. } => None,
        ThinkingBlock::RedactedThinking { data } => {
            Some(json!({"reasoningContent": {"redactedContent": data}}))
        }
    }
}

fn tool_result_block(message: &Message) -> Result<Value, ApiError> {
    let id = message
        .tool_call_id
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("a `tool` message needs its `tool_call_id`".into()))?;
    Ok(json!({"toolResult": {
        "toolUseId": id,
        "content": [{"text": message.text()}],
    }}))
}

fn tool_config(chat: &ChatRequest, holds_tool_blocks: bool) -> Result<Option<Value>, ApiError> {
    // `required` or a named tool without `tools` was refused when parsing.
    let choice = match &chat.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"auto": {}})),
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::None) => return tools_left_out(holds_tool_blocks),
        Some(ToolChoice::Function(name)) => Some(json!({"tool": {"name": name}})),
    };
    if chat.tools.is_empty() {
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(chat.tools.len());
    for tool in &chat.tools {
        let mut spec = json!({
            "name": tool.name,
            "inputSchema": {"json": tool.schema()},
        });
        if let Some(description) = tool.description.as_deref() {
            spec["description"] = description.into();
        }
        specs.push(json!({ "toolSpec": spec }));
    }
    let mut config = json!({ "tools": specs });
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

/// `tool_choice: none`: Converse has no such mode, so the tools are not sent; that is
/// only possible when no tool blocks are in the conversation.
fn tools_left_out(holds_tool_blocks: bool) -> Result<Option<Value>, ApiError> {
    if holds_tool_blocks {
        return Err(ApiError::Unprocessable(format!(
            "`tool_choice: none` is not supported by {PROVIDER} once the conversation holds tool calls; use `auto`"
        )));
    }
    Ok(None)
}

fn inference_config(chat: &ChatRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(max) = chat.max_output_tokens() {
        config.insert("maxTokens".into(), max.into());
    }
    if let Some(t) = chat.temperature {
        config.insert("temperature".into(), t.into());
    }
    if let Some(p) = chat.top_p {
        config.insert("topP".into(), p.into());
    }
    let stop = chat.stop_sequences();
    if !stop.is_empty() {
        config.insert("stopSequences".into(), stop.into());
    }
    config
}

/// The thinking budget; one not below the client's limit was refused when parsing.
/// Without a client limit the model's default applies (as the recording shows).
fn thinking(chat: &ChatRequest) -> Option<Value> {
    let budget = chat.thinking_budget()?;
    Some(json!({"type": "enabled", "budget_tokens": budget}))
}

fn output_config(chat: &ChatRequest) -> Result<Option<Value>, ApiError> {
    match &chat.response_format {
        None | Some(ResponseFormat::Text) => Ok(None),
        Some(ResponseFormat::JsonObject) => Err(ApiError::Unprocessable(format!(
            "`response_format: json_object` is not supported by {PROVIDER}; use `json_schema`"
        ))),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema.schema.as_ref().ok_or_else(|| {
                ApiError::BadRequest("`response_format.json_schema.schema` is missing".into())
            })?;
            // Converse takes the schema as a JSON string.
            Ok(Some(json!({"textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {
                    "name": json_schema.name,
                    "schema": schema.to_string(),
                }},
            }})))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKind, ClientRequest};
    use crate::schema::fixtures::load;
    use bytes::Bytes;

    fn body(request: &str) -> Result<Value, ApiError> {
        let r = ClientRequest::parse(
            ApiKind::ChatCompletions,
            Bytes::copy_from_slice(request.as_bytes()),
        )?;
        converse_body(&ChatRequest::parse(&r)?)
    }

    #[test]
    fn rich_request_has_the_converse_shape() {
        let b = body(
            r#"{"model":"m","messages":[
              {"role":"system","content":"You are terse."},
              {"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
              {"role":"user","content":[{"type":"text","text":"What is this?"},
                 {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},
              {"role":"user","content":"And the weather in Paris?"},
              {"role":"assistant","content":"Let me check.",
               "thinking_blocks":[{"type":"thinking","thinking":"need tools","signature":"sig1"},
                                  {"type":"redacted_thinking","data":"UkVE"}],
               "tool_calls":[
                 {"id":"tu1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                 {"id":"tu2","type":"function","function":{"name":"time","arguments":""}}]},
              {"role":"tool","tool_call_id":"tu1","content":"18C"},
              {"role":"tool","tool_call_id":"tu2","content":"noon"},
              {"role":"assistant","content":"18C at noon."},
              {"role":"user","content":"Thanks"}],
              "tools":[{"type":"function","function":{"name":"weather","description":"Weather by city",
                 "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
                 {"type":"function","function":{"name":"time"}}],
              "tool_choice":"required",
              "stop":["END","STOP"],"temperature":0.2,"top_p":0.9,"max_completion_tokens":300,
              "max_tokens":100,"seed":7,"user":"u1","stream_options":{"include_usage":true},
              "parallel_tool_calls":true,"metadata":{"a":"b"}}"#,
        )
        .unwrap();
        let expected = json!({
            "system": [{"text": "You are terse."}, {"text": "Answer in French."}],
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
                    {"toolResult": {"toolUseId": "tu2", "content": [{"text": "noon"}]}}]},
                {"role": "assistant", "content": [{"text": "18C at noon."}]},
                {"role": "user", "content": [{"text": "Thanks"}]}],
            "toolConfig": {
                "tools": [
                    {"toolSpec": {"name": "weather", "description": "Weather by city",
                        "inputSchema": {"json": {"type": "object",
                            "properties": {"city": {"type": "string"}}, "required": ["city"]}}}},
                    {"toolSpec": {"name": "time",
                        "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
                "toolChoice": {"any": {}}},
            "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9,
                "stopSequences": ["END", "STOP"]},
        });
        assert_eq!(b, expected);
    }

    #[test]
    fn recorded_tool_request_is_reproduced() {
        let recorded = load("bedrock/converse-stream-tool-use.json");
        let b = body(
            r#"{"model":"m","stream":true,"max_tokens":300,"temperature":0.5,
              "messages":[{"role":"user","content":"What is the weather in Barcelona?"}],
              "tools":[{"type":"function","function":{"name":"get_weather",
                "description":"Get the current weather for a location",
                "parameters":{"type":"object","properties":{"location":{"type":"string","description":"The city name"}},"required":["location"]}}}]}"#,
        )
        .unwrap();
        assert_eq!(b, recorded["request"]["body"]);
    }

    #[test]
    fn reasoning_effort_becomes_a_thinking_budget() {
        let recorded = load("bedrock/converse-stream-reasoning.json");
        let b = body(
            r#"{"model":"m","reasoning_effort":"minimal","messages":[{"role":"user","content":"Hello"}]}"#,
        )
        .unwrap();
        assert_eq!(
            b["additionalModelRequestFields"],
            recorded["request"]["body"]["additionalModelRequestFields"]
        );
        let b = body(
            r#"{"model":"m","reasoning_effort":"none","messages":[{"role":"user","content":"Hello"}]}"#,
        )
        .unwrap();
        assert!(b.get("additionalModelRequestFields").is_none());
        let e = body(
            r#"{"model":"m","reasoning_effort":"high","max_tokens":1000,"messages":[{"role":"user","content":"Hello"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 422);
    }

    #[test]
    fn tool_choice_modes() {
        let with = |choice: &str| {
            body(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],
                  "tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":{choice}}}"#
            ))
        };
        assert_eq!(
            with(r#""auto""#).unwrap()["toolConfig"]["toolChoice"],
            json!({"auto": {}})
        );
        assert_eq!(
            with(r#"{"type":"function","function":{"name":"f"}}"#).unwrap()["toolConfig"]
                ["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        assert!(with(r#""none""#).unwrap().get("toolConfig").is_none());
        let none_after_tools = body(
            r#"{"model":"m","tool_choice":"none","tools":[{"type":"function","function":{"name":"f"}}],
              "messages":[{"role":"user","content":"x"},
              {"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]},
              {"role":"tool","tool_call_id":"a","content":"1"}]}"#,
        );
        assert_eq!(none_after_tools.unwrap_err().status(), 422);
    }

    #[test]
    fn json_schema_becomes_structured_output() {
        let b = body(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],
              "response_format":{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            b["outputConfig"],
            json!({"textFormat": {"type": "json_schema",
                "structure": {"jsonSchema": {"name": "answer", "schema": "{\"type\":\"object\"}"}}}})
        );
    }

    #[test]
    fn unsupported_parameters_are_422_naming_them() {
        for (extra, name) in [
            (r#""n":2"#, "`n`"),
            (r#""logprobs":true"#, "logprobs"),
            (r#""top_logprobs":3"#, "top_logprobs"),
            (r#""frequency_penalty":0.5"#, "frequency_penalty"),
            (r#""presence_penalty":-1"#, "presence_penalty"),
            (r#""logit_bias":{"50256":-100}"#, "logit_bias"),
            (r#""modalities":["text","audio"]"#, "modalities"),
            (r#""response_format":{"type":"json_object"}"#, "json_object"),
            (
                r#""parallel_tool_calls":false,"tools":[{"type":"function","function":{"name":"f"}}]"#,
                "parallel_tool_calls",
            ),
        ] {
            let e = body(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{extra}}}"#
            ))
            .unwrap_err();
            assert_eq!(e.status(), 422, "{extra}");
            assert!(e.to_string().contains(name), "{extra}: {e}");
        }
        for harmless in [
            r#""frequency_penalty":0"#,
            r#""logprobs":false"#,
            r#""modalities":["text"]"#,
            r#""seed":1,"user":"u","store":true,"service_tier":"auto""#,
        ] {
            let b = body(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{harmless}}}"#
            ))
            .unwrap();
            assert_eq!(b.as_object().unwrap().len(), 1, "{harmless}: {b}");
        }
    }

    #[test]
    fn image_urls_and_other_media_are_refused() {
        let with_part = |part: &str| {
            body(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{part}]}}]}}"#
            ))
        };
        let e =
            with_part(r#"{"type":"image_url","image_url":{"url":"https://x/y.png"}}"#).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.to_string().contains("AWS Bedrock"));
        let e =
            with_part(r#"{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AA=="}}"#)
                .unwrap_err();
        assert_eq!(e.status(), 422);
        let e = with_part(r#"{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("input_audio"));
        let b =
            with_part(r#"{"type":"image_url","image_url":{"url":"data:image/JPEG;base64,AA=="}}"#)
                .unwrap();
        assert_eq!(b["messages"][0]["content"][0]["image"]["format"], "jpeg");
    }
}
