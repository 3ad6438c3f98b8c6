//! Provider credentials: one module per `BackendSecurityPolicy` type.
//!
//! A credential adds its headers to each upstream attempt. The client's own
//! `authorization`, `x-api-key` and `api-key` headers are removed by the upstream layer
//! before a credential is applied, whatever the backend.

pub mod anthropic_api_key;
pub mod api_key;
pub mod aws_credentials;
pub mod azure_api_key;
pub mod gcp_credentials;
pub mod google_token;

use std::fmt;

use crate::wire::UpstreamRequest;

/// Client headers that carry credentials and must never reach a provider.
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &["authorization", "x-api-key", "api-key"];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("its {policy_type} credential is not supported by this build of llm-extproc yet")]
    NotSupported { policy_type: String },
    /// Signing failed (a malformed header or URI; never a key).
    #[error("the request could not be signed: {0}")]
    Signing(String),
    /// A rotating credential has no valid token right now (the reason never holds a secret).
    #[error("its {policy_type} access token is unavailable: {reason}")]
    TokenUnavailable { policy_type: String, reason: String },
}

/// What a credential may need to know about the attempt it signs.
pub struct AttemptContext<'a> {
    /// The client's body: what is sent when the schema left `request.body` empty.
    pub client_body: &'a [u8],
    /// The `host` the provider receives (Envoy rewrites it to the backend's authority).
    pub host: &'a str,
}

impl AttemptContext<'_> {
    /// The body this attempt sends.
    pub fn body<'b>(&'b self, request: &'b UpstreamRequest) -> &'b [u8] {
        request.body.as_deref().unwrap_or(self.client_body)
    }
}

/// A way to authenticate to a provider.
pub trait Credential: Send + Sync + fmt::Debug {
    /// Adds the credential to `request`, the final provider request of this attempt.
    fn apply(
        &self,
        request: &mut UpstreamRequest,
        context: &AttemptContext,
    ) -> Result<(), AuthError>;
}

/// A backend with no `BackendSecurityPolicy`: nothing is added.
#[derive(Debug)]
pub struct NoCredential;

impl Credential for NoCredential {
    fn apply(&self, _: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        Ok(())
    }
}

/// A policy type that is validated but not served yet: every attempt fails with 503.
#[derive(Debug)]
pub struct NotYetSupported {
    pub policy_type: String,
}

impl Credential for NotYetSupported {
    fn apply(&self, _: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        Err(AuthError::NotSupported {
            policy_type: self.policy_type.clone(),
        })
    }
}
