//! The OpenAI chat completions request, parsed for schemas that translate it.
//!
//! Passthrough schemas never parse this: they forward the client's bytes. Translating
//! schemas read the fields below; anything else the client sent is in `other`, so a
//! translator can tell a harmless unknown field from one it must refuse.
//!
//! # One decision per rule
//!
//! The rules marked *shared* are decided once, in [`ChatRequest::parse`], so every
//! translating schema answers the same input with the same status and message; the
//! others are each provider's mapping (its module documents the rest of its fields).
//!
//! | client field | Claude: `Anthropic`, `GCPAnthropic`, `AWSAnthropic` | `AWSBedrock` (Converse) | `GCPVertexAI` (Gemini) |
//! |---|---|---|---|
//! | `n` > 1 | shared: 422 | shared: 422 | shared: 422 |
//! | `logit_bias` | shared: `{}`/null dropped, else 422 | same | same |
//! | `modalities` | shared: `["text"]` dropped, `audio` 422, anything else 400 | same | same |
//! | a tool whose `type` is not `function` | shared: 422 naming the type | same | same |
//! | `tool_choice: "none"` | `{type: none}` | tools left out; 422 once the conversation holds tool calls | `mode: NONE` |
//! | `tool_choice: "auto"` | `{type: auto}` | `{auto: {}}` | `mode: AUTO` |
//! | `tool_choice: "required"` | `{type: any}` | `{any: {}}` | `mode: ANY` |
//! | `tool_choice` naming a function | `{type: tool, name}` | `{tool: {name}}` | `mode: ANY`, `allowedFunctionNames` |
//! | `tool_choice`: another string | shared: 400 naming it | same | same |
//! | `tool_choice`: an object of another type | shared: 422 naming the type | same | same |
//! | `tool_choice` required or named, no `tools` | shared: 400 | same | same |
//! | `reasoning_effort` | `thinking.budget_tokens` (`none`: no thinking) | `additionalModelRequestFields.thinking` (`none`: none) | `thinkingConfig.thinkingBudget` (`none`: 0) |
//! | `reasoning_effort`: another value | shared: 400 naming it | same | same |
//! | `thinking` (Anthropic's field: `enabled` with `budget_tokens`, or `disabled`) | `thinking` as that budget | `additionalModelRequestFields.thinking` | `thinkingConfig.thinkingBudget` |
//! | `thinking` with `reasoning_effort` | shared: 400 | same | same |
//! | thinking budget not below `max_(completion_)tokens` | shared: 422 | same | same |
//! | thinking without a client limit | `max_tokens` = 4096 + budget | the model's default | the model's default |
//! | `parallel_tool_calls: false` | `disable_parallel_tool_use` | 422 | dropped |
//! | `response_format: json_object` | 422 | 422 | `responseMimeType` |
//! | `response_format: json_schema` | 422 | `outputConfig.textFormat` | `responseJsonSchema` |
//! | `cache_control` on a text or image part (system parts too) | on that block, as sent | a `cachePoint` after it (`ephemeral`, 5m; else 422) | dropped (Gemini caches implicitly) |
//! | APIs other than chat | Messages served; others 422 ([`api_not_served`]) | embeddings, Messages served; others 422 | embeddings served; others 422 |
//!
//! Budgets per effort: minimal 1024, low 2048, medium 8192, high 24576
//! ([`ReasoningEffort::budget`]).
//!
//! # Reasoning round trips
//!
//! Reasoning round trips use two documented extension fields, the ones OpenAI-compatible
//! gateways and SDKs already use:
//! - `reasoning_content` (string) on an assistant message or stream delta: the provider's
//!   thinking text (ignored when sent back: without its signature no provider replays it);
//! - `thinking_blocks` on an assistant message: `[{"type":"thinking","thinking","signature"}]`
//!   or `[{"type":"redacted_thinking","data"}]`, sent back as received on the next turn;
//! - `extra_content.google.thought_signature` on a tool call (Google's own OpenAI
//!   compatibility field) carries Gemini's `thoughtSignature`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{ApiError, ApiKind, ClientRequest};

/// A chat request as the translating schemas read it: parsed, and with the rules every
/// translation shares (see the table above) already decided.
#[derive(Debug)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    /// Function tools; a tool of another kind is refused when parsing.
    pub tools: Vec<FunctionDef>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Anthropic's `thinking` field, which Claude clients send on OpenAI chat requests
    /// too (Envoy AI Gateway takes it): an explicit budget, or thinking off.
    pub thinking: Option<Thinking>,
    pub user: Option<String>,
    /// Everything else the client sent.
    pub other: Map<String, Value>,
}

/// The request as sent; [`ChatRequest::parse`] decides the shared rules over it.
#[derive(Debug, Deserialize)]
struct WireChatRequest {
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Stop>,
    seed: Option<i64>,
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<WireToolChoice>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<ResponseFormat>,
    reasoning_effort: Option<String>,
    thinking: Option<Value>,
    user: Option<String>,
    n: Option<u64>,
    logit_bias: Option<Map<String, Value>>,
    modalities: Option<Vec<String>>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl ChatRequest {
    /// Parses the client's chat body and decides the rules every translation shares: a
    /// shape error or an unknown value is the client's (400); what no translated
    /// provider can honour is 422, with the same message whichever schema serves it.
    pub fn parse(request: &ClientRequest) -> Result<Self, ApiError> {
        let wire: WireChatRequest = serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::BadRequest(format!("invalid chat completions request: {e}")))?;
        if let Some(n) = wire.n.filter(|n| *n > 1) {
            return Err(ApiError::Unprocessable(format!(
                "`n` = {n} is not supported for this model: its provider returns one choice per request; send one request per choice"
            )));
        }
        if wire.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(ApiError::Unprocessable(
                "`logit_bias` is not supported for this model: its token ids are those of OpenAI's tokenizers".into(),
            ));
        }
        for modality in wire.modalities.iter().flatten() {
            match modality.as_str() {
                "text" => {}
                "audio" => {
                    return Err(ApiError::Unprocessable(
                        "`modalities` other than text are not supported for this model: it answers in text".into(),
                    ))
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "`modalities` may hold text and audio; got `{other}`"
                    )))
                }
            }
        }
        let tools = wire
            .tools
            .unwrap_or_default()
            .into_iter()
            .map(WireTool::decide)
            .collect::<Result<Vec<_>, _>>()?;
        let tool_choice = wire.tool_choice.map(WireToolChoice::decide).transpose()?;
        if tools.is_empty() {
            if let Some(choice @ (ToolChoice::Required | ToolChoice::Function(_))) = &tool_choice {
                return Err(ApiError::BadRequest(format!(
                    "`tool_choice` {} needs `tools`, and none were given",
                    choice.describe()
                )));
            }
        }
        let reasoning_effort = wire
            .reasoning_effort
            .as_deref()
            .map(ReasoningEffort::parse)
            .transpose()?;
        let thinking = wire.thinking.as_ref().map(Thinking::parse).transpose()?;
        if thinking.is_some() && reasoning_effort.is_some() {
            return Err(ApiError::BadRequest(
                "send `reasoning_effort` or `thinking`, not both".into(),
            ));
        }
        let chat = ChatRequest {
            messages: wire.messages,
            stream: wire.stream,
            max_tokens: wire.max_tokens,
            max_completion_tokens: wire.max_completion_tokens,
            temperature: wire.temperature,
            top_p: wire.top_p,
            stop: wire.stop,
            seed: wire.seed,
            tools,
            tool_choice,
            parallel_tool_calls: wire.parallel_tool_calls,
            response_format: wire.response_format,
            reasoning_effort,
            thinking,
            user: wire.user,
            other: wire.other,
        };
        chat.check_thinking_budget()?;
        Ok(chat)
    }

    /// The output token limit the client set, under either name.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The thinking budget `thinking` or `reasoning_effort` asks for, if any.
    pub fn thinking_budget(&self) -> Option<u64> {
        match self.thinking {
            Some(Thinking::Budget(budget)) => Some(budget),
            Some(Thinking::Off) => None,
            None => self.reasoning_effort.and_then(ReasoningEffort::budget),
        }
    }

    /// Whether the client said anything about thinking (on or off).
    pub fn sets_thinking(&self) -> bool {
        self.thinking.is_some() || self.reasoning_effort.is_some()
    }

    /// Every provider counts thinking within the output limit: a budget that leaves no
    /// room for the answer is refused rather than sent (Claude answers 400, Gemini an
    /// empty answer). Without a client limit the schema picks one that fits.
    fn check_thinking_budget(&self) -> Result<(), ApiError> {
        let (Some(budget), Some(max)) = (self.thinking_budget(), self.max_output_tokens()) else {
            return Ok(());
        };
        if budget >= max {
            let (asked, lower) = match self.reasoning_effort {
                Some(effort) => (
                    format!("`reasoning_effort: {}` is", effort.as_str()),
                    "effort",
                ),
                None => ("`thinking` asks for".to_string(), "budget"),
            };
            return Err(ApiError::Unprocessable(format!(
                "{asked} a thinking budget of {budget} tokens, which must be below `max_completion_tokens` ({max}); raise the limit or lower the {lower}"
            )));
        }
        Ok(())
    }

    /// The stop sequences, as a list.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// Refuses fields in `other` that change the answer and that the provider cannot
    /// honour. null, false and 0 count as not set: SDKs send them as defaults.
    pub fn refuse_unsupported(&self, provider: &str, fields: &[&str]) -> Result<(), ApiError> {
        for field in fields {
            if self
                .other
                .get(*field)
                .is_some_and(|v| !v.is_null() && v != false && v.as_f64() != Some(0.0))
            {
                return Err(ApiError::Unprocessable(format!(
                    "`{field}` is not supported by {provider}"
                )));
            }
        }
        Ok(())
    }
}

/// Anthropic's `thinking` as sent on a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    Budget(u64),
    Off,
}

impl Thinking {
    pub fn parse(value: &Value) -> Result<Self, ApiError> {
        let shape = || {
            ApiError::BadRequest(
                "`thinking` must be {\"type\":\"enabled\",\"budget_tokens\":N} or {\"type\":\"disabled\"}".into(),
            )
        };
        match value.get("type").and_then(Value::as_str) {
            Some("disabled") => Ok(Thinking::Off),
            Some("enabled") => value
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .filter(|b| *b > 0)
                .map(Thinking::Budget)
                .ok_or_else(shape),
            _ => Err(shape()),
        }
    }
}

/// The 422 for a client API that `provider`'s schema does not serve; `served` lists the
/// ones it does.
pub fn api_not_served(provider: &str, api: ApiKind, served: &[ApiKind]) -> ApiError {
    let path = |api: ApiKind| match api {
        ApiKind::Messages => "Anthropic's /v1/messages".to_string(),
        ApiKind::Responses => "/v1/responses".to_string(),
        ApiKind::CountTokens => "Anthropic's /v1/messages/count_tokens".to_string(),
        other => format!("/v1/{}", other.openai_suffix()),
    };
    let served: Vec<String> = served.iter().copied().map(path).collect();
    ApiError::Unprocessable(format!(
        "{provider} does not serve {}; it serves {}",
        path(api),
        served.join(" and ")
    ))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub thinking_blocks: Vec<ThinkingBlock>,
}

impl Message {
    /// The text of the message's content (text parts joined), for roles that only take text.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(s)) => s.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The content as parts (a plain string is one text part).
    pub fn parts(&self) -> Vec<Part> {
        match &self.content {
            None => Vec::new(),
            Some(Content::Text(s)) if s.is_empty() => Vec::new(),
            Some(Content::Text(s)) => vec![Part::Text {
                text: s.clone(),
                cache_control: None,
            }],
            Some(Content::Parts(parts)) => parts.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
        /// Anthropic's prompt-caching mark, carried to the schemas that speak Messages.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ImageUrl {
        image_url: ImageUrl,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    InputAudio {
        #[allow(dead_code)]
        input_audio: Value,
    },
    File {
        #[allow(dead_code)]
        file: Value,
    },
    Refusal {
        refusal: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

/// An image, as a provider needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A `data:` URL: media type and base64 bytes.
    Inline { media_type: String, data: String },
    /// An http(s) URL, for providers that fetch it themselves.
    Url(String),
}

impl ImageUrl {
    /// Splits a data URL; anything else is a URL the provider must fetch.
    pub fn image(&self) -> Result<Image, ApiError> {
        let Some(rest) = self.url.strip_prefix("data:") else {
            if self.url.starts_with("https://") || self.url.starts_with("http://") {
                return Ok(Image::Url(self.url.clone()));
            }
            return Err(ApiError::BadRequest(
                "`image_url.url` must be an http(s) URL or a data URL".into(),
            ));
        };
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(ApiError::BadRequest(
                "malformed data URL in `image_url`".into(),
            ));
        };
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(ApiError::BadRequest(
                "data URLs in `image_url` must be base64-encoded".into(),
            ));
        };
        Ok(Image::Inline {
            media_type: media_type.to_string(),
            data: data.to_string(),
        })
    }
}

/// The 422 for an http image URL sent to a provider that takes only inline bytes (the
/// gateway never fetches URLs on a client's behalf).
pub fn inline_images_only(provider: &str) -> ApiError {
    ApiError::Unprocessable(format!(
        "{provider} takes images only as data URLs (data:image/...;base64,...); the gateway does not fetch image URLs"
    ))
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub function: FunctionCall,
    #[serde(default)]
    pub extra_content: Option<Value>,
}

impl ToolCall {
    /// Gemini's `thoughtSignature`, as returned to the client on this call.
    pub fn thought_signature(&self) -> Option<&str> {
        self.extra_content
            .as_ref()?
            .pointer("/google/thought_signature")?
            .as_str()
    }

    /// The arguments as JSON (an empty string is an empty object).
    pub fn arguments(&self) -> Result<Value, ApiError> {
        if self.function.arguments.trim().is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_str(&self.function.arguments).map_err(|e| {
            ApiError::BadRequest(format!(
                "tool call `{}` has arguments that are not JSON: {e}",
                self.id
            ))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingBlock {
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
}

/// A tool as sent: only `function` tools can be translated.
#[derive(Debug, Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: String,
    function: Option<FunctionDef>,
}

impl WireTool {
    fn decide(self) -> Result<FunctionDef, ApiError> {
        match (self.kind.as_str(), self.function) {
            ("function", Some(function)) => Ok(function),
            ("function", None) => Err(ApiError::BadRequest(
                "a `function` tool needs its `function` definition".into(),
            )),
            (kind, _) => Err(ApiError::Unprocessable(format!(
                "tools of type `{kind}` are not supported for this model; only `function` tools are"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
}

impl FunctionDef {
    /// The JSON schema of the parameters (an empty object schema when none was given).
    pub fn schema(&self) -> Value {
        self.parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))
    }
}

/// Which tools the model may or must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    /// This function, by name.
    Function(String),
}

impl ToolChoice {
    fn describe(&self) -> String {
        match self {
            ToolChoice::None => "`none`".into(),
            ToolChoice::Auto => "`auto`".into(),
            ToolChoice::Required => "`required`".into(),
            ToolChoice::Function(name) => format!("naming `{name}`"),
        }
    }
}

/// `tool_choice` as sent: a mode, or an object naming a function (or another kind).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireToolChoice {
    Mode(String),
    Object {
        #[serde(rename = "type")]
        kind: Option<String>,
        function: Option<NamedFunction>,
    },
}

impl WireToolChoice {
    fn decide(self) -> Result<ToolChoice, ApiError> {
        match self {
            WireToolChoice::Mode(mode) => match mode.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(ApiError::BadRequest(format!(
                    "`tool_choice` must be none, auto, required or a named function; got `{other}`"
                ))),
            },
            WireToolChoice::Object { kind, function } => match (kind.as_deref(), function) {
                (None | Some("function"), Some(f)) => Ok(ToolChoice::Function(f.name)),
                (None | Some("function"), None) => Err(ApiError::BadRequest(
                    "`tool_choice` of type `function` needs `function.name`".into(),
                )),
                (Some(kind), _) => Err(ApiError::Unprocessable(format!(
                    "`tool_choice` of type `{kind}` is not supported for this model; use none, auto, required or a named function"
                ))),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
struct NamedFunction {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchema },
}

#[derive(Debug, Deserialize)]
pub struct JsonSchema {
    pub name: String,
    pub schema: Option<Value>,
}

/// OpenAI's `reasoning_effort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningEffort {
    None,
    Minimal,
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    fn parse(effort: &str) -> Result<Self, ApiError> {
        match effort {
            "none" => Ok(ReasoningEffort::None),
            "minimal" => Ok(ReasoningEffort::Minimal),
            "low" => Ok(ReasoningEffort::Low),
            "medium" => Ok(ReasoningEffort::Medium),
            "high" => Ok(ReasoningEffort::High),
            other => Err(ApiError::BadRequest(format!(
                "`reasoning_effort` must be one of none, minimal, low, medium, high; got `{other}`"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::None => "none",
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }

    /// The effort as a thinking budget in tokens, for providers that take a budget; None
    /// for `none`. The figures follow the providers' guidance (Anthropic's minimum is 1024).
    pub fn budget(self) -> Option<u64> {
        match self {
            ReasoningEffort::None => None,
            ReasoningEffort::Minimal => Some(1024),
            ReasoningEffort::Low => Some(2048),
            ReasoningEffort::Medium => Some(8192),
            ReasoningEffort::High => Some(24576),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn parse(body: &str) -> Result<ChatRequest, ApiError> {
        let request =
            ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(body.to_string()))?;
        ChatRequest::parse(&request)
    }

    #[test]
    fn parses_parts_tools_and_extensions() {
        let r = parse(
            r#"{"model":"m","messages":[
              {"role":"developer","content":"be brief"},
              {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
              {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":""},"extra_content":{"google":{"thought_signature":"sig"}}}],
               "thinking_blocks":[{"type":"thinking","thinking":"hm","signature":"s1"}]},
              {"role":"tool","tool_call_id":"c1","content":"42"}],
              "stop":"END","tool_choice":{"type":"function","function":{"name":"f"}},
              "tools":[{"type":"function","function":{"name":"f"}}],
              "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},
              "metadata":{"a":"b"}}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].role, Role::Developer);
        let Part::ImageUrl { image_url, .. } = &r.messages[1].parts()[1] else {
            panic!()
        };
        assert_eq!(
            image_url.image().unwrap(),
            Image::Inline {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }
        );
        let call = &r.messages[2].tool_calls[0];
        assert_eq!(call.thought_signature(), Some("sig"));
        assert_eq!(call.arguments().unwrap(), serde_json::json!({}));
        assert_eq!(r.stop_sequences(), vec!["END".to_string()]);
        assert_eq!(r.tool_choice, Some(ToolChoice::Function("f".into())));
        assert_eq!(r.tools[0].name, "f");
        assert!(r.other.contains_key("metadata"));
    }

    #[test]
    fn bad_shapes_are_client_errors() {
        assert_eq!(parse(r#"{"model":"m"}"#).unwrap_err().status(), 400);
        assert_eq!(
            parse(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#)
                .unwrap_err()
                .status(),
            400
        );
    }

    fn refusal(extra: &str) -> (u16, String) {
        let e = parse(&format!(r#"{{"model":"m","messages":[],{extra}}}"#)).unwrap_err();
        (e.status(), e.to_string())
    }

    #[test]
    fn shared_rules_are_decided_when_parsing() {
        let cases = [
            (r#""n":2"#, 422, "`n` = 2"),
            (r#""logit_bias":{"50256":-100}"#, 422, "`logit_bias`"),
            (r#""modalities":["text","audio"]"#, 422, "`modalities`"),
            (r#""modalities":["smell"]"#, 400, "`smell`"),
            (
                r#""tools":[{"type":"custom","custom":{"name":"p"}}]"#,
                422,
                "`custom`",
            ),
            (r#""tools":[{"type":"function"}]"#, 400, "`function`"),
            (r#""tool_choice":"sometimes""#, 400, "`sometimes`"),
            (
                r#""tool_choice":{"type":"allowed_tools","allowed_tools":{}}"#,
                422,
                "`allowed_tools`",
            ),
            (r#""tool_choice":"required""#, 400, "needs `tools`"),
            (r#""reasoning_effort":"extreme""#, 400, "`extreme`"),
            (
                r#""reasoning_effort":"high","max_tokens":1000"#,
                422,
                "24576",
            ),
        ];
        for (extra, status, named) in cases {
            let (got, message) = refusal(extra);
            assert_eq!(got, status, "{extra}: {message}");
            assert!(message.contains(named), "{extra}: {message}");
        }
    }

    #[test]
    fn defaults_sdks_send_are_accepted() {
        let r = parse(
            r#"{"model":"m","messages":[],"n":1,"logit_bias":{},"modalities":["text"],
                "tool_choice":"auto","reasoning_effort":"medium","max_completion_tokens":9000}"#,
        )
        .unwrap();
        assert_eq!(r.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(r.thinking_budget(), Some(8192));
        assert!(!r.other.contains_key("logit_bias"));
        let r = parse(r#"{"model":"m","messages":[],"logit_bias":null,"reasoning_effort":"none","max_tokens":1}"#).unwrap();
        assert_eq!(r.reasoning_effort, Some(ReasoningEffort::None));
        assert_eq!(r.thinking_budget(), None);
    }
}
