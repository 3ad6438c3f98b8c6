//! The `AzureOpenAI` schema: OpenAI bodies under
//! `/openai/deployments/{deployment}/{api}?api-version={schema.version}`, where the
//! deployment is the model (or the backend reference's `modelNameOverride`).

use std::sync::Arc;

use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;

use crate::schema::chat::api_not_served;
use crate::schema::openai::messages_request::{chat_body, ChatTarget};
use crate::schema::openai::{openai_body, SERVED};
use crate::schema::{path_segment, BackendSchema, ResponseTranslator, UpstreamRequest};

#[derive(Debug)]
pub struct AzureOpenAi {
    api_version: String,
    /// `stream_options` exists from api-version 2024-09-01(-preview) on; older versions
    /// reject unknown fields, so streams there are not metered.
    takes_stream_options: bool,
}

impl AzureOpenAi {
    pub fn build(spec: &SchemaSpec) -> Result<Arc<dyn BackendSchema>, String> {
        let api_version = spec
            .version
            .clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or(
            "AzureOpenAI needs `schema.version`: the Azure api-version, e.g. 2025-01-01-preview",
        )?;
        if !api_version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("`schema.version` {api_version:?} is not an Azure api-version like 2025-01-01-preview"));
        }
        let takes_stream_options = api_version
            .get(..10)
            .is_some_and(|date| date >= "2024-09-01");
        Ok(Arc::new(AzureOpenAi {
            api_version,
            takes_stream_options,
        }))
    }
}

impl BackendSchema for AzureOpenAi {
    fn provider_name(&self) -> &'static str {
        "azure.ai.openai"
    }

    fn upstream_request(
        &self,
        request: &ClientRequest,
        model_override: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        if !SERVED.contains(&request.api) {
            return Err(api_not_served("Azure OpenAI", request.api, SERVED));
        }
        let deployment = model_override.unwrap_or(&request.model);
        if request.api == ApiKind::Responses {
            // The Responses API is not under a deployment: the body's `model` names it.
            let (body, _) = openai_body(request, model_override, false);
            return Ok(UpstreamRequest {
                path: format!("/openai/responses?api-version={}", self.api_version),
                body,
                headers: Vec::new(),
                usage_injected: false,
            });
        }
        let path = |api: ApiKind| {
            format!(
                "/openai/deployments/{}/{}?api-version={}",
                path_segment(deployment),
                api.openai_suffix(),
                self.api_version
            )
        };
        if request.api == ApiKind::Messages {
            let target = ChatTarget {
                provider: "Azure OpenAI",
                current_api: self.takes_stream_options,
            };
            let body = chat_body(request, deployment, &target)?;
            return Ok(UpstreamRequest::json(path(ApiKind::ChatCompletions), body));
        }
        let (body, usage_injected) =
            openai_body(request, model_override, self.takes_stream_options);
        Ok(UpstreamRequest {
            path: path(request.api),
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
        super::translator(request, usage_injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use bytes::Bytes;

    #[test]
    fn deployment_path_and_api_version() {
        let spec = SchemaSpec {
            name: "AzureOpenAI".into(),
            version: Some("2025-01-01-preview".into()),
            prefix: None,
        };
        let s = AzureOpenAi::build(&spec).unwrap();
        let r = ClientRequest::parse(
            ApiKind::Embeddings,
            Bytes::from_static(br#"{"model":"te/x?y","input":"a"}"#),
        )
        .unwrap();
        let u = s.upstream_request(&r, None).unwrap();
        assert_eq!(
            u.path,
            "/openai/deployments/te%2Fx%3Fy/embeddings?api-version=2025-01-01-preview"
        );
        let u = s.upstream_request(&r, Some("my-deploy")).unwrap();
        assert_eq!(
            u.path,
            "/openai/deployments/my-deploy/embeddings?api-version=2025-01-01-preview"
        );
    }

    #[test]
    fn usage_is_asked_for_only_where_the_api_version_has_stream_options() {
        let r = ClientRequest::parse(
            ApiKind::ChatCompletions,
            Bytes::from_static(br#"{"model":"m","stream":true}"#),
        )
        .unwrap();
        for (version, injected) in [
            ("2025-01-01-preview", true),
            ("2024-09-01-preview", true),
            ("2024-02-01", false),
        ] {
            let spec = SchemaSpec {
                name: "AzureOpenAI".into(),
                version: Some(version.into()),
                prefix: None,
            };
            let u = AzureOpenAi::build(&spec)
                .unwrap()
                .upstream_request(&r, None)
                .unwrap();
            assert_eq!(u.usage_injected, injected, "{version}");
        }
    }

    #[test]
    fn version_is_required() {
        let spec = SchemaSpec {
            name: "AzureOpenAI".into(),
            version: None,
            prefix: None,
        };
        assert!(AzureOpenAi::build(&spec).is_err());
    }
}
