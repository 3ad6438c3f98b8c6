//! OpenAI chat completions → Gemini `GenerateContentRequest` (the body of Vertex AI's
//! `generateContent` and `streamGenerateContent`).
//!
//! The translation rules, field by field (the `GCPVertexAI` schema documents why):
//! - `system` and `developer` messages, wherever they stand → `systemInstruction.parts`
//!   (text), in order;
//! - `user` → a `user` turn: text → `text`, a data-URL image → `inlineData`, an http(s)
//!   image → `fileData{mimeType, fileUri}` (Vertex fetches it; the mime type comes from
//!   the URL's file extension, else 422), `input_audio` → `inlineData`, a `file` with
//!   `file_data` → `inlineData` (a `file_id` is 422: OpenAI's file store means nothing to Google);
//! - `assistant` → a `model` turn: text and refusal → `text`, each tool call →
//!   `functionCall{name, args}` carrying its `thoughtSignature` from
//!   `extra_content.google.thought_signature`; `reasoning_content` and `thinking_blocks`
//!   are not sent back (Gemini keeps its reasoning in the signatures);
//! - `tool` → `functionResponse{name, response}`: the name is the one of the earlier
//!   assistant tool call with that id, the response is the content when it is a JSON
//!   object, else `{"content": text}`; consecutive tool messages make one `user` turn;
//! - consecutive messages of one role are merged into one turn; empty messages are left out.
//! - `tools` → `functionDeclarations` with `parametersJsonSchema`; `tool_choice` →
//!   `toolConfig.functionCallingConfig` (none → NONE, auto → AUTO, required → ANY, a
//!   named function → ANY with `allowedFunctionNames`);
//! - `response_format` json_object → `responseMimeType: application/json`, json_schema →
//!   plus `responseJsonSchema`;
//! - `temperature`, `top_p`, `max_(completion_)tokens`, `stop`, `seed`,
//!   `frequency_penalty`, `presence_penalty` → `generationConfig`; `reasoning_effort` →
//!   `thinkingConfig{thinkingBudget, includeThoughts: true}` (`none` → budget 0).

use serde_json::{json, Map, Value};

use crate::api::ApiError;

use crate::schema::chat::{
    ChatRequest, Image, ImageUrl, Message, Part, ResponseFormat, Role, ToolChoice,
};

pub const PROVIDER: &str = "GCP Vertex AI";

/// Fields that change the answer and that Gemini cannot give an OpenAI client: refused
/// with 422 rather than silently ignored.
const REFUSED_FIELDS: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "audio",
    "prediction",
    "web_search_options",
    "functions",
    "function_call",
];

/// The Gemini request body for `chat`.
pub fn generate_content_request(chat: &ChatRequest) -> Result<Value, ApiError> {
    refuse_unsupported(chat)?;
    let mut body = Map::new();
    let contents = contents(&chat.messages)?;
    if contents.is_empty() {
        return Err(ApiError::BadRequest(
            "`messages` needs at least one user, assistant or tool message".into(),
        ));
    }
    body.insert("contents".into(), Value::Array(contents));
    if let Some(system) = system_instruction(&chat.messages) {
        body.insert("systemInstruction".into(), system);
    }
    if let Some(tools) = tools(chat) {
        body.insert("tools".into(), tools);
    }
    if let Some(tool_config) = tool_config(chat) {
        body.insert("toolConfig".into(), tool_config);
    }
    let generation_config = generation_config(chat)?;
    if !generation_config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation_config));
    }
    Ok(Value::Object(body))
}

fn refuse_unsupported(chat: &ChatRequest) -> Result<(), ApiError> {
    chat.refuse_unsupported(PROVIDER, REFUSED_FIELDS)
}

fn system_instruction(messages: &[Message]) -> Option<Value> {
    let parts: Vec<Value> = messages
        .iter()
        .filter(|m| matches!(m.role, Role::System | Role::Developer))
        .map(Message::text)
        .filter(|text| !text.is_empty())
        .map(|text| json!({ "text": text }))
        .collect();
    (!parts.is_empty()).then(|| json!({ "parts": parts }))
}

/// The kind of a turn; tool results and user input are both `user` turns to Gemini but
/// are not merged into one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    User,
    Model,
    FunctionResults,
}

impl Turn {
    fn role(self) -> &'static str {
        match self {
            Turn::Model => "model",
            Turn::User | Turn::FunctionResults => "user",
        }
    }
}

fn contents(messages: &[Message]) -> Result<Vec<Value>, ApiError> {
    let mut turns: Vec<(Turn, Vec<Value>)> = Vec::new();
    // Tool call id → function name, from the assistant messages seen so far (a later
    // call with a reused id wins, as a tool result answers the latest call).
    let mut call_names: Map<String, Value> = Map::new();
    for message in messages {
        let (turn, parts) = match message.role {
            Role::System | Role::Developer => continue,
            Role::User => (Turn::User, user_parts(message)?),
            Role::Assistant => {
                for call in &message.tool_calls {
                    call_names.insert(call.id.clone(), call.function.name.clone().into());
                }
                (Turn::Model, model_parts(message)?)
            }
            Role::Tool | Role::Function => (
                Turn::FunctionResults,
                vec![function_response(message, &call_names)?],
            ),
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == turn => existing.extend(parts),
            _ => turns.push((turn, parts)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(turn, parts)| json!({ "role": turn.role(), "parts": parts }))
        .collect())
}

fn user_parts(message: &Message) -> Result<Vec<Value>, ApiError> {
    message.parts().iter().map(user_part).collect()
}

fn user_part(part: &Part) -> Result<Value, ApiError> {
    match part {
        Part::Text { text, .. } | Part::Refusal { refusal: text } => Ok(json!({ "text": text })),
        Part::ImageUrl { image_url, .. } => image_part(image_url),
        Part::InputAudio { input_audio } => audio_part(input_audio),
        Part::File { file } => file_part(file),
    }
}

fn image_part(image_url: &ImageUrl) -> Result<Value, ApiError> {
    match image_url.image()? {
        Image::Inline { media_type, data } => Ok(inline_data(&media_type, &data)),
        Image::Url(url) => {
            let mime_type = image_mime_type(&url).ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "{PROVIDER} needs the image type of a URL image; use a URL ending in .png, .jpg, .jpeg, .webp, .heic or .heif, or send the image as a data URL"
                ))
            })?;
            Ok(json!({ "fileData": { "mimeType": mime_type, "fileUri": url } }))
        }
    }
}

/// The image type named by a URL's file extension (query and fragment ignored).
fn image_mime_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match extension.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "heic" => Some("image/heic"),
        "heif" => Some("image/heif"),
        _ => None,
    }
}

fn inline_data(mime_type: &str, data: &str) -> Value {
    json!({ "inlineData": { "mimeType": mime_type, "data": data } })
}

fn audio_part(input_audio: &Value) -> Result<Value, ApiError> {
    let data = input_audio.get("data").and_then(Value::as_str);
    let format = input_audio.get("format").and_then(Value::as_str);
    match (data, format) {
        (Some(data), Some(format @ ("wav" | "mp3"))) => {
            Ok(inline_data(&format!("audio/{format}"), data))
        }
        _ => Err(ApiError::BadRequest(
            "`input_audio` needs base64 `data` and a `format` of wav or mp3".into(),
        )),
    }
}

fn file_part(file: &Value) -> Result<Value, ApiError> {
    if let Some(data_url) = file.get("file_data").and_then(Value::as_str) {
        let image = ImageUrl {
            url: data_url.to_string(),
        }
        .image()?;
        if let Image::Inline { media_type, data } = image {
            return Ok(inline_data(&media_type, &data));
        }
    }
    Err(ApiError::Unprocessable(format!(
        "{PROVIDER} takes files only as `file_data` data URLs; `file_id` refers to OpenAI's file store"
    )))
}

fn model_parts(message: &Message) -> Result<Vec<Value>, ApiError> {
    let mut parts: Vec<Value> = message
        .parts()
        .iter()
        .filter_map(|part| match part {
            Part::Text { text, .. } | Part::Refusal { refusal: text } if !text.is_empty() => {
                Some(json!({ "text": text }))
            }
            _ => None,
        })
        .collect();
    for call in &message.tool_calls {
        let args = call.arguments()?;
        if !args.is_object() {
            return Err(ApiError::BadRequest(format!(
                "tool call `{}` has arguments that are not a JSON object",
                call.id
            )));
        }
        let mut part = json!({ "functionCall": { "name": call.function.name, "args": args } });
        if let Some(signature) = call.thought_signature() {
            part["thoughtSignature"] = signature.into();
        }
        parts.push(part);
    }
    Ok(parts)
}

fn function_response(
    message: &Message,
    call_names: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let name = match message.tool_call_id.as_deref() {
        Some(id) => call_names.get(id).cloned().ok_or_else(|| {
            ApiError::BadRequest(format!(
                "tool message answers `tool_call_id` {id:?}, which no earlier assistant message called"
            ))
        })?,
        // The legacy `function` role names the function itself.
        None => message.name.clone().map(Value::from).ok_or_else(|| {
            ApiError::BadRequest("a tool message needs `tool_call_id`".into())
        })?,
    };
    let text = message.text();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({ "content": text }),
    };
    Ok(json!({ "functionResponse": { "name": name, "response": response } }))
}

/// `parametersJsonSchema` takes the client's JSON Schema as it is; `parameters` takes
/// Google's OpenAPI subset, which would mean rewriting (and losing) parts of it.
fn tools(chat: &ChatRequest) -> Option<Value> {
    if chat.tools.is_empty() {
        return None;
    }
    let declarations: Vec<Value> = chat
        .tools
        .iter()
        .map(|tool| {
            let mut declaration = json!({
                "name": tool.name,
                "parametersJsonSchema": tool.schema(),
            });
            if let Some(description) = &tool.description {
                declaration["description"] = description.clone().into();
            }
            declaration
        })
        .collect();
    Some(json!([{ "functionDeclarations": declarations }]))
}

fn tool_config(chat: &ChatRequest) -> Option<Value> {
    let config = match chat.tool_choice.as_ref()? {
        ToolChoice::None => json!({ "mode": "NONE" }),
        ToolChoice::Auto => json!({ "mode": "AUTO" }),
        ToolChoice::Required => json!({ "mode": "ANY" }),
        ToolChoice::Function(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
    };
    Some(json!({ "functionCallingConfig": config }))
}

fn generation_config(chat: &ChatRequest) -> Result<Map<String, Value>, ApiError> {
    let mut config = Map::new();
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            config.insert(key.into(), v);
        }
    };
    set("temperature", chat.temperature.map(Value::from));
    set("topP", chat.top_p.map(Value::from));
    set("maxOutputTokens", chat.max_output_tokens().map(Value::from));
    set("seed", chat.seed.map(Value::from));
    let stop = chat.stop_sequences();
    set("stopSequences", (!stop.is_empty()).then(|| stop.into()));
    for (openai, gemini) in [
        ("frequency_penalty", "frequencyPenalty"),
        ("presence_penalty", "presencePenalty"),
    ] {
        set(
            gemini,
            chat.other.get(openai).filter(|v| v.is_number()).cloned(),
        );
    }
    match &chat.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            set("responseMimeType", Some("application/json".into()))
        }
        // `responseJsonSchema` takes JSON Schema as the client wrote it (`responseSchema`
        // is Google's OpenAPI subset, which rejects e.g. `additionalProperties`).
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            set("responseMimeType", Some("application/json".into()));
            set("responseJsonSchema", json_schema.schema.clone());
        }
    }
    // A budget not below the client's limit was refused when parsing.
    if chat.sets_thinking() {
        let thinking = match chat.thinking_budget() {
            Some(budget) => json!({ "thinkingBudget": budget, "includeThoughts": true }),
            None => json!({ "thinkingBudget": 0 }),
        };
        set("thinkingConfig", Some(thinking));
    }
    Ok(config)
}
