//! Google OAuth access tokens for a service account: the key file, the signed JWT
//! assertion (RS256) and its exchange at the key's `token_uri`
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`).
//!
//! Neither the private key, the assertion nor the access token ever appears in an
//! error, a log line or a `Debug` output.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::token_cache::{Fetched, TokenSource};
use crate::secret::SecretValue;

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long an assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// Most time one token request may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a service account key file cannot be used. Worded to follow "`service_account.json` ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("is not JSON: {0}")]
    NotJson(String),
    #[error("is a `{0}` credential, not a service account key (type service_account)")]
    WrongType(String),
    #[error("lacks `{0}`")]
    MissingField(&'static str),
    #[error("has a `private_key` that is not an RSA private key in PEM form")]
    BadPrivateKey,
}

/// A service account key file (`service_account.json`).
pub struct ServiceAccountKey {
    pub client_email: String,
    pub token_uri: String,
    pub private_key_id: Option<String>,
    signing_key: EncodingKey,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads a key file and checks that its key can sign.
    pub fn parse(text: &SecretValue) -> Result<Self, KeyFileError> {
        // Read as a `Value` first: serde's error for a typed field can quote the value.
        let json: Value = serde_json::from_str(text.expose()).map_err(|e| {
            KeyFileError::NotJson(format!("line {}, column {}", e.line(), e.column()))
        })?;
        let field = |name: &'static str| {
            json.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.trim().is_empty())
                .ok_or(KeyFileError::MissingField(name))
        };
        if let Some(kind) = json.get("type").and_then(Value::as_str) {
            if kind != "service_account" {
                return Err(KeyFileError::WrongType(kind.chars().take(40).collect()));
            }
        }
        let private_key = field("private_key")?;
        let signing_key = EncodingKey::from_rsa_pem(private_key.as_bytes())
            .map_err(|_| KeyFileError::BadPrivateKey)?;
        let key = ServiceAccountKey {
            client_email: field("client_email")?.to_string(),
            token_uri: field("token_uri")?.to_string(),
            private_key_id: field("private_key_id").ok().map(str::to_string),
            signing_key,
        };
        // A PEM block that is not a usable RSA key only fails when signing.
        key.assertion(SystemTime::now())
            .map_err(|_| KeyFileError::BadPrivateKey)?;
        Ok(key)
    }

    /// The signed JWT that asks for a cloud-platform token, issued at `now`.
    pub fn assertion(&self, now: SystemTime) -> Result<SecretValue, TokenError> {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &self.client_email,
            scope: CLOUD_PLATFORM_SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .map(SecretValue::new)
            .map_err(|_| TokenError::Signing)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Why no access token was obtained. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the service account key could not sign the token request")]
    Signing,
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the token endpoint refused the service account: HTTP {status} {reason}")]
    Refused { status: u16, reason: String },
    #[error("the token endpoint answered without an access token")]
    Malformed,
}

/// An access token and how long it lives.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: SecretValue,
    pub lifetime: Duration,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenErrorResponse {
    error: String,
    error_description: String,
}

/// Exchanges assertions for access tokens at the key's `token_uri`.
#[derive(Debug)]
pub struct TokenExchange {
    key: ServiceAccountKey,
    http: reqwest::Client,
}

impl TokenExchange {
    pub fn new(key: ServiceAccountKey) -> Result<Self, TokenError> {
        let http = reqwest::Client::builder()
            .timeout(EXCHANGE_TIMEOUT)
            .build()
            .map_err(|e| TokenError::Unreachable(e.to_string()))?;
        Ok(TokenExchange { key, http })
    }

    pub fn client_email(&self) -> &str {
        &self.key.client_email
    }

    pub fn token_uri(&self) -> &str {
        &self.key.token_uri
    }

    /// Asks for a fresh access token.
    pub async fn fetch(&self) -> Result<AccessToken, TokenError> {
        let assertion = self.key.assertion(SystemTime::now())?;
        // The assertion is base64url and dots: nothing in it needs form-encoding.
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            assertion.expose()
        );
        let response = self
            .http
            .post(&self.key.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        if !(200..300).contains(&status) {
            return Err(TokenError::Refused {
                status,
                reason: refusal_reason(&bytes),
            });
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        if parsed.access_token.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(AccessToken {
            token: SecretValue::new(parsed.access_token),
            // Google issues tokens for an hour; a larger claim is capped so that no
            // provider-sent number can overflow the refresh schedule.
            lifetime: Duration::from_secs(parsed.expires_in.unwrap_or(3600).min(MAX_LIFETIME_SECS)),
        })
    }
}

impl TokenSource for TokenExchange {
    type Token = SecretValue;
    type Error = TokenError;
    async fn fetch(&self) -> Result<Fetched<SecretValue>, TokenError> {
        let token = TokenExchange::fetch(self).await?;
        Ok(Fetched {
            token: token.token,
            lifetime: token.lifetime,
        })
    }
}

/// The longest token lifetime believed: one day.
const MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// The OAuth error of a refusal (`invalid_grant: Invalid JWT Signature.`), short.
fn refusal_reason(body: &[u8]) -> String {
    let parsed: TokenErrorResponse = serde_json::from_slice(body).unwrap_or_default();
    let reason = match (parsed.error.is_empty(), parsed.error_description.is_empty()) {
        (true, _) => String::new(),
        (false, true) => parsed.error,
        (false, false) => format!("{}: {}", parsed.error, parsed.error_description),
    };
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    pub const TEST_PRIVATE_KEY: &str = include_str!("testdata/gcp-test-key.pem");
    pub const TEST_PUBLIC_KEY: &str = include_str!("testdata/gcp-test-key.pub.pem");

    pub fn key_file(token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-1",
            "private_key": TEST_PRIVATE_KEY,
            "client_email": "gateway@p.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[derive(Debug, Deserialize)]
    pub struct DecodedClaims {
        pub iss: String,
        pub scope: String,
        pub aud: String,
        pub iat: u64,
        pub exp: u64,
    }

    /// Verifies an assertion with the test public key and returns its claims and kid.
    pub fn verify(assertion: &str, token_uri: &str) -> (DecodedClaims, Option<String>) {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[token_uri]);
        validation.set_issuer(&["gateway@p.iam.gserviceaccount.com"]);
        let key = DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY.as_bytes()).unwrap();
        let data = jsonwebtoken::decode::<DecodedClaims>(assertion, &key, &validation).unwrap();
        (data.claims, data.header.kid)
    }

    #[test]
    fn assertion_is_an_rs256_jwt_with_the_service_account_claims() {
        let key =
            ServiceAccountKey::parse(&SecretValue::new(key_file("https://oauth2.example/token")))
                .unwrap();
        let now = SystemTime::now();
        let assertion = key.assertion(now).unwrap();
        let (claims, kid) = verify(assertion.expose(), "https://oauth2.example/token");
        let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(claims.iss, "gateway@p.iam.gserviceaccount.com");
        assert_eq!(claims.scope, CLOUD_PLATFORM_SCOPE);
        assert_eq!(claims.aud, "https://oauth2.example/token");
        assert_eq!((claims.iat, claims.exp), (iat, iat + 3600));
        assert_eq!(kid.as_deref(), Some("kid-1"));
    }

    #[test]
    fn bad_key_files_say_what_is_wrong_without_quoting_them() {
        let parse =
            |text: &str| ServiceAccountKey::parse(&SecretValue::new(text.into())).unwrap_err();
        assert!(matches!(parse("{not json"), KeyFileError::NotJson(_)));
        let mut v: Value = serde_json::from_str(&key_file("https://t")).unwrap();
        v.as_object_mut().unwrap().remove("client_email");
        assert_eq!(
            parse(&v.to_string()),
            KeyFileError::MissingField("client_email")
        );
        v["client_email"] = "a@b".into();
        v["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
        assert_eq!(parse(&v.to_string()), KeyFileError::BadPrivateKey);
        assert_eq!(
            parse(r#"{"type":"external_account"}"#),
            KeyFileError::WrongType("external_account".into())
        );
        let key = ServiceAccountKey::parse(&SecretValue::new(key_file("https://t"))).unwrap();
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn refusal_reasons_are_short_and_plain() {
        assert_eq!(
            refusal_reason(
                br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
            ),
            "invalid_grant: Invalid JWT Signature."
        );
        assert_eq!(refusal_reason(b"<html>"), "");
    }
}
