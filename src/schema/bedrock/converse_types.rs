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

/// One ConverseStream event, named by its event-stream `:event-type` header: parsed once,
/// here, for both translations of ConverseStream (OpenAI chunks and Anthropic SSE).
#[derive(Debug)]
pub enum ConverseEvent {
    MessageStart,
    ContentBlockStart(BlockStart),
    ContentBlockDelta(BlockDelta),
    ContentBlockStop(BlockStop),
    MessageStop(MessageStop),
    Metadata(Metadata),
    /// An event added after this gateway was written (e.g. server tool traces).
    Unknown,
}

impl ConverseEvent {
    /// The event `name` with its JSON `payload`; a payload that does not fit is an error.
    pub fn parse(name: &str, payload: &[u8]) -> Result<Self, serde_json::Error> {
        use serde_json::from_slice as json;
        Ok(match name {
            "messageStart" => ConverseEvent::MessageStart,
            "contentBlockStart" => ConverseEvent::ContentBlockStart(json(payload)?),
            "contentBlockDelta" => ConverseEvent::ContentBlockDelta(json(payload)?),
            "contentBlockStop" => ConverseEvent::ContentBlockStop(json(payload)?),
            "messageStop" => ConverseEvent::MessageStop(json(payload)?),
            "metadata" => ConverseEvent::Metadata(json(payload)?),
            _ => ConverseEvent::Unknown,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStart {
    #[serde(default)]
    pub content_block_index: u64,
    #[serde(default)]
    pub start: Option<StartUnion>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartUnion {
    pub tool_use: Option<ToolUseStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseStart {
    pub tool_use_id: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDelta {
    #[serde(default)]
    pub content_block_index: u64,
    pub delta: DeltaUnion,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaUnion {
    pub text: Option<String>,
    pub tool_use: Option<ToolUseDelta>,
    pub reasoning_content: Option<ReasoningDelta>,
}

#[derive(Debug, Deserialize)]
pub struct ToolUseDelta {
    #[serde(default)]
    pub input: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningDelta {
    pub text: Option<String>,
    pub signature: Option<String>,
    pub redacted_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStop {
    #[serde(default)]
    pub content_block_index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStop {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub additional_model_response_fields: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub usage: Option<TokenUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::aws_eventstream::EventStreamDecoder;
    use crate::schema::fixtures::recorded_body;

    #[test]
    fn every_recorded_stream_event_is_known() {
        for fixture in [
            "bedrock/converse-stream-tool-use.json",
            "bedrock/converse-stream-cache-usage.json",
            "bedrock/converse-stream-reasoning.json",
        ] {
            let mut decoder = EventStreamDecoder::new();
            for frame in decoder.push(&recorded_body(fixture)) {
                let frame = frame.unwrap();
                let event = ConverseEvent::parse(&frame.name, &frame.payload).unwrap();
                assert!(
                    !matches!(event, ConverseEvent::Unknown),
                    "{fixture}: {frame:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_events_pass_and_bad_payloads_are_errors() {
        assert!(matches!(
            ConverseEvent::parse("toolTrace", b"{}").unwrap(),
            ConverseEvent::Unknown
        ));
        assert!(ConverseEvent::parse("contentBlockDelta", b"{\"delta\":1}").is_err());
    }
}
