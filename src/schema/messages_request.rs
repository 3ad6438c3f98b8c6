//! The Anthropic Messages request, parsed for the schemas that translate it (Bedrock's
//! Converse, OpenAI chat completions). Schemas that speak Messages forward the client's
//! bytes and never parse this. Blocks stay JSON values until a translator reads the
//! fields of their `type` with [`fields`], so an error names where the block sits.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{ApiError, ClientRequest};

#[derive(Deserialize)]
pub struct MessagesRequest {
    pub messages: Vec<InputMessage>,
    #[serde(default)]
    pub system: Option<Content>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u64>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default)]
    pub thinking: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Every other field, for each translator to drop or refuse by name.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Deserialize)]
pub struct InputMessage {
    pub role: String,
    pub content: Content,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Deserialize)]
pub struct ToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
pub struct CacheControl {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub ttl: Option<String>,
}

#[derive(Deserialize)]
pub struct TextBlock {
    pub text: String,
}

#[derive(Deserialize)]
pub struct ImageBlock {
    pub source: ImageSource,
}

#[derive(Deserialize)]
pub struct ImageSource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    /// A `url` source's address.
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Deserialize)]
pub struct ToolUseBlock {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub input: Value,
}

#[derive(Deserialize)]
pub struct ToolResultBlock {
    pub tool_use_id: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub is_error: Option<bool>,
}

#[derive(Deserialize)]
pub struct ThinkingBlock {
    pub thinking: String,
    #[serde(default)]
    pub signature: Option<String>,
}

#[derive(Deserialize)]
pub struct RedactedThinkingBlock {
    pub data: String,
}

#[derive(Deserialize)]
pub struct Tool {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Value>,
}

/// `metadata`: only `user_id` is defined.
#[derive(Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A Messages `tool_choice`, decided once for every translator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolMode {
    Auto,
    Any,
    None,
    Tool(String),
}

impl MessagesRequest {
    pub fn parse(request: &ClientRequest) -> Result<Self, ApiError> {
        serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::BadRequest(format!("invalid Messages request: {e}")))
    }

    /// `tool_choice`: its mode, and whether parallel tool calls are forbidden. An unknown
    /// type, a `tool` without a name, or `any`/`tool` without `tools` is the client's 400.
    pub fn tool_mode(&self) -> Result<Option<(ToolMode, bool)>, ApiError> {
        let Some(choice) = &self.tool_choice else {
            return Ok(None);
        };
        let mode = match choice.kind.as_str() {
            "auto" => ToolMode::Auto,
            "any" => ToolMode::Any,
            "none" => ToolMode::None,
            "tool" => ToolMode::Tool(choice.name.clone().ok_or_else(|| {
                ApiError::BadRequest("`tool_choice` of type `tool` needs a `name`".into())
            })?),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "`tool_choice.type` must be auto, any, tool or none; got `{other}`"
                )))
            }
        };
        let no_tools = self.tools.as_deref().unwrap_or_default().is_empty();
        if no_tools && matches!(mode, ToolMode::Any | ToolMode::Tool(_)) {
            return Err(ApiError::BadRequest(
                "`tool_choice` asks for a tool but no `tools` were given".into(),
            ));
        }
        Ok(Some((mode, choice.disable_parallel_tool_use == Some(true))))
    }

    /// The custom tools, each with its JSON (for per-tool fields such as
    /// `cache_control`); a server tool (any other `type`) is 422 for `provider`.
    pub fn custom_tools(&self, provider: &str) -> Result<Vec<(Tool, &Value)>, ApiError> {
        let tools = self.tools.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(tools.len());
        for (i, value) in tools.iter().enumerate() {
            let tool: Tool = fields(value, &format!("tools[{i}]"))?;
            if let Some(kind) = tool.kind.as_deref().filter(|k| *k != "custom") {
                return Err(ApiError::Unprocessable(format!(
                    "server tools (`{kind}`) are not supported by {provider}; only custom tools are"
                )));
            }
            out.push((tool, value));
        }
        Ok(out)
    }
}

impl Tool {
    /// The JSON Schema of the tool's input; an empty object's when it names none.
    pub fn schema(&mut self) -> Value {
        self.input_schema
            .take()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))
    }
}

/// Deserializes a block's fields, naming where it sits when they are wrong.
pub fn fields<T: DeserializeOwned>(block: &Value, at: &str) -> Result<T, ApiError> {
    T::deserialize(block).map_err(|e| ApiError::BadRequest(format!("invalid {at}: {e}")))
}

pub fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}
