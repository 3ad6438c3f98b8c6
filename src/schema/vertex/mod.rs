//! The `GCPVertexAI` schema: OpenAI chat completions and embeddings served by Gemini and
//! the text embedding models on Vertex AI.
//!
//! Paths (the `GCPCredentials` credential prefixes `/v1/projects/{project}/locations/{region}`):
//! - chat → `/publishers/google/models/{model}:generateContent`, or
//!   `:streamGenerateContent?alt=sse` for a stream (each SSE event a whole response);
//! - embeddings → `/publishers/google/models/{model}:predict`;
//! - `/v1/completions` and Anthropic's Messages → 422: Gemini has no such API.
//!
//! `{model}` is the backend reference's `modelNameOverride`, else the client's model. The
//! body is always rewritten (`content-type: application/json`); no OpenAI-only field
//! (`stream_options`, `store`, `metadata` ...) reaches Google.
//!
//! How each OpenAI request field is treated (details in `gemini_request`):
//! - translated: messages (system/developer → `systemInstruction`), images, audio, files
//!   as data URLs, tools, `tool_choice`, `response_format`, `temperature`, `top_p`,
//!   `max_tokens`/`max_completion_tokens`, `stop`, `seed`, `frequency_penalty`,
//!   `presence_penalty`, `reasoning_effort`;
//! - http(s) image URLs → `fileData{fileUri}`: Vertex's API reference accepts a publicly
//!   readable HTTP URL there and fetches it itself (a refused fetch comes back as Google's
//!   400 INVALID_ARGUMENT, translated for the client); the gateway never fetches. The
//!   required `mimeType` is taken from the URL's extension; without one it is 422;
//! - tool schemas go as `parametersJsonSchema` and structured output as
//!   `responseJsonSchema`: both take JSON Schema unchanged, where `parameters` and
//!   `responseSchema` take Google's OpenAPI subset and would need the client's schema
//!   rewritten, losing what the subset lacks;
//! - `n` (`candidateCount` would be billed for answers the client never sees),
//!   `logit_bias`, `modalities`, tool kinds, `tool_choice` modes and the thinking budget
//!   (Gemini counts thinking within `maxOutputTokens`) follow the shared rules of
//!   [`crate::schema::chat`];
//! - refused with 422 naming the field: `logprobs`, `top_logprobs`, `audio`,
//!   `prediction`, `web_search_options`, legacy `functions`/`function_call`;
//! - dropped, as they do not change the answer: `user`, `metadata`, `store`,
//!   `service_tier`, `stream_options` (usage is always metered; the usage chunk is sent
//!   when the client asked for it), `parallel_tool_calls` (Gemini decides itself
//!   whether to call functions in parallel).

pub mod embeddings;
pub mod error;
pub mod request;
pub mod response;
pub mod types;

use std::sync::Arc;

use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;

use crate::schema::chat::{api_not_served, ChatRequest};
use crate::schema::openai::response::OpenAiResponse;
use crate::schema::path_segment;
use crate::schema::vertex::embeddings::{predict_request, VertexEmbeddingsResponse};
use crate::schema::vertex::request::{generate_content_request, PROVIDER};
use crate::schema::vertex::response::GeminiChatResponse;
use crate::schema::{BackendSchema, ResponseTranslator, UpstreamRequest};

#[derive(Debug)]
pub struct GcpVertexAi;

impl GcpVertexAi {
    pub fn build(_: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        Ok(Arc::new(GcpVertexAi))
    }
}

/// The path of a Google publisher model method, before the credential's project prefix.
pub fn publisher_model_path(model: &str, method: &str) -> String {
    format!("/publishers/google/models/{}:{method}", path_segment(model))
}

impl BackendSchema for GcpVertexAi {
    fn provider_name(&self) -> &'static str {
        "gcp.vertex_ai"
    }

    fn upstream_request(
        &self,
        request: &ClientRequest,
        model_override: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        if request.api == ApiKind::Responses {
            return crate::schema::responses::upstream_request(self, request, model_override);
        }
        let model = model_override.unwrap_or(&request.model);
        let (path, body) = match request.api {
            ApiKind::ChatCompletions => {
                let chat = ChatRequest::parse(request)?;
                let method = if request.stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                (
                    publisher_model_path(model, method),
                    generate_content_request(&chat)?,
                )
            }
            ApiKind::Embeddings => (
                publisher_model_path(model, "predict"),
                predict_request(request)?,
            ),
            _ => {
                return Err(api_not_served(
                    PROVIDER,
                    request.api,
                    &[
                        ApiKind::ChatCompletions,
                        ApiKind::Embeddings,
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
            ApiKind::ChatCompletions => Box::new(GeminiChatResponse::new(request)),
            ApiKind::Embeddings => Box::new(VertexEmbeddingsResponse::new(request)),
            // Refused before any attempt; errors are read the generic way.
            _ => Box::new(OpenAiResponse::new(request, false)),
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
