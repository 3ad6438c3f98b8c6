//! Provider credentials: one module per `BackendSecurityPolicy` type, each with a
//! `build` that reads its policy, and one line per type in [`REGISTRY`].
//!
//! A credential adds its headers to each upstream attempt. The client's own
//! `authorization`, `x-api-key` and `api-key` headers are removed by the upstream layer
//! before a credential is applied, whatever the backend.

pub mod anthropic_api_key;
pub mod api_key;
pub mod aws_credentials;
pub mod aws_sources;
pub mod azure_api_key;
pub mod azure_credentials;
pub mod bearer;
pub mod gcp_credentials;
pub mod gcp_federation;
pub mod google_token;
pub mod oauth;
pub mod oidc;
pub mod token_cache;

#[cfg(test)]
pub mod test_support;

use std::fmt;
use std::sync::Arc;

use crate::config::resources::{BackendSecurityPolicySpec, ObjectRef, SecretRefHolder};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

/// Builds a policy type's credential from its policy; None once a problem is reported.
pub type Builder = fn(&mut dyn PolicySource) -> Option<Arc<dyn Credential>>;

/// Every `BackendSecurityPolicy.type` of the CRD, with the builder of its credential.
pub const REGISTRY: &[(&str, Builder)] = &[
    ("APIKey", api_key::build),
    ("AzureAPIKey", azure_api_key::build),
    ("AnthropicAPIKey", anthropic_api_key::build),
    ("AWSCredentials", aws_credentials::build),
    ("AzureCredentials", azure_credentials::build),
    ("GCPCredentials", gcp_credentials::build),
];

/// What a builder may ask of the configuration: its policy and the Secrets it names.
/// Every failure is reported through it, with the policy, the field and the fix.
pub trait PolicySource {
    fn spec(&self) -> &BackendSecurityPolicySpec;
    /// A Secret value that becomes a header: non-empty, one line of printable ASCII.
    fn header_secret(&mut self, field: &str, secret: &ObjectRef, key: &str) -> Option<SecretValue>;
    /// A non-empty Secret value, such as a credentials file.
    fn secret_text(&mut self, field: &str, secret: &ObjectRef, key: &str) -> Option<SecretValue>;
    /// `namespace/name` of a Secret reference, for messages.
    fn secret_name(&self, secret: &ObjectRef) -> String;
    /// `namespace/name` of the policy, for its token cache, metric and log lines.
    fn policy_name(&self) -> String;
    /// Reports what is wrong at `field` (`spec.…`) and how to fix it.
    fn problem(&mut self, field: &str, message: String, fix: String);
}

/// The key of an API-key policy: the Secret named by `spec.<field>.secretRef`, key `apiKey`.
fn api_key_secret(
    source: &mut dyn PolicySource,
    field: &str,
    holder: Option<SecretRefHolder>,
) -> Option<SecretValue> {
    let Some(holder) = holder else {
        let policy_type = source.spec().policy_type.clone();
        source.problem(
            &format!("spec.{field}"),
            "missing".into(),
            format!(
                "type {policy_type} needs `{field}.secretRef` naming the Secret that holds the key"
            ),
        );
        return None;
    };
    source.header_secret(
        &format!("spec.{field}.secretRef"),
        &holder.secret_ref,
        "apiKey",
    )
}

/// Client headers that carry credentials and must never reach a provider.
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &["authorization", "x-api-key", "api-key"];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
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

    /// What this credential reads but does not serve yet, for `check`, `serve` and `run`
    /// to name at start.
    fn not_served(&self) -> Option<String> {
        None
    }
}

/// A backend with no `BackendSecurityPolicy`: nothing is added.
#[derive(Debug)]
pub struct NoCredential;

impl Credential for NoCredential {
    fn apply(&self, _: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        Ok(())
    }
}
