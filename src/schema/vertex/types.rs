//! Gemini's `GenerateContentResponse`, as far as the translators read it, and the
//! mappings every Gemini translator shares: finish reasons, usage, tool call ids.
//!
//! Every field is optional: a provider answer that lacks one must not fail the parse.

use serde::Deserialize;
use serde_json::Value;

use crate::usage::Usage;

use crate::schema::completion::{FinishReason, ToolCallOut};
use crate::schema::vertex::error::GoogleError;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GenerateContentResponse {
    pub candidates: Vec<Candidate>,
    pub prompt_feedback: Option<PromptFeedback>,
    pub usage_metadata: Option<UsageMetadata>,
    pub model_version: Option<String>,
    pub response_id: Option<String>,
    pub create_time: Option<String>,
    /// An error reported inside a stream.
    pub error: Option<GoogleError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Candidate {
    pub content: Option<CandidateContent>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CandidateContent {
    pub parts: Vec<ResponsePart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResponsePart {
    pub text: Option<String>,
    /// The text is the model's thinking, not its answer.
    pub thought: bool,
    pub thought_signature: Option<String>,
    pub function_call: Option<FunctionCallPart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FunctionCallPart {
    pub id: Option<String>,
    pub name: String,
    pub args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PromptFeedback {
    pub block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageMetadata {
    pub prompt_token_count: u64,
    pub cached_content_token_count: u64,
    pub candidates_token_count: u64,
    pub thoughts_token_count: u64,
    pub total_token_count: Option<u64>,
}

impl UsageMetadata {
    /// OpenAI's reading: prompt tokens include the cached ones (as Gemini counts them);
    /// completion tokens include the thinking, reported again as reasoning tokens.
    pub fn usage(&self) -> Usage {
        let output = self
            .candidates_token_count
            .saturating_add(self.thoughts_token_count);
        Usage {
            input: self.prompt_token_count,
            cached_input: self.cached_content_token_count,
            cache_creation_input: 0,
            output,
            reasoning: self.thoughts_token_count,
            total: self
                .total_token_count
                .unwrap_or(self.prompt_token_count.saturating_add(output)),
        }
    }
}

impl GenerateContentResponse {
    /// The parts of the first (only) candidate.
    pub fn parts(&self) -> &[ResponsePart] {
        self.candidates
            .first()
            .and_then(|c| c.content.as_ref())
            .map_or(&[], |c| c.parts.as_slice())
    }

    /// Why the answer ended, when this response says so. A prompt blocked before any
    /// candidate was written is a content filter stop.
    pub fn finish(&self, has_tool_calls: bool) -> Option<FinishReason> {
        match self.candidates.first() {
            Some(candidate) => candidate
                .finish_reason
                .as_deref()
                .map(|reason| finish_reason(reason, has_tool_calls)),
            None => self
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_ref())
                .map(|_| FinishReason::ContentFilter),
        }
    }
}

/// Gemini's `finishReason` as OpenAI's. Reasons without an OpenAI counterpart
/// (MALFORMED_FUNCTION_CALL, OTHER ...) end the answer as `stop`.
pub fn finish_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => FinishReason::ContentFilter,
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Names the tool calls of one answer. Gemini usually gives calls no id; the ids made
/// here are unique per answer (they carry the response id) and stable for one answer.
#[derive(Debug)]
pub struct CallIds {
    answer: String,
    next: usize,
}

impl CallIds {
    pub fn new(response_id: Option<&str>) -> Self {
        let answer = response_id
            .filter(|id| {
                !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
        CallIds { answer, next: 0 }
    }

    /// The OpenAI tool call for a `functionCall` part.
    pub fn tool_call(&mut self, call: &FunctionCallPart, signature: Option<&str>) -> ToolCallOut {
        let id = call
            .id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("call_{}_{}", self.answer, self.next));
        self.next += 1;
        let arguments = match &call.args {
            Some(args @ Value::Object(_)) => args.to_string(),
            _ => "{}".to_string(),
        };
        ToolCallOut {
            id,
            name: call.name.clone(),
            arguments,
            thought_signature: signature.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason("STOP", false), FinishReason::Stop);
        assert_eq!(finish_reason("STOP", true), FinishReason::ToolCalls);
        assert_eq!(finish_reason("MAX_TOKENS", true), FinishReason::Length);
        for reason in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish_reason(reason, false), FinishReason::ContentFilter);
        }
        assert_eq!(
            finish_reason("MALFORMED_FUNCTION_CALL", false),
            FinishReason::Stop
        );
    }

    #[test]
    fn usage_counts_thoughts_as_output_and_cached_as_input() {
        let meta: UsageMetadata = serde_json::from_str(
            r#"{"promptTokenCount":100,"cachedContentTokenCount":60,"candidatesTokenCount":7,"thoughtsTokenCount":30,"totalTokenCount":137}"#,
        )
        .unwrap();
        assert_eq!(
            meta.usage(),
            Usage {
                input: 100,
                cached_input: 60,
                cache_creation_input: 0,
                output: 37,
                reasoning: 30,
                total: 137
            }
        );
    }

    #[test]
    fn call_ids_are_stable_per_answer() {
        let call = FunctionCallPart {
            id: None,
            name: "f".into(),
            args: None,
        };
        let mut ids = CallIds::new(Some("resp1"));
        assert_eq!(ids.tool_call(&call, None).id, "call_resp1_0");
        let second = ids.tool_call(&call, Some("sig"));
        assert_eq!(
            (second.id.as_str(), second.arguments.as_str()),
            ("call_resp1_1", "{}")
        );
        assert_eq!(second.thought_signature.as_deref(), Some("sig"));
        let odd = CallIds::new(Some("a/b")).tool_call(&call, None).id;
        assert!(odd.starts_with("call_") && !odd.contains('/'));
    }
}
