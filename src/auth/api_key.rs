//! `APIKey`: `Authorization: Bearer <apiKey>` (OpenAI and compatible providers).

use std::sync::Arc;

use super::{api_key_secret, AttemptContext, AuthError, Credential, PolicySource};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    let holder = source.spec().api_key.clone();
    let key = api_key_secret(source, "apiKey", holder)?;
    Some(Arc::new(ApiKey { key }))
}

#[derive(Debug)]
pub struct ApiKey {
    pub key: SecretValue,
}

impl Credential for ApiKey {
    fn apply(&self, request: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        request.headers.push((
            "authorization".into(),
            format!("Bearer {}", self.key.expose()),
        ));
        Ok(())
    }
}
