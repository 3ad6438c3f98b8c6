//! `AzureCredentials`: an Entra ID token for `https://cognitiveservices.azure.com/.default`,
//! sent to Azure OpenAI as `authorization: Bearer` (never `api-key`).
//!
//! The client is `clientID` in `tenantID`, proven by one of:
//! - `clientSecretRef` (Secret key `client-secret`);
//! - `oidcExchangeToken`: a token of the policy's OIDC provider, sent as a federated
//!   `client_assertion` (type `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`);
//! - with neither, Azure workload identity's projected token, the file named by
//!   `AZURE_FEDERATED_TOKEN_FILE` (read at every refresh: the kubelet rotates it).
//!   The policy's clientID and tenantID are used (the webhook's AZURE_CLIENT_ID and
//!   AZURE_TENANT_ID name the same ones when the pod serves one identity).
//!
//! The token endpoint is `{AZURE_AUTHORITY_HOST}/{tenantID}/oauth2/v2.0/token`, the
//! authority host defaulting to `https://login.microsoftonline.com` as in the Azure SDKs.
//!
//! The exchange is written here rather than with `azure_identity`: it is one form POST,
//! and that crate brings azure_core's HTTP pipeline and its own token cache.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::bearer::BearerToken;
use super::oauth::{self, ExchangeError};
use super::oidc::OidcClient;
use super::token_cache::{CacheKey, Fetched, TokenCache, TokenSource};
use super::{Credential, PolicySource};
use crate::secret::SecretValue;

/// The scope of Azure OpenAI (Cognitive Services).
pub const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ENDPOINT: &str = "the Entra ID token endpoint";

pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    build_with(source, &|name| std::env::var(name).ok())
}

/// [`build`] with the process environment given (tests pass their own).
fn build_with(
    source: &mut dyn PolicySource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Arc<dyn Credential>> {
    let Some(azure) = source.spec().azure_credentials.clone() else {
        source.problem(
            "spec.azureCredentials",
            "missing".into(),
            "type AzureCredentials needs `azureCredentials` with clientID and tenantID".into(),
        );
        return None;
    };
    let mut valid = true;
    for (field, value) in [
        ("clientID", &azure.client_id),
        ("tenantID", &azure.tenant_id),
    ] {
        let safe = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !safe {
            source.problem(
                &format!("spec.azureCredentials.{field}"),
                format!("{value:?} is not an Entra ID {field}"),
                "use the GUID (or the tenant's domain name) shown in the Azure portal".into(),
            );
            valid = false;
        }
    }
    let proof = match (&azure.client_secret_ref, &azure.oidc_exchange_token) {
        (Some(_), Some(_)) => {
            source.problem(
                "spec.azureCredentials",
                "sets both clientSecretRef and oidcExchangeToken".into(),
                "keep one of them".into(),
            );
            return None;
        }
        (Some(secret), None) => Proof::ClientSecret(source.header_secret(
            "spec.azureCredentials.clientSecretRef",
            secret,
            "client-secret",
        )?),
        (None, Some(exchange)) => Proof::Oidc(OidcClient::from_policy(
            source,
            "spec.azureCredentials.oidcExchangeToken",
            exchange,
            &[],
        )?),
        (None, None) => Proof::TokenFile(federated_token_file(source, env)?),
    };
    let authority = env("AZURE_AUTHORITY_HOST")
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    if !valid {
        return None;
    }
    let exchange = EntraExchange {
        token_url: format!(
            "{}/{}/oauth2/v2.0/token",
            authority.trim_end_matches('/'),
            azure.tenant_id
        ),
        client_id: azure.client_id.clone(),
        proof,
        http: oauth::http_client(),
    };
    let key = CacheKey::new(
        source.policy_name(),
        "AzureCredentials",
        format!(
            "client {} at {} with {}",
            exchange.client_id,
            exchange.token_url,
            exchange.proof.identity()
        ),
    )
    .with_secrets(exchange.proof.secret());
    Some(Arc::new(BearerToken::new(TokenCache::start(key, exchange))))
}

/// `AZURE_FEDERATED_TOKEN_FILE`, which must name a readable file.
fn federated_token_file(
    source: &mut dyn PolicySource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let fix = "set `clientSecretRef` or `oidcExchangeToken`, or run the sidecar with Azure workload identity (AZURE_FEDERATED_TOKEN_FILE)";
    let Some(path) = env("AZURE_FEDERATED_TOKEN_FILE").filter(|p| !p.is_empty()) else {
        source.problem(
            "spec.azureCredentials.clientSecretRef",
            "missing, and AZURE_FEDERATED_TOKEN_FILE is not set".into(),
            fix.into(),
        );
        return None;
    };
    let path = PathBuf::from(path);
    if let Err(e) = std::fs::metadata(&path) {
        source.problem(
            "spec.azureCredentials",
            format!(
                "AZURE_FEDERATED_TOKEN_FILE `{}` cannot be read: {e}",
                path.display()
            ),
            fix.into(),
        );
        return None;
    }
    Some(path)
}

/// How the client proves itself to Entra ID.
enum Proof {
    ClientSecret(SecretValue),
    Oidc(OidcClient),
    TokenFile(PathBuf),
}

impl Proof {
    fn identity(&self) -> String {
        match self {
            Proof::ClientSecret(_) => "a client secret".into(),
            Proof::Oidc(client) => client.identity(),
            Proof::TokenFile(path) => format!("the federated token file {}", path.display()),
        }
    }

    fn secret(&self) -> Option<&str> {
        match self {
            Proof::ClientSecret(secret) => Some(secret.expose()),
            Proof::Oidc(client) => Some(client.secret()),
            Proof::TokenFile(_) => None,
        }
    }

    /// The form fields after client_id, scope and grant_type.
    async fn fields(&self) -> Result<Vec<(&'static str, SecretValue)>, ExchangeError> {
        let assertion = match self {
            Proof::ClientSecret(secret) => return Ok(vec![("client_secret", secret.clone())]),
            Proof::Oidc(client) => client.fetch().await?.token,
            Proof::TokenFile(path) => {
                // A small local file, read on the refresh task (never on a request).
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ExchangeError::Local(format!(
                        "the federated token file `{}` cannot be read: {e}",
                        path.display()
                    ))
                })?;
                SecretValue::new(text.trim().to_string())
            }
        };
        Ok(vec![
            (
                "client_assertion_type",
                SecretValue::new(CLIENT_ASSERTION_TYPE.into()),
            ),
            ("client_assertion", assertion),
        ])
    }
}

/// The client-credentials grant at Entra ID.
struct EntraExchange {
    token_url: String,
    client_id: String,
    proof: Proof,
    http: reqwest::Client,
}

impl fmt::Debug for EntraExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraExchange")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenSource for EntraExchange {
    type Token = SecretValue;
    type Error = ExchangeError;

    async fn fetch(&self) -> Result<Fetched<SecretValue>, ExchangeError> {
        let proof = self.proof.fields().await?;
        let mut fields = vec![
            ("client_id", self.client_id.as_str()),
            ("scope", SCOPE),
            ("grant_type", "client_credentials"),
        ];
        fields.extend(proof.iter().map(|(k, v)| (*k, v.expose())));
        let body = oauth::form(&fields);
        let answer = oauth::post_form(&self.http, ENDPOINT, &self.token_url, body, &[]).await?;
        oauth::access_token(ENDPOINT, &answer)
    }
}

#[cfg(test)]
#[path = "azure_credentials_tests.rs"]
mod tests;
