//! The OAuth 2.0 token request every rotating credential makes somewhere (Entra, an
//! OIDC provider, Google STS): a form POST answered with `access_token` and
//! `expires_in`, or with `error` and `error_description`.
//!
//! Errors name the endpoint's role and carry the provider's OAuth error, never a form
//! value or a token.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::token_cache::Fetched;
use crate::secret::SecretValue;

/// Most time one token request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Assumed when an answer gives no `expires_in` (the usual hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest lifetime believed: one day (no provider-sent number can overflow the
/// refresh schedule).
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why a token request failed. `endpoint` says which one (e.g. "the Entra ID token
/// endpoint"); nothing here holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("{endpoint} could not be reached: {reason}")]
    Unreachable {
        endpoint: &'static str,
        reason: String,
    },
    #[error("{endpoint} refused the request: HTTP {status} {reason}")]
    Refused {
        endpoint: &'static str,
        status: u16,
        reason: String,
    },
    #[error("{endpoint} answered without {what}")]
    Malformed {
        endpoint: &'static str,
        what: &'static str,
    },
    #[error("{0}")]
    Local(String),
}

/// A client with the token requests' timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// A client for a link-local metadata endpoint, which off its platform never answers:
/// the connection attempt gives up after a second, as the AWS SDKs' does.
pub fn metadata_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap_or_default()
}

/// `application/x-www-form-urlencoded` of `fields` (unreserved characters kept).
pub fn form(fields: &[(&str, &str)]) -> String {
    const VALUE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", k, utf8_percent_encode(v, VALUE)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Posts `body` as a form and returns the answer's bytes when it is a 2xx.
pub async fn post_form(
    http: &reqwest::Client,
    endpoint: &'static str,
    url: &str,
    body: String,
    headers: &[(&str, &str)],
) -> Result<Vec<u8>, ExchangeError> {
    let mut request = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(endpoint, request).await
}

/// Sends `request`; the body of a 2xx answer, else the refusal's OAuth error.
pub async fn send(
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Vec<u8>, ExchangeError> {
    send_with(endpoint, request, refusal_reason).await
}

/// [`send`], with the refusal's reason read by `reason` (for non-OAuth error bodies).
pub async fn send_with(
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
    reason: fn(&[u8]) -> String,
) -> Result<Vec<u8>, ExchangeError> {
    let unreachable = |e: reqwest::Error| ExchangeError::Unreachable {
        endpoint,
        reason: e.without_url().to_string(),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(unreachable)?;
    if !(200..300).contains(&status) {
        return Err(ExchangeError::Refused {
            endpoint,
            status,
            reason: reason(&bytes),
        });
    }
    Ok(bytes.to_vec())
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<ExpiresIn>,
}

/// `expires_in` is a number in the RFC, a string at some providers (Entra v1).
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpiresIn {
    Number(u64),
    Text(String),
}

/// The access token of a token answer and its lifetime.
pub fn access_token(
    endpoint: &'static str,
    body: &[u8],
) -> Result<Fetched<SecretValue>, ExchangeError> {
    let malformed = ExchangeError::Malformed {
        endpoint,
        what: "an access_token",
    };
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|_| malformed.clone())?;
    if parsed.access_token.is_empty() {
        return Err(malformed);
    }
    let seconds = match parsed.expires_in {
        Some(ExpiresIn::Number(n)) => Some(n),
        Some(ExpiresIn::Text(t)) => t.trim().parse().ok(),
        None => None,
    };
    Ok(Fetched {
        token: SecretValue::new(parsed.access_token),
        lifetime: seconds
            .map_or(DEFAULT_LIFETIME, Duration::from_secs)
            .min(MAX_LIFETIME),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorResponse {
    error: Option<serde_json::Value>,
    error_description: Option<String>,
}

/// The OAuth error of a refusal (`invalid_client: AADSTS7000215: ...`), on one short
/// line. Google STS and IAM put a `{"error": {"message", "status"}}` object instead.
pub fn refusal_reason(body: &[u8]) -> String {
    let parsed: ErrorResponse = serde_json::from_slice(body).unwrap_or_default();
    let error = match &parsed.error {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => {
            let field = |name: &str| o.get(name).and_then(|v| v.as_str()).unwrap_or_default();
            [field("status"), field("message")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        }
        _ => String::new(),
    };
    let reason = match parsed.error_description.filter(|d| !d.is_empty()) {
        Some(description) if !error.is_empty() => format!("{error}: {description}"),
        _ => error,
    };
    // Entra's descriptions go on with trace and correlation ids on further lines.
    reason
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_encode_reserved_characters() {
        assert_eq!(
            form(&[
                ("scope", "https://cognitiveservices.azure.com/.default"),
                ("a", "x y&z")
            ]),
            "scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default&a=x%20y%26z"
        );
    }

    #[test]
    fn token_answers() {
        // The Entra documentation's answer (../shared/fixtures/token).
        let t = access_token(
            "e",
            br#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0eX"}"#,
        )
        .unwrap();
        assert_eq!(
            (t.token.expose(), t.lifetime),
            ("eyJ0eX", Duration::from_secs(3599))
        );
        let t = access_token("e", br#"{"access_token":"a","expires_in":"120"}"#).unwrap();
        assert_eq!(t.lifetime, Duration::from_secs(120));
        let t = access_token("e", br#"{"access_token":"a","expires_in":99999999999}"#).unwrap();
        assert_eq!(t.lifetime, MAX_LIFETIME);
        assert!(access_token("e", br#"{"access_token":""}"#).is_err());
        assert!(access_token("e", b"<html>").is_err());
    }

    #[test]
    fn refusal_reasons_are_one_short_line() {
        // The Entra documentation's error (../shared/fixtures/token), trace ids cut.
        let entra = br#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' is not valid.\r\nTrace ID: 255d1aef"}"#;
        assert_eq!(
            refusal_reason(entra),
            "invalid_scope: AADSTS70011: The provided value for the input parameter 'scope' is not valid."
        );
        let google = br#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            refusal_reason(google),
            "PERMISSION_DENIED: Permission 'iam.serviceAccounts.getAccessToken' denied"
        );
        assert_eq!(refusal_reason(b"<html>"), "");
    }
}
