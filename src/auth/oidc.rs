//! `oidcExchangeToken`: an OIDC token from an OAuth client-credentials grant at the
//! policy's OIDC provider, which AWS STS, Entra ID or Google STS then exchange for
//! their own credentials.
//!
//! The token endpoint is `oidc.provider.tokenEndpoint`, or the `token_endpoint` of
//! `oidc.provider.issuer` + `/.well-known/openid-configuration`. The client is
//! `oidc.clientID` (or the Secret key `client-id` of `oidc.clientIDRef`) with the Secret
//! key `client-secret` of `oidc.clientSecret`, sent in the form (client_secret_post).
//! `scopes` are requested with `openid` added, `aud` as the `audience` parameter. The
//! answer's access token is the one exchanged.
//!
//! The `oidc` block is Envoy Gateway's OIDC type, mostly about browser logins: those
//! fields are refused by name rather than ignored.

use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;

use super::oauth::{self, ExchangeError};
use super::token_cache::Fetched;
use super::PolicySource;
use crate::config::resources::ObjectRef;
use crate::secret::SecretValue;
use crate::sync::lock;

const ENDPOINT: &str = "the OIDC provider's token endpoint";
const DISCOVERY: &str = "the OIDC provider's discovery document";

/// The settings of an `oidcExchangeToken` block this build acts on.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeSpec {
    oidc: OidcSpec,
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    aud: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OidcSpec {
    provider: ProviderSpec,
    #[serde(default, rename = "clientID")]
    client_id: Option<String>,
    #[serde(default, rename = "clientIDRef")]
    client_id_ref: Option<ObjectRef>,
    client_secret: ObjectRef,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderSpec {
    issuer: String,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// The fields of Envoy Gateway's OIDC type a client-credentials grant uses; the others
/// configure a browser login.
const OIDC_USED: &[&str] = &[
    "provider",
    "clientID",
    "clientIDRef",
    "clientSecret",
    "scopes",
];
const PROVIDER_USED: &[&str] = &["issuer", "tokenEndpoint"];

/// A client of the policy's OIDC provider.
pub struct OidcClient {
    issuer: String,
    token_endpoint: Mutex<Option<String>>,
    client_id: String,
    client_secret: SecretValue,
    scope: String,
    audience: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// Reads the `oidcExchangeToken` at `field` (e.g. `spec.awsCredentials.oidcExchangeToken`)
    /// and the extra keys the caller acts on itself (`awsRoleArn`); None once a problem
    /// is reported.
    pub fn from_policy(
        source: &mut dyn PolicySource,
        field: &str,
        value: &Value,
        own_keys: &[&str],
    ) -> Option<Self> {
        let mut valid = refuse_unused(
            source,
            field,
            value,
            &[&["oidc", "grantType", "aud"], own_keys].concat(),
            "",
        );
        if let Some(oidc) = value.get("oidc") {
            valid &= refuse_unused(source, &format!("{field}.oidc"), oidc, OIDC_USED, "it configures Envoy Gateway's browser login, which a client-credentials grant does not use");
            if let Some(provider) = oidc.get("provider") {
                valid &= refuse_unused(
                    source,
                    &format!("{field}.oidc.provider"),
                    provider,
                    PROVIDER_USED,
                    "the token endpoint is the only one a client-credentials grant uses",
                );
            }
        }
        let spec: ExchangeSpec = match serde_path_to_error::deserialize(value) {
            Ok(spec) => spec,
            Err(e) => {
                source.problem(
                    &format!("{field}.{}", e.path()),
                    e.inner().to_string(),
                    "see the BackendSecurityPolicy reference for oidcExchangeToken".into(),
                );
                return None;
            }
        };
        if let Some(grant) = spec.grant_type.as_deref() {
            if grant != "client_credentials" {
                source.problem(
                    &format!("{field}.grantType"),
                    format!("`{grant}` is not supported"),
                    "leave grantType out, or set it to client_credentials".into(),
                );
                valid = false;
            }
        }
        let endpoint = spec.oidc.provider.token_endpoint.clone();
        for (name, url) in [
            ("issuer", Some(spec.oidc.provider.issuer.as_str())),
            ("tokenEndpoint", endpoint.as_deref()),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    source.problem(
                        &format!("{field}.oidc.provider.{name}"),
                        format!("`{url}` is not an http(s) URL"),
                        "write the provider's URL, e.g. https://idp.example.com".into(),
                    );
                    valid = false;
                }
            }
        }
        let client_id = match (&spec.oidc.client_id, &spec.oidc.client_id_ref) {
            (Some(id), None) => Some(id.clone()),
            (None, Some(secret)) => source
                .header_secret(&format!("{field}.oidc.clientIDRef"), secret, "client-id")
                .map(|id| id.expose().to_string()),
            _ => {
                source.problem(
                    &format!("{field}.oidc.clientID"),
                    "needs exactly one of clientID and clientIDRef".into(),
                    "set clientID to the client registered at the OIDC provider".into(),
                );
                None
            }
        };
        let client_secret = source.header_secret(
            &format!("{field}.oidc.clientSecret"),
            &spec.oidc.client_secret,
            "client-secret",
        );
        let (client_id, client_secret) = (client_id?, client_secret?);
        let mut scopes = spec.oidc.scopes.clone();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        valid.then(|| OidcClient {
            issuer: spec.oidc.provider.issuer.trim_end_matches('/').to_string(),
            token_endpoint: Mutex::new(endpoint),
            client_id,
            client_secret,
            scope: scopes.join(" "),
            audience: spec.aud.filter(|a| !a.is_empty()),
            http: oauth::http_client(),
        })
    }

    /// What decides the token, for the cache key (no secret).
    pub fn identity(&self) -> String {
        format!(
            "oidc client {} at {} scope {} audience {:?}",
            self.client_id, self.issuer, self.scope, self.audience
        )
    }

    /// The secret that decides the token, for the cache key.
    pub fn secret(&self) -> &str {
        self.client_secret.expose()
    }

    /// A fresh OIDC token.
    pub async fn fetch(&self) -> Result<Fetched<SecretValue>, ExchangeError> {
        let url = self.token_endpoint().await?;
        let mut fields = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", self.scope.as_str()),
        ];
        if let Some(audience) = &self.audience {
            fields.push(("audience", audience));
        }
        let body = oauth::post_form(&self.http, ENDPOINT, &url, oauth::form(&fields), &[]).await?;
        oauth::access_token(ENDPOINT, &body)
    }

    /// The configured token endpoint, or the discovered one (kept once found).
    async fn token_endpoint(&self) -> Result<String, ExchangeError> {
        if let Some(url) = lock(&self.token_endpoint).clone() {
            return Ok(url);
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let body = oauth::send(DISCOVERY, self.http.get(&url)).await?;
        let found = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|d| d.get("token_endpoint")?.as_str().map(str::to_string))
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or(ExchangeError::Malformed {
                endpoint: DISCOVERY,
                what: "a token_endpoint",
            })?;
        *lock(&self.token_endpoint) = Some(found.clone());
        Ok(found)
    }
}

/// Reports each key of `value` outside `used`; whether there was none.
fn refuse_unused(
    source: &mut dyn PolicySource,
    field: &str,
    value: &Value,
    used: &[&str],
    why: &str,
) -> bool {
    let Some(object) = value.as_object() else {
        return true;
    };
    let mut valid = true;
    for key in object.keys().filter(|k| !used.contains(&k.as_str())) {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        };
        source.problem(
            &format!("{field}.{key}"),
            format!("is not supported by llm-extproc{why}"),
            format!("remove `{key}`"),
        );
        valid = false;
    }
    valid
}
