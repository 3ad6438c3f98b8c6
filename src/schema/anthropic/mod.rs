//! The `Anthropic` and `GCPAnthropic` schemas: OpenAI chat completions to Claude, on
//! Anthropic's API (`/v1/messages`) or on Vertex AI (`…/publishers/anthropic/models/
//! {model}:rawPredict`, `:streamRawPredict`; the GCP credential adds the project and
//! region prefix). OpenAI chat completions are translated; Anthropic Messages requests
//! (Anthropic SDK clients) pass as [`messages`] describes. Anthropic has no
//! embeddings or legacy completions API.

pub mod count_tokens;
pub mod events;
pub mod messages;
pub mod request;
pub mod response;
pub mod stream;

use std::sync::Arc;

use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;
use crate::schema::anthropic::count_tokens::{CountTokensAnswer, Hosting};
use crate::schema::anthropic::messages::{hosted_body, AnthropicMeter};
use crate::schema::anthropic::request::{messages_body, Flavor};
use crate::schema::anthropic::response::AnthropicResponse;
use crate::schema::chat::{api_not_served, ChatRequest};
use crate::schema::openai::openai_body;
use crate::schema::{join_path, path_segment, BackendSchema, ResponseTranslator, UpstreamRequest};

/// What Claude's Messages API serves, on every hosting.
pub const SERVED: &[ApiKind] = &[
    ApiKind::ChatCompletions,
    ApiKind::Messages,
    ApiKind::Responses,
];

/// The translator for an answer to `request`: Messages answers pass, read for usage.
fn translator(request: &ClientRequest) -> Box<dyn ResponseTranslator> {
    match request.api {
        ApiKind::Messages => Box::new(AnthropicMeter::new()),
        ApiKind::CountTokens => Box::new(CountTokensAnswer::new(Hosting::Anthropic)),
        _ => Box::new(AnthropicResponse::new(request)),
    }
}

/// The body for Claude on a cloud, which names the model in the path: a Messages
/// client's body adapted to the hosting, or a chat request translated.
pub fn hosted_request_body(
    request: &ClientRequest,
    flavor: &Flavor,
    model: &str,
) -> Result<Vec<u8>, ApiError> {
    match request.api {
        ApiKind::Messages => hosted_body(request, flavor),
        _ => chat_body(request, flavor, model),
    }
}

/// The chat body for `flavor`, serialized.
fn chat_body(request: &ClientRequest, flavor: &Flavor, model: &str) -> Result<Vec<u8>, ApiError> {
    if request.api != ApiKind::ChatCompletions {
        return Err(api_not_served(flavor.provider, request.api, SERVED));
    }
    let chat = ChatRequest::parse(request)?;
    let body = messages_body(&chat, flavor, model)?;
    serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The `anthropic-version` sent to Anthropic's API when the client names none.
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct Anthropic {
    prefix: String,
}

impl Anthropic {
    const FLAVOR: Flavor = Flavor {
        provider: "Anthropic",
        model_in_body: true,
        body_version: None,
        url_images: true,
        invoke: false,
    };

    pub fn build(spec: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        let prefix = spec.prefix.clone().unwrap_or_else(|| "v1".to_string());
        Ok(Arc::new(Anthropic { prefix }))
    }
}

impl BackendSchema for Anthropic {
    fn provider_name(&self) -> &'static str {
        "anthropic"
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
        let body = match request.api {
            // The client's bytes, with the model spliced when overridden.
            ApiKind::Messages | ApiKind::CountTokens => openai_body(request, model_override, false)
                .0
                .unwrap_or_else(|| request.body.to_vec()),
            _ => chat_body(request, &Self::FLAVOR, model)?,
        };
        let suffix = match request.api {
            ApiKind::CountTokens => ApiKind::CountTokens.openai_suffix(),
            _ => "messages",
        };
        let mut upstream = UpstreamRequest::json(join_path(&self.prefix, suffix), body);
        // The API refuses requests without a version; a client's own passes unchanged.
        if !request.sent_anthropic_version {
            upstream
                .headers
                .push(("anthropic-version".into(), API_VERSION.into()));
        }
        Ok(upstream)
    }

    fn response_translator(&self, request: &ClientRequest, _: bool) -> Box<dyn ResponseTranslator> {
        if request.api == ApiKind::Responses {
            return crate::schema::responses::translator(self, request);
        }
        translator(request)
    }
}

#[derive(Debug)]
pub struct GcpAnthropic;

impl GcpAnthropic {
    /// The Messages version Claude on Vertex AI names in the body, for chat and Messages
    /// clients alike.
    const BODY_VERSION: &str = "vertex-2023-10-16";

    /// Vertex AI takes http image URLs only from Cloud Storage: inline bytes only.
    const FLAVOR: Flavor = Flavor {
        provider: "GCP Vertex AI (Anthropic)",
        model_in_body: false,
        body_version: Some(Self::BODY_VERSION),
        url_images: false,
        invoke: false,
    };

    pub fn build(_: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        Ok(Arc::new(GcpAnthropic))
    }
}

impl BackendSchema for GcpAnthropic {
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
        if request.api == ApiKind::CountTokens {
            let body = count_tokens::vertex_body(request, &Self::FLAVOR, model)?;
            return Ok(UpstreamRequest::json(
                count_tokens::VERTEX_PATH.into(),
                body,
            ));
        }
        let body = hosted_request_body(request, &Self::FLAVOR, model)?;
        let verb = if request.stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        let path = format!(
            "/publishers/anthropic/models/{}:{verb}",
            path_segment(model)
        );
        Ok(UpstreamRequest::json(path, body))
    }

    fn response_translator(&self, request: &ClientRequest, _: bool) -> Box<dyn ResponseTranslator> {
        if request.api == ApiKind::Responses {
            return crate::schema::responses::translator(self, request);
        }
        if request.api == ApiKind::CountTokens {
            return Box::new(CountTokensAnswer::new(Hosting::Vertex));
        }
        translator(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(body.to_string())).unwrap()
    }

    fn spec(name: &str) -> SchemaSpec {
        serde_yaml_ng::from_str(&format!("name: {name}")).unwrap()
    }

    #[test]
    fn anthropic_posts_messages_with_the_model() {
        let s = Anthropic::build(&spec("Anthropic")).unwrap();
        let r = s
            .upstream_request(
                &request(r#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#),
                Some("claude-sonnet-4-5"),
            )
            .unwrap();
        assert_eq!(r.path, "/v1/messages");
        let body: serde_json::Value = serde_json::from_slice(&r.body.unwrap()).unwrap();
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], 4096);
    }

    #[test]
    fn anthropic_version_is_the_schemas_unless_the_client_sent_one() {
        let s = Anthropic::build(&spec("Anthropic")).unwrap();
        let version = |r: &UpstreamRequest| {
            r.headers
                .iter()
                .filter(|(k, _)| k == "anthropic-version")
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        let mut chat = request(r#"{"model":"c","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(
            version(&s.upstream_request(&chat, None).unwrap()),
            ["2023-06-01"]
        );
        chat.sent_anthropic_version = true;
        assert!(version(&s.upstream_request(&chat, None).unwrap()).is_empty());
        let messages = ClientRequest::parse(
            ApiKind::Messages,
            Bytes::from_static(br#"{"model":"c","max_tokens":5,"messages":[]}"#),
        )
        .unwrap();
        assert_eq!(
            version(&s.upstream_request(&messages, None).unwrap()),
            ["2023-06-01"]
        );
    }

    #[test]
    fn vertex_puts_the_model_in_the_path() {
        let s = GcpAnthropic::build(&spec("GCPAnthropic")).unwrap();
        let r = s
            .upstream_request(
                &request(r#"{"model":"claude-sonnet-4@20250514","stream":true,"messages":[{"role":"user","content":"hi"}]}"#),
                None,
            )
            .unwrap();
        assert_eq!(
            r.path,
            "/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body.unwrap()).unwrap();
        assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
        assert!(body.get("model").is_none());
    }

    #[test]
    fn embeddings_are_refused_by_name() {
        let s = Anthropic::build(&spec("Anthropic")).unwrap();
        let r = ClientRequest::parse(
            ApiKind::Embeddings,
            Bytes::from_static(br#"{"model":"claude","input":"x"}"#),
        )
        .unwrap();
        let e = s.upstream_request(&r, None).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.to_string().contains("embeddings"));
    }
}
