//! Anthropic's token counting (`POST /v1/messages/count_tokens`) on every hosting of
//! Claude that offers it:
//! - `Anthropic`: `{prefix}/messages/count_tokens`, the client's bytes;
//! - `AWSAnthropic`: Bedrock's CountTokens (`/model/{model}/count-tokens`), the InvokeModel
//!   body of the request (base64, with `max_tokens` 1 when the client set none: InvokeModel
//!   requires it, counting ignores it) under `input.invokeModel.body`; Bedrock answers
//!   `{"inputTokens"}`, the client gets `{"input_tokens"}`;
//! - `AWSBedrock` (Converse): the same operation with the Converse form of the request
//!   under `input.converse` (`messages`, `system`, `toolConfig`);
//! - `GCPAnthropic`: Vertex AI's `count-tokens:rawPredict` under the Anthropic publisher,
//!   the body naming the model (without an `@default` or `@latest` alias, which Vertex
//!   refuses for counting) and `anthropic_version`.
//!
//! Counting costs no tokens, so no token usage is metered (the request is counted in
//! `gen_ai.server.request.duration` with operation `count_tokens`). Errors reach the
//! client Anthropic-shaped.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{ApiError, ClientRequest};
use crate::schema::anthropic::messages::{anthropic_shaped_error, hosted_body};
use crate::schema::anthropic::request::Flavor;
use crate::schema::vertex::error::GoogleError;
use crate::schema::{ResponseHead, ResponseTranslator, UnreadableAnswer};
use crate::usage::Usage;

/// Vertex AI's counting endpoint for Claude (the model is in the body).
pub const VERTEX_PATH: &str = "/publishers/anthropic/models/count-tokens:rawPredict";

/// Where Claude is hosted, which decides the answer's shape and its errors'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hosting {
    Anthropic,
    Bedrock,
    Vertex,
}

/// Bedrock's CountTokens body for the InvokeModel form of the request.
pub fn bedrock_invoke_body(request: &ClientRequest, flavor: &Flavor) -> Result<Vec<u8>, ApiError> {
    let mut body = object(&hosted_body(request, flavor)?)?;
    body.entry("max_tokens").or_insert(1.into());
    let invoke = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(invoke);
    Ok(json!({"input": {"invokeModel": {"body": encoded}}})
        .to_string()
        .into_bytes())
}

/// Bedrock's CountTokens body for the Converse form of the request (`converse`, the
/// Converse body of the Messages request).
pub fn bedrock_converse_body(converse: &Value) -> Vec<u8> {
    let mut input = Map::new();
    for field in ["messages", "system", "toolConfig"] {
        if let Some(v) = converse.get(field) {
            input.insert(field.into(), v.clone());
        }
    }
    json!({"input": {"converse": input}})
        .to_string()
        .into_bytes()
}

/// Vertex AI's count-tokens body: the hosted request naming `model`.
pub fn vertex_body(
    request: &ClientRequest,
    flavor: &Flavor,
    model: &str,
) -> Result<Vec<u8>, ApiError> {
    let mut body = object(&hosted_body(request, flavor)?)?;
    let model = model
        .strip_suffix("@default")
        .or_else(|| model.strip_suffix("@latest"))
        .unwrap_or(model);
    body.insert("model".into(), model.into());
    serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A count as its provider answers it.
#[derive(Deserialize)]
struct Count {
    #[serde(alias = "inputTokens")]
    input_tokens: u64,
}

/// The answer to a count: checked, and rewritten to Anthropic's shape from Bedrock's.
pub struct CountTokensAnswer {
    hosting: Hosting,
    counted: bool,
}

impl CountTokensAnswer {
    pub fn new(hosting: Hosting) -> Self {
        CountTokensAnswer {
            hosting,
            counted: false,
        }
    }
}

impl ResponseTranslator for CountTokensAnswer {
    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        match self.hosting {
            Hosting::Anthropic => None,
            Hosting::Bedrock => anthropic_shaped_error(head, body, |v| {
                crate::schema::bedrock::errors::aws_message(v).map(str::to_string)
            }),
            Hosting::Vertex => {
                anthropic_shaped_error(head, body, |_| Some(GoogleError::parse(body)?.message))
            }
        }
    }

    fn rewrites_body(&self) -> bool {
        self.hosting == Hosting::Bedrock
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let count: Count =
            serde_json::from_slice(body).map_err(|e| UnreadableAnswer::new("a token count", e))?;
        self.counted = true;
        Ok(match self.hosting {
            Hosting::Bedrock => Some(
                json!({"input_tokens": count.input_tokens})
                    .to_string()
                    .into_bytes(),
            ),
            _ => None,
        })
    }

    fn stream_chunk(&mut self, _: &[u8], _: bool) -> Option<Vec<u8>> {
        None
    }

    fn usage(&self) -> Usage {
        Usage::default()
    }

    fn response_model(&self) -> Option<&str> {
        None
    }

    fn saw_output(&self) -> bool {
        self.counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use bytes::Bytes;

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(ApiKind::CountTokens, Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn bedrock_counts_the_invoke_body_and_answers_in_anthropics_shape() {
        let flavor = Flavor {
            provider: "AWS Bedrock (Anthropic)",
            model_in_body: false,
            body_version: Some("bedrock-2023-05-31"),
            url_images: false,
            invoke: true,
        };
        let r = request(r#"{"model":"claude","messages":[{"role":"user","content":"Hi"}]}"#);
        let body: Value =
            serde_json::from_slice(&bedrock_invoke_body(&r, &flavor).unwrap()).unwrap();
        let encoded = body["input"]["invokeModel"]["body"].as_str().unwrap();
        let invoke: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            invoke,
            json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1,
                   "messages": [{"role": "user", "content": "Hi"}]})
        );
        let mut answer = CountTokensAnswer::new(Hosting::Bedrock);
        let out = answer.unary(br#"{"inputTokens":11}"#).unwrap().unwrap();
        assert_eq!(out, br#"{"input_tokens":11}"#);
        assert!(answer.unary(b"{}").is_err());
    }

    #[test]
    fn vertex_names_the_model_without_an_alias() {
        let flavor = Flavor {
            provider: "GCP Vertex AI (Anthropic)",
            model_in_body: false,
            body_version: Some("vertex-2023-10-16"),
            url_images: false,
            invoke: false,
        };
        let r = request(r#"{"model":"claude","messages":[]}"#);
        let body: Value =
            serde_json::from_slice(&vertex_body(&r, &flavor, "claude-sonnet-4-5@default").unwrap())
                .unwrap();
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
    }
}
