//! Converse wire types: the unary answer, the ConverseStream events and token usage,
//! shared by the OpenAI and the Anthropic Messages translations.

use serde::Deserialize;
use serde_json::Value;

use crate::usage::Usage;

/// Bedrock's `TokenUsage`. `inputTokens` excludes cache reads and writes.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: Option<u64>,
    pub cache_read_input_tokens: u64,
    pub cache_write_input_tokens: u64,
}

impl TokenUsage {
    /// As the gateway counts: input includes cached input, as in OpenAI.
    pub fn to_usage(self) -> Usage {
        let input = self
            .input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_write_input_tokens);
        Usage {
            input,
            cached_input: self.cache_read_input_tokens,
            cache_creation_input: self.cache_write_input_tokens,
            output: self.output_tokens,
            reasoning: 0,
            total: self
                .total_tokens
                .unwrap_or_else(|| input.saturating_add(self.output_tokens)),
        }
    }
}

// ------------------------------------------------------------------ unary documents

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseOutput {
    pub output: OutputUnion,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<TokenUsage>,
    /// The fields asked for with `additionalModelResponseFieldPaths`.
    #[serde(default)]
    pub additional_model_response_fields: Option<Value>,
}

#[derive(Deserialize)]
pub struct OutputUnion {
    pub message: OutputMessage,
}

#[derive(Deserialize)]
pub struct OutputMessage {
    #[serde(default)]
    pub content: Vec<ContentBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlock {
    pub text: Option<String>,
    pub tool_use: Option<ToolUse>,
    pub reasoning_content: Option<ReasoningContent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    pub tool_use_id: String,
    pub name: String,
    #[serde(default)]
    pub input: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningContent {
    pub reasoning_text: Option<ReasoningText>,
    pub redacted_content: Option<String>,
}

#[derive(Deserialize)]
pub struct ReasoningText {
    #[serde(default)]
    pub text: String,
    pub signature: Option<String>,
}

// ------------------------------------------------------------------ stream events

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStart {
    #[serde(default)]
    pub content_block_index: u64,
    #[serde(default)]
    pub start: Option<StartUnion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartUnion {
    pub tool_use: Option<ToolUseStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseStart {
    pub tool_use_id: String,
    pub name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDelta {
    #[serde(default)]
    pub content_block_index: u64,
    pub delta: DeltaUnion,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaUnion {
    pub text: Option<String>,
    pub tool_use: Option<ToolUseDelta>,
    pub reasoning_content: Option<ReasoningDelta>,
}

#[derive(Deserialize)]
pub struct ToolUseDelta {
    #[serde(default)]
    pub input: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningDelta {
    pub text: Option<String>,
    pub signature: Option<String>,
    pub redacted_content: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStop {
    #[serde(default)]
    pub content_block_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStop {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub additional_model_response_fields: Option<Value>,
}

#[derive(Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub usage: Option<TokenUsage>,
}

/// Parses an event payload.
pub fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(payload)
}
