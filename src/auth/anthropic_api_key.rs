//! `AnthropicAPIKey`: Anthropic's `x-api-key` header, plus `anthropic-version` when the
//! client sent none (the API rejects requests without it).

use super::{AttemptContext, AuthError, Credential};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

/// The API version sent when the client names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct AnthropicApiKey {
    pub key: SecretValue,
}

impl Credential for AnthropicApiKey {
    fn apply(
        &self,
        request: &mut UpstreamRequest,
        context: &AttemptContext,
    ) -> Result<(), AuthError> {
        request
            .headers
            .push(("x-api-key".into(), self.key.expose().to_string()));
        if (context.client_header)("anthropic-version").is_none() {
            request
                .headers
                .push(("anthropic-version".into(), DEFAULT_ANTHROPIC_VERSION.into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(header: &'a dyn Fn(&str) -> Option<String>) -> AttemptContext<'a> {
        AttemptContext {
            client_header: header,
            client_body: b"",
            host: "api.anthropic.com",
        }
    }

    #[test]
    fn adds_version_only_when_missing() {
        let c = AnthropicApiKey {
            key: SecretValue::new("k".into()),
        };
        let mut r = UpstreamRequest::default();
        c.apply(&mut r, &context(&|_| None)).unwrap();
        assert!(r
            .headers
            .contains(&("anthropic-version".into(), "2023-06-01".into())));
        let mut r = UpstreamRequest::default();
        c.apply(&mut r, &context(&|_| Some("2024-01-01".into())))
            .unwrap();
        assert!(!r.headers.iter().any(|(k, _)| k == "anthropic-version"));
    }
}
