//! `GCPCredentials`: an OAuth access token as `authorization: Bearer` (a service
//! account key's, or one from workload identity federation, see [`super::gcp_federation`]),
//! and the project and region prefix of every Vertex AI publisher path
//! (`/publishers/...` → `/v1/projects/{projectName}/locations/{region}/publishers/...`).
//!
//! The token is cached and refreshed by [`TokenCache`]: `apply` never waits.

use std::fmt;
use std::sync::Arc;

use super::gcp_federation::Federation;
use super::google_token::{ServiceAccountKey, TokenExchange};
use super::token_cache::{CacheKey, TokenCache};
use super::{AttemptContext, AuthError, Credential, PolicySource};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

/// The credential of a `GCPCredentials` policy: a service account key file from
/// `credentialsFile.secretRef` (key `service_account.json`), or
/// `workloadIdentityFederationConfig`.
pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    build_with(source, &|name| std::env::var(name).ok())
}

/// [`build`] with the process environment given (tests pass their own).
pub(super) fn build_with(
    source: &mut dyn PolicySource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Arc<dyn Credential>> {
    let Some(gcp) = source.spec().gcp_credentials.clone() else {
        source.problem(
            "spec.gcpCredentials",
            "missing".into(),
            "type GCPCredentials needs `gcpCredentials` with projectName, region and credentialsFile".into(),
        );
        return None;
    };
    let valid = [("projectName", &gcp.project_name), ("region", &gcp.region)]
        .into_iter()
        .fold(true, |valid, (field, value)| {
            path_safe(source, field, value) && valid
        });
    let file = match (
        &gcp.credentials_file,
        &gcp.workload_identity_federation_config,
    ) {
        (Some(_), Some(_)) => {
            source.problem(
                "spec.gcpCredentials",
                "sets both credentialsFile and workloadIdentityFederationConfig".into(),
                "keep one of them".into(),
            );
            return None;
        }
        (None, Some(config)) => {
            let federation = Federation::from_policy(source, config, &gcp.project_name, env)?;
            if !valid {
                return None;
            }
            let key = CacheKey::new(
                source.policy_name(),
                "GCPCredentials",
                federation.identity(),
            )
            .with_secrets([federation.secret()]);
            let token = TokenCache::start(key, federation);
            return Some(Arc::new(GcpCredentials::new(
                token,
                &gcp.project_name,
                &gcp.region,
            )));
        }
        (None, None) => {
            source.problem(
                "spec.gcpCredentials.credentialsFile",
                "missing".into(),
                "set `credentialsFile.secretRef` naming the Secret with the service account key in `service_account.json`".into(),
            );
            return None;
        }
        (Some(file), None) => file,
    };
    const KEY: &str = "service_account.json";
    let field = "spec.gcpCredentials.credentialsFile.secretRef";
    let text = source.secret_text(field, &file.secret_ref, KEY)?;
    let key = match ServiceAccountKey::parse(&text) {
        Ok(key) => key,
        Err(why) => {
            let secret = source.secret_name(&file.secret_ref);
            source.problem(
                field,
                format!("Secret `{secret}`: `{KEY}` {why}"),
                "store the service account key file downloaded from Google Cloud (IAM > Service accounts > Keys) under `service_account.json`".into(),
            );
            return None;
        }
    };
    let exchange = match TokenExchange::new(key) {
        Ok(exchange) => exchange,
        Err(why) => {
            source.problem(field, why.to_string(), "report this as a bug".into());
            return None;
        }
    };
    if !valid {
        return None;
    }
    let key = CacheKey::new(
        source.policy_name(),
        "GCPCredentials",
        format!(
            "service account {} at {}",
            exchange.client_email(),
            exchange.token_uri()
        ),
    )
    .with_secrets([text.expose()]);
    let token = TokenCache::start(key, exchange);
    Some(Arc::new(GcpCredentials::new(
        token,
        &gcp.project_name,
        &gcp.region,
    )))
}

/// Whether a project or region can be a path segment; a problem when not.
fn path_safe(source: &mut dyn PolicySource, field: &str, value: &str) -> bool {
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !safe {
        source.problem(
            &format!("spec.gcpCredentials.{field}"),
            format!("{value:?} is not a GCP {field}"),
            "use the project ID and the region (e.g. us-central1, or global) as Google writes them"
                .into(),
        );
    }
    safe
}

pub struct GcpCredentials {
    /// `/v1/projects/{project}/locations/{region}`.
    path_prefix: String,
    token: TokenCache<SecretValue>,
}

impl fmt::Debug for GcpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpCredentials")
            .field("path_prefix", &self.path_prefix)
            .field("token", &self.token)
            .finish()
    }
}

impl GcpCredentials {
    pub fn new(token: TokenCache<SecretValue>, project: &str, region: &str) -> Self {
        GcpCredentials {
            path_prefix: format!("/v1/projects/{project}/locations/{region}"),
            token,
        }
    }
}

impl Credential for GcpCredentials {
    fn apply(&self, request: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        let token = self.token.current()?;
        if request.path.starts_with("/publishers/") {
            request.path = format!("{}{}", self.path_prefix, request.path);
        }
        request
            .headers
            .push(("authorization".into(), format!("Bearer {}", token.expose())));
        Ok(())
    }
}

#[cfg(test)]
#[path = "gcp_credentials_tests.rs"]
mod tests;
