//! `AnthropicAPIKey`: Anthropic's `x-api-key` header. (The `anthropic-version` header
//! is the `Anthropic` schema's, whatever the credential.)

use super::{AttemptContext, AuthError, Credential};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

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
