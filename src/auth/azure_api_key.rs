//! `AzureAPIKey`: Azure OpenAI's `api-key` header.

use std::sync::Arc;

use super::{api_key_secret, AttemptContext, AuthError, Credential, PolicySource};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    let holder = source.spec().azure_api_key.clone();
    let key = api_key_secret(source, "azureAPIKey", holder)?;
    Some(Arc::new(AzureApiKey { key }))
}

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
