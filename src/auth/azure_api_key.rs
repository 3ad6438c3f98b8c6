//! `AzureAPIKey`: Azure OpenAI's `api-key` header.

use super::{AttemptContext, AuthError, Credential};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

#[derive(Debug)]
pub struct AzureApiKey {
    pub key: SecretValue,
}

impl Credential for AzureApiKey {
    fn apply(&self, request: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        request
            .headers
            .push(("api-key".into(), self.key.expose().to_string()));
        Ok(())
    }
}
