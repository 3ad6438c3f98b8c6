//! `GCPCredentials` with `workloadIdentityFederationConfig`: an OIDC token of the
//! policy's provider exchanged at Google STS for a federated access token, then, with
//! `serviceAccountImpersonation`, for a service account's token at IAM Credentials.
//!
//! - STS: `POST {sts}/v1/token`, the RFC 8693 token-exchange grant for the audience
//!   `//iam.googleapis.com/projects/<projectID>/locations/global/workloadIdentityPools/<pool>/providers/<provider>`.
//! - IAM Credentials: `POST {iamcredentials}/v1/projects/-/serviceAccounts/<sa>:generateAccessToken`
//!   for `<serviceAccountName>@<projectName>.iam.gserviceaccount.com`.
//!
//! The bases are gcloud's `CLOUDSDK_API_ENDPOINT_OVERRIDES_STS` and
//! `CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS`, by default the public endpoints.
//!
//! Written by hand rather than with `google-cloud-auth`: its external-account flow reads
//! a credential configuration file rather than a policy, does not read gcloud's
//! endpoint overrides, and caches tokens on its own rules (see the commit).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use super::google_token::CLOUD_PLATFORM_SCOPE;
use super::oauth::{self, ExchangeError};
use super::oidc::OidcClient;
use super::token_cache::{Fetched, TokenSource};
use super::PolicySource;
use crate::secret::SecretValue;

const STS: &str = "Google STS";
const IAM: &str = "IAM Credentials generateAccessToken";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const DEFAULT_STS: &str = "https://sts.googleapis.com";
const DEFAULT_IAM: &str = "https://iamcredentials.googleapis.com";

/// The exchanges of one federation config.
pub struct Federation {
    oidc: OidcClient,
    audience: String,
    sts_url: String,
    /// `generateAccessToken`'s URL, with impersonation.
    impersonation_url: Option<String>,
    http: reqwest::Client,
}

impl fmt::Debug for Federation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Federation")
            .field("audience", &self.audience)
            .field("impersonation_url", &self.impersonation_url)
            .finish_non_exhaustive()
    }
}

/// Path segments a Google resource name can hold.
fn segment_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Federation {
    /// Reads `spec.gcpCredentials.workloadIdentityFederationConfig`; None once a problem
    /// is reported.
    pub fn from_policy(
        source: &mut dyn PolicySource,
        config: &Value,
        project_name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let field = "spec.gcpCredentials.workloadIdentityFederationConfig";
        const KNOWN: &[&str] = &[
            "projectID",
            "workloadIdentityPoolName",
            "workloadIdentityProviderName",
            "oidcExchangeToken",
            "serviceAccountImpersonation",
        ];
        let mut valid = true;
        if let Some(object) = config.as_object() {
            for key in object.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
                source.problem(
                    &format!("{field}.{key}"),
                    "is not a field of workloadIdentityFederationConfig".into(),
                    format!("remove `{key}`"),
                );
                valid = false;
            }
        }
        let mut text = |name: &str| {
            let value = config.get(name).and_then(Value::as_str).unwrap_or_default();
            if !segment_safe(value) {
                source.problem(
                    &format!("{field}.{name}"),
                    format!("{value:?} is missing or not a Google Cloud resource name"),
                    "write it as the Google Cloud console shows it".into(),
                );
                return None;
            }
            Some(value.to_string())
        };
        let project = text("projectID");
        let pool = text("workloadIdentityPoolName");
        let provider = text("workloadIdentityProviderName");
        let account = match config.get("serviceAccountImpersonation") {
            None => Some(None),
            Some(impersonation) => {
                let name = impersonation
                    .get("serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let extra = impersonation
                    .as_object()
                    .is_some_and(|o| o.keys().any(|k| k != "serviceAccountName"));
                if !segment_safe(name) || extra {
                    source.problem(
                        &format!("{field}.serviceAccountImpersonation"),
                        "needs exactly `serviceAccountName`, the part of the service account's email before the @".into(),
                        "e.g. serviceAccountName: vertex-gateway".into(),
                    );
                    None
                } else {
                    Some(Some(format!(
                        "{name}@{project_name}.iam.gserviceaccount.com"
                    )))
                }
            }
        };
        let oidc = match config.get("oidcExchangeToken") {
            Some(exchange) => OidcClient::from_policy(
                source,
                &format!("{field}.oidcExchangeToken"),
                exchange,
                &[],
            ),
            None => {
                source.problem(
                    &format!("{field}.oidcExchangeToken"),
                    "missing".into(),
                    "set the OIDC provider whose tokens the workload identity pool trusts".into(),
                );
                None
            }
        };
        let (project, pool, provider, account, oidc) =
            (project?, pool?, provider?, account?, oidc?);
        let base = |name: &str, default: &str| {
            env(name)
                .filter(|b| !b.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
                .trim_end_matches('/')
                .to_string()
        };
        let sts = base("CLOUDSDK_API_ENDPOINT_OVERRIDES_STS", DEFAULT_STS);
        let iam = base(
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
            DEFAULT_IAM,
        );
        valid.then(|| Federation {
            oidc,
            audience: format!(
                "//iam.googleapis.com/projects/{project}/locations/global/workloadIdentityPools/{pool}/providers/{provider}"
            ),
            sts_url: format!("{sts}/v1/token"),
            impersonation_url: account.map(|account| {
                format!("{iam}/v1/projects/-/serviceAccounts/{account}:generateAccessToken")
            }),
            http: oauth::http_client(),
        })
    }

    /// What decides the token, for the cache key (no secret).
    pub fn identity(&self) -> String {
        format!(
            "{} for {} at {}, then {:?}",
            self.oidc.identity(),
            self.audience,
            self.sts_url,
            self.impersonation_url
        )
    }

    pub fn secret(&self) -> &str {
        self.oidc.secret()
    }

    /// The federated token for the pool's audience.
    async fn federated_token(&self) -> Result<Fetched<SecretValue>, ExchangeError> {
        let subject = self.oidc.fetch().await?.token;
        let body = oauth::form(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("audience", &self.audience),
            ("scope", CLOUD_PLATFORM_SCOPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject.expose()),
            ("subject_token_type", JWT_TOKEN_TYPE),
        ]);
        let answer = oauth::post_form(&self.http, STS, &self.sts_url, body, &[]).await?;
        oauth::access_token(STS, &answer)
    }

    /// The service account's token, with the federated token as the caller.
    async fn impersonate(
        &self,
        url: &str,
        federated: &SecretValue,
    ) -> Result<Fetched<SecretValue>, ExchangeError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            access_token: String,
            expire_time: String,
        }
        let body = serde_json::json!({ "scope": [CLOUD_PLATFORM_SCOPE], "lifetime": "3600s" });
        let request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", federated.expose()))
            .body(body.to_string());
        let answer = oauth::send(IAM, request).await?;
        let malformed = ExchangeError::Malformed {
            endpoint: IAM,
            what: "an accessToken and expireTime",
        };
        let parsed: Answer = serde_json::from_slice(&answer).map_err(|_| malformed.clone())?;
        let expires = time::OffsetDateTime::parse(
            &parsed.expire_time,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| malformed.clone())?;
        if parsed.access_token.is_empty() {
            return Err(malformed);
        }
        let nanos = u64::try_from(expires.unix_timestamp_nanos()).unwrap_or_default();
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
        Ok(Fetched {
            token: SecretValue::new(parsed.access_token),
            lifetime: at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(oauth::MAX_LIFETIME),
        })
    }
}

impl TokenSource for Federation {
    type Token = SecretValue;
    type Error = ExchangeError;

    async fn fetch(&self) -> Result<Fetched<SecretValue>, ExchangeError> {
        let federated = self.federated_token().await?;
        match &self.impersonation_url {
            None => Ok(federated),
            Some(url) => self.impersonate(url, &federated.token).await,
        }
    }
}

#[cfg(test)]
#[path = "gcp_federation_tests.rs"]
mod tests;
