//! The `OpenAI` schema: the client's body passes through byte for byte, under the
//! backend's path prefix (default `/v1`).

pub mod azure;
pub mod messages_fields;
pub mod messages_request;
pub mod messages_response;
pub mod messages_stream;
pub mod response;
pub mod usage_meter;

use std::sync::Arc;

use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;

use crate::schema::chat::api_not_served;
use crate::schema::openai::messages_request::{chat_body, ChatTarget};
use crate::schema::openai::messages_response::MessagesFromChat;
use crate::schema::openai::response::OpenAiResponse;
use crate::schema::{join_path, BackendSchema, ResponseTranslator, UpstreamRequest};

/// What the OpenAI-compatible schemas serve.
pub const SERVED: &[ApiKind] = &[
    ApiKind::ChatCompletions,
    ApiKind::Completions,
    ApiKind::Embeddings,
    ApiKind::Responses,
    ApiKind::ImageGenerations,
    ApiKind::Speech,
    ApiKind::Transcriptions,
    ApiKind::Translations,
    ApiKind::Messages,
];

#[derive(Debug)]
pub struct OpenAi {
    prefix: String,
}

impl OpenAi {
    pub fn build(spec: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        // `prefix` is the current field; older manifests put the prefix in `version`
        // (e.g. `openai/v1`). Envoy AI Gateway defaults it to `v1`.
        let prefix = spec
            .prefix
            .clone()
            .or_else(|| spec.version.clone())
            .unwrap_or_else(|| "v1".to_string());
        Ok(Arc::new(OpenAi { prefix }))
    }
}

impl BackendSchema for OpenAi {
    fn provider_name(&self) -> &'static str {
        "openai"
    }

    fn upstream_request(
        &self,
        request: &ClientRequest,
        model_override: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        if !SERVED.contains(&request.api) {
            return Err(api_not_served("OpenAI", request.api, SERVED));
        }
        if request.api == ApiKind::Messages {
            let model = model_override.unwrap_or(&request.model);
            let target = ChatTarget {
                provider: "OpenAI",
                current_api: true,
            };
            let path = join_path(&self.prefix, ApiKind::ChatCompletions.openai_suffix());
            return Ok(UpstreamRequest::json(
                path,
                chat_body(request, model, &target)?,
            ));
        }
        let (body, usage_injected) = openai_body(request, model_override, true);
        Ok(UpstreamRequest {
            path: join_path(&self.prefix, request.api.openai_suffix()),
            body,
            headers: Vec::new(),
            usage_injected,
        })
    }

    fn response_translator(
        &self,
        request: &ClientRequest,
        usage_injected: bool,
    ) -> Box<dyn ResponseTranslator> {
        translator(request, usage_injected)
    }
}

/// The translator for an answer to `request`: OpenAI answers pass (read for usage);
/// Messages clients get them as Anthropic's.
fn translator(request: &ClientRequest, usage_injected: bool) -> Box<dyn ResponseTranslator> {
    match request.api {
        ApiKind::Messages => Box::new(MessagesFromChat::new(&request.model)),
        ApiKind::Responses
        | ApiKind::ImageGenerations
        | ApiKind::Speech
        | ApiKind::Transcriptions
        | ApiKind::Translations => Box::new(usage_meter::UsageMeter::new()),
        _ => Box::new(OpenAiResponse::new(request, usage_injected)),
    }
}

/// The body for an OpenAI-compatible provider: the client's bytes, with the model
/// spliced when overridden, and `stream_options.include_usage` turned on for a stream
/// whose client did not ask for usage (the gateway meters every request; the extra usage
/// chunk is hidden from the client again), where the provider `takes_stream_options`.
/// Returns None when the bytes are unchanged.
pub fn openai_body(
    request: &ClientRequest,
    model_override: Option<&str>,
    takes_stream_options: bool,
) -> (Option<Vec<u8>>, bool) {
    let inject_usage = takes_stream_options
        && request.stream
        && !request.include_usage
        && matches!(request.api, ApiKind::ChatCompletions | ApiKind::Completions);
    let override_model = model_override.filter(|m| *m != request.model);
    if !inject_usage && override_model.is_none() {
        return (None, false);
    }
    let body = &request.body[..];
    // Edits in body order, each (range to replace, replacement).
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    if let Some(model) = override_model {
        // A form field is raw text; a JSON value a quoted string.
        let value = match request.api.is_form() {
            true => model.to_string(),
            false => serde_json::Value::from(model).to_string(),
        };
        edits.push((request.model_span.clone(), value));
    }
    if inject_usage {
        match &request.stream_options_span {
            Some(span) => {
                let mut options: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&body[span.clone()]).unwrap_or_default();
                options.insert("include_usage".into(), true.into());
                edits.push((span.clone(), serde_json::Value::Object(options).to_string()));
            }
            None => {
                // Insert right after the opening brace; the body is known to be an object.
                let open = body.iter().position(|b| *b == b'{').unwrap_or(0);
                edits.push((
                    open + 1..open + 1,
                    "\"stream_options\":{\"include_usage\":true},".into(),
                ));
            }
        }
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at = 0;
    for (range, replacement) in edits {
        out.extend_from_slice(&body[at..range.start]);
        out.extend_from_slice(replacement.as_bytes());
        at = range.end;
    }
    out.extend_from_slice(&body[at..]);
    (Some(out), inject_usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(
            ApiKind::ChatCompletions,
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn passthrough_keeps_bytes() {
        let r = request(r#"{"model":"gpt-4o","messages":[]}"#);
        assert_eq!(openai_body(&r, None, true), (None, false));
        assert_eq!(openai_body(&r, Some("gpt-4o"), true), (None, false));
    }

    #[test]
    fn override_splices_only_the_model() {
        let r = request(r#"{"messages":[{"content":"model"}], "model" : "a", "n":1}"#);
        let (body, _) = openai_body(&r, Some("b\"c"), true);
        assert_eq!(
            String::from_utf8(body.unwrap()).unwrap(),
            r#"{"messages":[{"content":"model"}], "model" : "b\"c", "n":1}"#
        );
    }

    #[test]
    fn stream_without_usage_gets_usage_injected() {
        let r = request(r#"{"model":"a","stream":true}"#);
        let (body, injected) = openai_body(&r, Some("z"), true);
        assert!(injected);
        let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "z");

        let r = request(
            r#"{"model":"a","stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
        );
        let (body, injected) = openai_body(&r, None, true);
        assert!(injected);
        let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
    }

    #[test]
    fn prefix_defaults_to_v1() {
        let spec = SchemaSpec {
            name: "OpenAI".into(),
            version: None,
            prefix: None,
        };
        let s = OpenAi::build(&spec).unwrap();
        let r = request(r#"{"model":"a"}"#);
        assert_eq!(
            s.upstream_request(&r, None).unwrap().path,
            "/v1/chat/completions"
        );
        let spec = SchemaSpec {
            name: "OpenAI".into(),
            version: None,
            prefix: Some("/v1beta/openai/".into()),
        };
        let s = OpenAi::build(&spec).unwrap();
        assert_eq!(
            s.upstream_request(&r, None).unwrap().path,
            "/v1beta/openai/chat/completions"
        );
    }
}
