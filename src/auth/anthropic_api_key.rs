//! `AnthropicAPIKey`: Anthropic's `x-api-key` header. (The `anthropic-version` header
//! is the `Anthropic` schema's, whatever the credential.)

use std::sync::Arc;

use super::{api_key_secret, AttemptContext, AuthError, Credential, PolicySource};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    let holder = source.spec().anthropic_api_key.clone();
    let key = api_key_secret(source, "anthropicAPIKey", holder)?;
    Some(Arc::new(AnthropicApiKey { key }))
}

#[derive(Debug)]
pub struct AnthropicApiKey {
    pub key: SecretValue,
}

impl Credential for AnthropicApiKey {
    fn apply(&self, request: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        request
            .headers
            .push(("x-api-key".into(), self.key.expose().to_string()));
        Ok(())
    }
}
