//! The `AWSBedrock` schema: OpenAI chat completions and Anthropic Messages on the
//! Converse API, and OpenAI embeddings on Amazon Titan text embeddings. Credentials (SigV4) are added later by
//! the backend's credential, over the body and path built here.
//!
//! # Paths
//! - chat and Anthropic Messages: `POST /model/{modelId}/converse`, or
//!   `/converse-stream` when `stream` is set (Messages rules in [`messages_request`],
//!   answers in [`messages_response`] and [`messages_stream`]);
//! - embeddings: `POST /model/{modelId}/invoke` with a Titan body;
//! - legacy completions (`/v1/completions`): 422, Bedrock has no such API
//!   ([`super::chat::api_not_served`]).
//!
//! `{modelId}` is the backend's `modelNameOverride` or the request's `model`,
//! percent-encoded as one path segment the way the AWS SDKs do it (an inference-profile
//! ARN becomes `arn%3Aaws%3Abedrock%3A...%2F...`). The body is always replaced.
//!
//! # Chat request rules
//! - `system` and `developer` messages become `system` text blocks, in order, wherever
//!   they appear in the conversation.
//! - Consecutive messages of the same Converse role are merged (Converse requires turns
//!   to alternate); `tool` messages become user `toolResult` blocks, so a run of tool
//!   results and a following user message form one user turn.
//! - Images: a `data:` URL becomes an `image` block (png, jpeg, gif, webp; any other
//!   media type is 422); an http(s) URL is 422 (the gateway never fetches URLs).
//!   `input_audio` and `file` parts are 422.
//! - Assistant `thinking_blocks` come first in the assistant turn as `reasoningContent`;
//!   `reasoning_content` without `thinking_blocks` is dropped (Converse needs the
//!   signature to replay reasoning). Assistant `tool_calls` become `toolUse` blocks.
//! - `n`, `logit_bias`, `modalities`, tool kinds, `tool_choice` modes and the thinking
//!   budget follow the shared rules of [`crate::schema::chat`].
//! - `tools` become `toolConfig.tools[].toolSpec`.
//! - `tool_choice`: `auto` → `{auto:{}}`, `required` → `{any:{}}`, a named function →
//!   `{tool:{name}}`. Converse has no `none`: with `none` the tools are left out of the
//!   request, which is 422 when the conversation already holds tool calls or results
//!   (Converse rejects tool blocks without a `toolConfig`).
//! - `max_completion_tokens` (or `max_tokens`), `temperature`, `top_p`, `stop` →
//!   `inferenceConfig`.
//! - `reasoning_effort` → `additionalModelRequestFields.thinking` with the budget of
//!   [`super::chat::ReasoningEffort::budget`]; `none` sends no thinking.
//! - `response_format`: `text` is dropped; `json_schema` → `outputConfig.textFormat`
//!   (Bedrock structured outputs); `json_object` is 422 (Converse has no schema-less
//!   JSON mode).
//! - 422: `logprobs: true`, `top_logprobs` > 0, non-zero `frequency_penalty` or
//!   `presence_penalty`, `audio`, `web_search_options`, the legacy `functions` / `function_call`, `function` role
//!   messages, and `parallel_tool_calls: false` with tools (Converse cannot forbid
//!   parallel calls).
//! - Dropped, harmless: `seed` (best-effort in OpenAI too), `user`, `metadata`, `store`,
//!   `service_tier`, `prediction`, `stream_options`, `parallel_tool_calls: true`, message
//!   `name`, and any other unknown field. Nothing OpenAI-only is forwarded.
//!
//! # Embeddings request rules
//! `input` must be one string (or an array of exactly one string): Titan embeds one text
//! per call, so several inputs or token arrays are 422. `dimensions` is sent with
//! `normalize: true` (Titan v2); for a model id naming Titan v1 only 1536 is accepted.
//! `encoding_format: base64` is honoured on the way back; `user` is dropped.
//!
//! # Responses
//! Converse answers become `chat.completion` (unary) or `chat.completion.chunk` SSE
//! (stream, decoded from the AWS event stream). Bedrock's `inputTokens` excludes
//! cache reads and writes (the recorded `totalTokens` is their sum with `outputTokens`),
//! so `prompt_tokens` = `inputTokens` + `cacheReadInputTokens` + `cacheWriteInputTokens`,
//! with `cached_tokens` = cache reads. The completion id is generated, `created` is now,
//! and `model` is the client's. Bedrock errors (`{"message"}` plus `x-amzn-errortype`)
//! become OpenAI error bodies with the AWS error type as `code`.

mod anthropic_invoke;
mod converse_request;
mod converse_response;
mod converse_stream;
mod converse_types;
pub(crate) mod errors;
mod messages_fields;
mod messages_request;
mod messages_response;
mod messages_stream;
mod titan_embeddings;

pub use anthropic_invoke::AwsAnthropic;

use std::sync::Arc;

use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;
use crate::schema::anthropic::count_tokens::{self, CountTokensAnswer, Hosting};

use super::chat::{api_not_served, ChatRequest};
use super::path_segment;
use super::{BackendSchema, ResponseTranslator, UpstreamRequest};

/// The provider's name in client-facing messages.
const PROVIDER: &str = "AWS Bedrock";

#[derive(Debug)]
pub struct Bedrock;

impl Bedrock {
    pub fn build(_spec: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        Ok(Arc::new(Bedrock))
    }
}

impl BackendSchema for Bedrock {
    fn provider_name(&self) -> &'static str {
        "aws.bedrock"
    }

    fn upstream_request(
        &self,
        request: &ClientRequest,
        model_override: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        if request.api == ApiKind::Responses {
            return crate::schema::responses::upstream_request(self, request, model_override);
        }
        let model = path_segment(model_override.unwrap_or(&request.model));
        let converse = if request.stream {
            "converse-stream"
        } else {
            "converse"
        };
        let (path, body) = match request.api {
            ApiKind::ChatCompletions => {
                let chat = ChatRequest::parse(request)?;
                (
                    format!("/model/{model}/{converse}"),
                    converse_request::converse_body(&chat)?,
                )
            }
            ApiKind::Messages => (
                format!("/model/{model}/{converse}"),
                messages_request::converse_body(request)?,
            ),
            ApiKind::CountTokens => {
                let converse = messages_request::converse_body(request)?;
                let body = count_tokens::bedrock_converse_body(&converse);
                return Ok(UpstreamRequest::json(
                    format!("/model/{model}/count-tokens"),
                    body,
                ));
            }
            ApiKind::Embeddings => {
                let body = titan_embeddings::titan_body(request, model_override)?;
                (format!("/model/{model}/invoke"), body)
            }
            // Responses clients are served above, through the chat translation.
            _ => {
                return Err(api_not_served(
                    PROVIDER,
                    request.api,
                    &[
                        ApiKind::ChatCompletions,
                        ApiKind::Embeddings,
                        ApiKind::Messages,
                        ApiKind::CountTokens,
                        ApiKind::Responses,
                    ],
                ))
            }
        };
        Ok(UpstreamRequest::json(path, body.to_string().into_bytes()))
    }

    fn response_translator(
        &self,
        request: &ClientRequest,
        _usage_injected: bool,
    ) -> Box<dyn ResponseTranslator> {
        if request.api == ApiKind::Responses {
            return crate::schema::responses::translator(self, request);
        }
        match request.api {
            ApiKind::Embeddings => Box::new(titan_embeddings::TitanResponse::new(request)),
            ApiKind::Messages => Box::new(messages_response::MessagesResponse::new(request)),
            ApiKind::CountTokens => Box::new(CountTokensAnswer::new(Hosting::Bedrock)),
            _ => Box::new(converse_response::ConverseResponse::new(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixtures::load;
    use bytes::Bytes;

    fn request(api: ApiKind, body: &str) -> ClientRequest {
        ClientRequest::parse(api, Bytes::copy_from_slice(body.as_bytes())).unwrap()
    }

    #[test]
    fn inference_profile_arn_is_one_segment_as_the_sdk_encodes_it() {
        let recorded = load("bedrock/converse-inference-profile-arn-guardrail.json");
        let arn = "arn:aws:bedrock:us-east-1:012345678901:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0";
        let r = request(
            ApiKind::ChatCompletions,
            r#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#,
        );
        let u = Bedrock.upstream_request(&r, Some(arn)).unwrap();
        assert_eq!(u.path, recorded["request"]["path"].as_str().unwrap());
        assert_eq!(
            u.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
        assert!(u.body.is_some());
    }

    #[test]
    fn stream_uses_converse_stream() {
        let r = request(
            ApiKind::ChatCompletions,
            r#"{"model":"anthropic.claude-3-sonnet-20240229-v1:0","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let u = Bedrock.upstream_request(&r, None).unwrap();
        let recorded = load("bedrock/converse-stream-tool-use.json");
        assert_eq!(u.path, recorded["request"]["path"].as_str().unwrap());
    }

    #[test]
    fn messages_go_to_converse_and_come_back_as_anthropic_sse() {
        let recorded = load("bedrock/converse-stream-tool-use.json");
        let mut r = request(
            ApiKind::Messages,
            r#"{"model":"anthropic.claude-3-sonnet-20240229-v1:0","stream":true,"max_tokens":300,
              "temperature":0.5,"messages":[{"role":"user","content":"What is the weather in Barcelona?"}],
              "tools":[{"name":"get_weather","description":"Get the current weather for a location",
                "input_schema":{"type":"object","properties":{"location":{"type":"string","description":"The city name"}},"required":["location"]}}]}"#,
        );
        let u = Bedrock.upstream_request(&r, None).unwrap();
        assert_eq!(u.path, recorded["request"]["path"].as_str().unwrap());
        let body: serde_json::Value = serde_json::from_slice(&u.body.unwrap()).unwrap();
        assert_eq!(body, recorded["request"]["body"]);
        let t = Bedrock.response_translator(&r, false);
        assert!(t.rewrites_body());
        assert_eq!(
            t.stream_content_type(),
            "application/vnd.amazon.eventstream"
        );

        r.stream = false;
        let u = Bedrock.upstream_request(&r, Some("m")).unwrap();
        assert_eq!(u.path, "/model/m/converse");
    }

    #[test]
    fn legacy_completions_are_422() {
        let r = request(ApiKind::Completions, r#"{"model":"m","prompt":"x"}"#);
        let e = Bedrock.upstream_request(&r, None).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.to_string().contains("/v1/completions"));
    }

    #[test]
    fn embeddings_invoke_titan() {
        let recorded = load("bedrock/invoke-titan-embed-text-v1.json");
        let r = request(
            ApiKind::Embeddings,
            r#"{"model":"amazon.titan-embed-text-v1","input":"Hello World!"}"#,
        );
        let u = Bedrock.upstream_request(&r, None).unwrap();
        assert_eq!(u.path, recorded["request"]["path"].as_str().unwrap());
        let body: serde_json::Value = serde_json::from_slice(&u.body.unwrap()).unwrap();
        assert_eq!(body, recorded["request"]["body"]);
    }
}
