//! Where temporary AWS keys come from, each a [`TokenSource`] for the token cache:
//!
//! - STS `AssumeRoleWithWebIdentity` with an OIDC token of the policy's provider
//!   (`oidcExchangeToken`) or with the token file of EKS IRSA
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`);
//! - the container credentials endpoint (EKS Pod Identity, ECS):
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`, with the authorization
//!   token of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `_TOKEN`;
//! - IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, default http://169.254.169.254).
//!
//! STS is `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the regional endpoint,
//! as the AWS SDKs resolve it.
//!
//! Written by hand rather than with `aws-config`: these are three small HTTP exchanges,
//! and aws-config brings the AWS SDK runtime and the STS client (see the commit).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::oauth::{self, ExchangeError};
use super::oidc::OidcClient;
use super::token_cache::{Fetched, TokenSource};
use crate::secret::SecretValue;

/// Temporary (or long-term) AWS keys.
#[derive(Clone)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretValue,
    pub session_token: Option<SecretValue>,
}

impl fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is not secret, and it tells which key is in use.
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

const STS: &str = "AWS STS";
const CONTAINER: &str = "the container credentials endpoint";
const IMDS: &str = "the EC2 instance metadata service (IMDSv2)";
/// The session lifetime asked of STS (its default, and the longest a role chain allows).
const SESSION_SECONDS: &str = "3600";
/// The role session name AssumeRoleWithWebIdentity records (CloudTrail shows it).
pub const DEFAULT_SESSION_NAME: &str = "llm-extproc";

/// The STS endpoint for `region`, honouring the SDKs' endpoint variables.
pub fn sts_endpoint(env: &dyn Fn(&str) -> Option<String>, region: &str) -> String {
    let set = |name| env(name).filter(|u: &String| !u.trim().is_empty());
    set("AWS_ENDPOINT_URL_STS")
        .or_else(|| set("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"))
}

/// Where the web identity token comes from.
pub enum WebIdentity {
    Oidc(OidcClient),
    /// Read at every refresh: the kubelet rotates it.
    File(PathBuf),
}

/// `AssumeRoleWithWebIdentity` for `role_arn`.
pub struct AssumeRole {
    pub identity: WebIdentity,
    pub role_arn: String,
    pub session_name: String,
    pub sts_url: String,
    pub http: reqwest::Client,
}

impl TokenSource for AssumeRole {
    type Token = Arc<AwsKeys>;
    type Error = ExchangeError;

    async fn fetch(&self) -> Result<Fetched<Arc<AwsKeys>>, ExchangeError> {
        let token = match &self.identity {
            WebIdentity::Oidc(client) => client.fetch().await?.token,
            WebIdentity::File(path) => SecretValue::new(read_token_file(path, "web identity")?),
        };
        let body = oauth::form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &self.role_arn),
            ("RoleSessionName", &self.session_name),
            ("DurationSeconds", SESSION_SECONDS),
            ("WebIdentityToken", token.expose()),
        ]);
        let request = self
            .http
            .post(&self.sts_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let answer = send_aws(STS, request).await?;
        let text = String::from_utf8_lossy(&answer);
        let field = |name| xml_text(&text, name);
        let keys = (
            field("AccessKeyId"),
            field("SecretAccessKey"),
            field("SessionToken"),
            field("Expiration"),
        );
        let (Some(id), Some(secret), Some(session), Some(expiration)) = keys else {
            return Err(ExchangeError::Malformed {
                endpoint: STS,
                what: "Credentials (AccessKeyId, SecretAccessKey, SessionToken, Expiration)",
            });
        };
        Ok(Fetched {
            lifetime: lifetime_until(STS, expiration)?,
            token: Arc::new(checked_keys(STS, id, secret, Some(session))?),
        })
    }
}

/// The container credentials endpoint (EKS Pod Identity, ECS task roles).
pub struct ContainerEndpoint {
    pub url: String,
    pub authorization: Option<ContainerAuthorization>,
    pub http: reqwest::Client,
}

pub enum ContainerAuthorization {
    /// Read at every refresh (EKS Pod Identity rotates it).
    File(PathBuf),
    Value(SecretValue),
}

impl TokenSource for ContainerEndpoint {
    type Token = Arc<AwsKeys>;
    type Error = ExchangeError;

    async fn fetch(&self) -> Result<Fetched<Arc<AwsKeys>>, ExchangeError> {
        let mut request = self.http.get(&self.url);
        match &self.authorization {
            Some(ContainerAuthorization::File(path)) => {
                request = request.header(
                    "authorization",
                    read_token_file(path, "container authorization")?,
                );
            }
            Some(ContainerAuthorization::Value(token)) => {
                request = request.header("authorization", token.expose());
            }
            None => {}
        }
        let answer = oauth::send(CONTAINER, request).await?;
        json_keys(CONTAINER, &answer)
    }
}

/// IMDSv2: a session token, the instance profile's role name, then its keys.
pub struct InstanceMetadata {
    pub base: String,
    pub http: reqwest::Client,
}

impl TokenSource for InstanceMetadata {
    type Token = Arc<AwsKeys>;
    type Error = ExchangeError;

    async fn fetch(&self) -> Result<Fetched<Arc<AwsKeys>>, ExchangeError> {
        let base = self.base.trim_end_matches('/');
        let token = oauth::send(
            IMDS,
            self.http
                .put(format!("{base}/latest/api/token"))
                .header("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
        )
        .await?;
        let token = String::from_utf8(token).map_err(|_| ExchangeError::Malformed {
            endpoint: IMDS,
            what: "a session token",
        })?;
        let get = |path: String| {
            self.http
                .get(format!("{base}{path}"))
                .header("x-aws-ec2-metadata-token", token.trim())
        };
        let roles = oauth::send(
            IMDS,
            get("/latest/meta-data/iam/security-credentials/".into()),
        )
        .await?;
        let role = String::from_utf8_lossy(&roles)
            .lines()
            .next()
            .map(str::trim)
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
            .map(str::to_string)
            .ok_or(ExchangeError::Malformed {
                endpoint: IMDS,
                what: "an instance profile role",
            })?;
        let answer = oauth::send(
            IMDS,
            get(format!("/latest/meta-data/iam/security-credentials/{role}")),
        )
        .await?;
        json_keys(IMDS, &answer)
    }
}

/// The JSON keys of the container endpoint and IMDS: AccessKeyId, SecretAccessKey,
/// Token, Expiration.
fn json_keys(endpoint: &'static str, body: &[u8]) -> Result<Fetched<Arc<AwsKeys>>, ExchangeError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Keys {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        token: Option<String>,
        expiration: String,
    }
    let keys: Keys = serde_json::from_slice(body).map_err(|_| ExchangeError::Malformed {
        endpoint,
        what: "AccessKeyId, SecretAccessKey, Token and Expiration",
    })?;
    Ok(Fetched {
        lifetime: lifetime_until(endpoint, &keys.expiration)?,
        token: Arc::new(checked_keys(
            endpoint,
            &keys.access_key_id,
            &keys.secret_access_key,
            keys.token.as_deref(),
        )?),
    })
}

/// Keys that can go into headers and signatures: one printable ASCII word each.
fn checked_keys(
    endpoint: &'static str,
    id: &str,
    secret: &str,
    session: Option<&str>,
) -> Result<AwsKeys, ExchangeError> {
    let word = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic());
    if !word(id) || !word(secret) || !session.is_none_or(word) {
        return Err(ExchangeError::Malformed {
            endpoint,
            what: "keys of printable ASCII",
        });
    }
    Ok(AwsKeys {
        access_key_id: id.to_string(),
        secret_access_key: SecretValue::new(secret.to_string()),
        session_token: session.map(|s| SecretValue::new(s.to_string())),
    })
}

/// How long until an RFC 3339 `Expiration`, capped at a day.
fn lifetime_until(endpoint: &'static str, expiration: &str) -> Result<Duration, ExchangeError> {
    let at = time::OffsetDateTime::parse(
        expiration.trim(),
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| ExchangeError::Malformed {
        endpoint,
        what: "an RFC 3339 Expiration",
    })?;
    let nanos = u64::try_from(at.unix_timestamp_nanos()).unwrap_or_default();
    let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    Ok(left.min(oauth::MAX_LIFETIME))
}

/// Sends an AWS query-API request; a refusal carries the error's Code and Message.
async fn send_aws(
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<Vec<u8>, ExchangeError> {
    oauth::send_with(endpoint, request, aws_error_reason).await
}

/// `Code: Message` of an AWS query-API error (`<ErrorResponse><Error>...`), one short line.
fn aws_error_reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let reason = [xml_text(&text, "Code"), xml_text(&text, "Message")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// The text of the first `<name>` element (AWS query-API XML has no attributes or CDATA
/// in these fields).
fn xml_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim())
}

fn read_token_file(path: &PathBuf, what: &str) -> Result<String, ExchangeError> {
    // A small local file, read on the refresh task (never on a request).
    let text = std::fs::read_to_string(path).map_err(|e| {
        ExchangeError::Local(format!(
            "the {what} token file `{}` cannot be read: {e}",
            path.display()
        ))
    })?;
    let token = text.trim().to_string();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ExchangeError::Local(format!(
            "the {what} token file `{}` does not hold one token",
            path.display()
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_answer_fields() {
        // The recorded answer (../shared/fixtures/token/aws-sts-assume-role-with-web-identity.json).
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\n  <AccessKeyId>ASIARABCDEFGHIJKLMNOP</AccessKeyId>\n  <SecretAccessKey>TESTSECRET</SecretAccessKey>\n  <SessionToken>TESTSESSIONTOKEN</SessionToken>\n  <Expiration>2021-08-17T20:55:04Z</Expiration>\n</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_text(xml, "AccessKeyId"), Some("ASIARABCDEFGHIJKLMNOP"));
        assert_eq!(xml_text(xml, "Expiration"), Some("2021-08-17T20:55:04Z"));
        assert_eq!(xml_text(xml, "Missing"), None);
        assert_eq!(
            lifetime_until(STS, "2021-08-17T20:55:04Z").unwrap(),
            Duration::ZERO,
            "long expired"
        );
        let error = b"<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key from your identity provider</Message></Error></ErrorResponse>";
        assert_eq!(
            aws_error_reason(error),
            "InvalidIdentityToken: Couldn't retrieve verification key from your identity provider"
        );
    }

    #[test]
    fn sts_endpoint_follows_the_sdk_variables() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            sts_endpoint(&env(&[]), "eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint(
                &env(&[
                    ("AWS_ENDPOINT_URL_STS", ""),
                    ("AWS_ENDPOINT_URL", "http://all")
                ]),
                "x"
            ),
            "http://all",
            "an empty variable is unset"
        );
        assert_eq!(
            sts_endpoint(
                &env(&[
                    ("AWS_ENDPOINT_URL", "http://all"),
                    ("AWS_ENDPOINT_URL_STS", "http://sts")
                ]),
                "x"
            ),
            "http://sts"
        );
    }

    #[test]
    fn json_keys_need_every_field_and_plain_values() {
        let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
        let expiration = later
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let body = format!(
            r#"{{"AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"{expiration}"}}"#
        );
        let keys = json_keys(CONTAINER, body.as_bytes()).unwrap();
        assert_eq!(keys.token.access_key_id, "ASIA1");
        assert!(keys.lifetime > Duration::from_secs(590));
        assert!(json_keys(CONTAINER, br#"{"AccessKeyId":"ASIA1"}"#).is_err());
        let bad = body.replace("\"s\"", "\"s\\nx\"");
        assert!(json_keys(CONTAINER, bad.as_bytes()).is_err());
        assert!(!format!("{:?}", keys.token).contains("\"s\""));
    }
}
