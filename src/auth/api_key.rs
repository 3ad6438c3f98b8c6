//! `APIKey`: `Authorization: Bearer <apiKey>` (OpenAI and compatible providers).

use super::{AttemptContext, AuthError, Credential};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

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
