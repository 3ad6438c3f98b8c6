//! The `Cohere` schema: Cohere's rerank API (`POST /{schema.version}/rerank`, version
//! `v2` by default), which clients reach at `/cohere/v2/rerank` or `/v1/rerank`. The body
//! passes as the client sent it (a `modelNameOverride` splices the model); usage is read
//! from `meta.tokens` (`input_tokens`, `output_tokens`), as Envoy AI Gateway meters it.
//! Cohere's own errors (`{"message"}`) reach the client as Cohere wrote them.

use std::sync::Arc;

use serde::Deserialize;

use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;
use crate::schema::chat::api_not_served;
use crate::schema::openai::openai_body;
use crate::schema::{
    join_path, BackendSchema, ResponseHead, ResponseTranslator, UnreadableAnswer, UpstreamRequest,
};
use crate::usage::Usage;

#[derive(Debug)]
pub struct Cohere {
    version: String,
}

impl Cohere {
    pub fn build(spec: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        if spec.prefix.as_deref().is_some_and(|p| !p.trim().is_empty()) {
            // Cohere's prefixed path (`/compatibility/v1`) is its OpenAI-compatible API,
            // which the OpenAI schema serves.
            return Err("`prefix` is not supported by the Cohere schema (it serves rerank at /{version}/rerank); for Cohere's OpenAI-compatible API use the OpenAI schema with that prefix".into());
        }
        let version = spec
            .version
            .clone()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "v2".into());
        Ok(Arc::new(Cohere { version }))
    }
}

impl BackendSchema for Cohere {
    fn provider_name(&self) -> &'static str {
        "cohere"
    }

    fn upstream_request(
        &self,
        request: &ClientRequest,
        model_override: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        if request.api != ApiKind::Rerank {
            return Err(api_not_served("Cohere", request.api, &[ApiKind::Rerank]));
        }
        let (body, _) = openai_body(request, model_override, false);
        Ok(UpstreamRequest {
            path: join_path(&self.version, "rerank"),
            body,
            headers: Vec::new(),
            usage_injected: false,
        })
    }

    fn response_translator(&self, _: &ClientRequest, _: bool) -> Box<dyn ResponseTranslator> {
        Box::new(RerankMeter::default())
    }
}

/// What metering reads of a rerank answer.
#[derive(Deserialize)]
struct RerankPeek {
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    tokens: Option<Tokens>,
}

#[derive(Deserialize)]
struct Tokens {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

/// Reads the usage of a rerank answer, which passes unchanged.
#[derive(Default)]
pub struct RerankMeter {
    usage: Usage,
    answered: bool,
}

impl ResponseTranslator for RerankMeter {
    fn error(&mut self, _: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        // Cohere's error shape passes; anything else gets the generic handling.
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.get("message")?.as_str()?;
        Some(body.to_vec())
    }

    fn rewrites_body(&self) -> bool {
        false
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let peek: RerankPeek = serde_json::from_slice(body)
            .map_err(|e| UnreadableAnswer::new("a rerank answer", e))?;
        self.answered = true;
        if let Some(tokens) = peek.meta.and_then(|m| m.tokens) {
            // Cohere reports whole counts as JSON numbers that may carry a fraction part.
            let n = |v: Option<f64>| v.unwrap_or(0.0).max(0.0) as u64;
            let (input, output) = (n(tokens.input_tokens), n(tokens.output_tokens));
            self.usage = Usage {
                input,
                output,
                total: input.saturating_add(output),
                ..Usage::default()
            };
        }
        Ok(None)
    }

    fn stream_chunk(&mut self, _: &[u8], _: bool) -> Option<Vec<u8>> {
        None
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn response_model(&self) -> Option<&str> {
        None
    }

    fn saw_output(&self) -> bool {
        self.answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn rerank_goes_to_the_versioned_path_and_is_metered() {
        let spec = SchemaSpec {
            name: "Cohere".into(),
            version: None,
            prefix: None,
        };
        let schema = Cohere::build(&spec).unwrap();
        let body = r#"{"model":"rerank-v3.5","query":"q","documents":["a","b"]}"#;
        let r = ClientRequest::parse(ApiKind::Rerank, Bytes::from(body)).unwrap();
        let u = schema
            .upstream_request(&r, Some("rerank-english-v3.0"))
            .unwrap();
        assert_eq!(u.path, "/v2/rerank");
        let sent: serde_json::Value = serde_json::from_slice(&u.body.unwrap()).unwrap();
        assert_eq!(sent["model"], "rerank-english-v3.0");
        let mut t = schema.response_translator(&r, false);
        let answer = br#"{"id":"x","results":[{"index":1,"relevance_score":0.9}],"meta":{"api_version":{"version":"2"},"billed_units":{"search_units":1},"tokens":{"input_tokens":24,"output_tokens":0}}}"#;
        assert_eq!(t.unary(answer).unwrap(), None);
        assert_eq!((t.usage().input, t.usage().total), (24, 24));
        let chat = ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(body)).unwrap();
        assert_eq!(
            schema.upstream_request(&chat, None).unwrap_err().status(),
            422
        );
    }
}
