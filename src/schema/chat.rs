//! The OpenAI chat completions request, parsed for schemas that translate it.
//!
//! Passthrough schemas never parse this: they forward the client's bytes. Translating
//! schemas read the fields below; anything else the client sent is in `other`, so a
//! translator can tell a harmless unknown field from one it must refuse.
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

use crate::api::{ApiError, ClientRequest};

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning_effort: Option<String>,
    pub user: Option<String>,
    pub n: Option<u64>,
    /// Everything else the client sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ChatRequest {
    /// Parses the client's chat body; a shape error is the client's (400).
    pub fn parse(request: &ClientRequest) -> Result<Self, ApiError> {
        serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::BadRequest(format!("invalid chat completions request: {e}")))
    }

    /// The output token limit the client set, under either name.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The stop sequences, as a list.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// Refuses `n` > 1, which no translating provider can return in one answer.
    pub fn single_choice(&self, provider: &str) -> Result<(), ApiError> {
        match self.n {
            Some(n) if n > 1 => Err(ApiError::Unprocessable(format!(
                "`n` = {n} is not supported by {provider}; send one request per choice"
            ))),
            _ => Ok(()),
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
                    Part::Text { text } => Some(text.as_str()),
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
            Some(Content::Text(s)) => vec![Part::Text { text: s.clone() }],
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
    },
    ImageUrl {
        image_url: ImageUrl,
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

#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
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

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(String),
    Named {
        function: NamedFunction,
    },
}

#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    pub name: String,
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

/// A reasoning effort as a thinking budget in tokens, for providers that take a budget.
/// The figures follow the providers' guidance (Anthropic's minimum is 1024).
pub fn thinking_budget(effort: &str) -> Result<Option<u64>, ApiError> {
    match effort {
        "none" => Ok(None),
        "minimal" => Ok(Some(1024)),
        "low" => Ok(Some(2048)),
        "medium" => Ok(Some(8192)),
        "high" => Ok(Some(24576)),
        other => Err(ApiError::BadRequest(format!(
            "`reasoning_effort` must be one of none, minimal, low, medium, high; got `{other}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
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
              "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},
              "metadata":{"a":"b"}}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].role, Role::Developer);
        let Part::ImageUrl { image_url } = &r.messages[1].parts()[1] else {
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
        assert!(matches!(r.tool_choice, Some(ToolChoice::Named { .. })));
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
        let r = parse(r#"{"model":"m","messages":[],"n":2}"#).unwrap();
        assert_eq!(r.single_choice("X").unwrap_err().status(), 422);
    }
}
