//! A rotating access token sent as `authorization: Bearer` (Entra ID for Azure OpenAI).

use super::token_cache::TokenCache;
use super::{AttemptContext, AuthError, Credential};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

#[derive(Debug)]
pub struct BearerToken {
    token: TokenCache<SecretValue>,
}

impl BearerToken {
    pub fn new(token: TokenCache<SecretValue>) -> Self {
        BearerToken { token }
    }
}

impl Credential for BearerToken {
    fn apply(&self, request: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        let token = self.token.current()?;
        request
            .headers
            .push(("authorization".into(), format!("Bearer {}", token.expose())));
        Ok(())
    }
}
