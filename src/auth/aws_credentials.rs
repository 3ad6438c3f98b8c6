//! `AWSCredentials`: AWS Signature Version 4 over the final provider request (path,
//! `host`, `content-type` and the transcoded body), with keys from a shared credentials
//! file held in a Secret (`credentials` key, `[profile]` sections).
//!
//! The region is the one the Bedrock host names (`bedrock-runtime.<region>.amazonaws.com`),
//! since a signature for another region is refused there; otherwise the policy's.
//! The credentials file is parsed here rather than with `aws-config`: the format used is
//! three keys in INI sections, and aws-config would bring the whole SDK runtime.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::{AttemptContext, AuthError, Credential, NotYetSupported, PolicySource};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

/// The credential of an `AWSCredentials` policy with a credentials file. OIDC
/// federation (`oidcExchangeToken`) is validated but not served yet (503).
pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    let Some(aws) = source.spec().aws_credentials.clone() else {
        source.problem(
            "spec.awsCredentials",
            "missing".into(),
            "type AWSCredentials needs `awsCredentials` with `region`".into(),
        );
        return None;
    };
    let Some(file) = &aws.credentials_file else {
        if aws.oidc_exchange_token.is_none() {
            source.problem(
                "spec.awsCredentials.credentialsFile",
                "missing".into(),
                "set `credentialsFile.secretRef` (or `oidcExchangeToken`)".into(),
            );
            return None;
        }
        return Some(Arc::new(NotYetSupported {
            policy_type: "AWSCredentials with oidcExchangeToken".into(),
        }));
    };
    let field = "spec.awsCredentials.credentialsFile.secretRef";
    let text = source.secret_text(field, &file.secret_ref, "credentials")?;
    match AwsCredentials::from_file(text.expose(), file.profile.as_deref(), &aws.region) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            source.problem(
                field,
                format!("the credentials file in Secret `{}` {e}", file.secret_ref.name),
                "store an AWS shared credentials file (aws_access_key_id, aws_secret_access_key under [profile]) in the Secret's `credentials`".into(),
            );
            None
        }
    }
}

/// The service name Bedrock's runtime endpoints sign with.
const SERVICE: &str = "bedrock";

pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: SecretValue,
    session_token: Option<SecretValue>,
    region: String,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is not secret, and it tells which key is in use.
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why a credentials file could not be used (never quoting its values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsFileError {
    #[error("has no `[{0}]` profile")]
    NoProfile(String),
    #[error("profile `[{profile}]` has no `{key}`")]
    MissingKey { profile: String, key: &'static str },
    #[error(
        "profile `[{profile}]`: `{key}` contains whitespace or a control or non-ASCII character"
    )]
    BadValue { profile: String, key: &'static str },
}

impl AwsCredentials {
    /// Reads `profile` (default `default`) from the text of a shared credentials file.
    pub fn from_file(
        file: &str,
        profile: Option<&str>,
        region: &str,
    ) -> Result<Self, CredentialsFileError> {
        let profile = profile.unwrap_or("default");
        let values = profile_values(file, profile)
            .ok_or_else(|| CredentialsFileError::NoProfile(profile.to_string()))?;
        let get = |key: &'static str| {
            values
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        // Values become header values (the key id and token) or signing input: one
        // printable ASCII word each, so no line break can inject a header.
        let checked = |key: &'static str, value: String| {
            if value.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(value)
            } else {
                Err(CredentialsFileError::BadValue {
                    profile: profile.to_string(),
                    key,
                })
            }
        };
        let required = |key: &'static str| {
            let value = get(key).ok_or(CredentialsFileError::MissingKey {
                profile: profile.to_string(),
                key,
            })?;
            checked(key, value)
        };
        let token = get("aws_session_token")
            .map(|t| checked("aws_session_token", t))
            .transpose()?;
        Ok(AwsCredentials {
            access_key_id: required("aws_access_key_id")?,
            secret_access_key: SecretValue::new(required("aws_secret_access_key")?),
            session_token: token.map(SecretValue::new),
            region: region.to_string(),
        })
    }

    /// The region to sign for when the request goes to `host`.
    fn region_for<'a>(&'a self, host: &'a str) -> &'a str {
        region_in_host(host).unwrap_or(&self.region)
    }
}

/// The `key = value` pairs of `[profile]` (or `[profile name]`, as in the config file).
fn profile_values(file: &str, profile: &str) -> Option<Vec<(String, String)>> {
    let mut in_profile = false;
    let mut found = false;
    let mut values = Vec::new();
    for line in file.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            let name = section.strip_prefix("profile ").unwrap_or(section).trim();
            in_profile = name == profile;
            found |= in_profile;
            continue;
        }
        if in_profile {
            if let Some((key, value)) = line.split_once('=') {
                values.push((key.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    found.then_some(values)
}

/// The region named by a Bedrock endpoint host (`bedrock-runtime.us-east-1.amazonaws.com`,
/// `bedrock-runtime-fips.us-gov-west-1.amazonaws.com`, with or without a port).
pub fn region_in_host(host: &str) -> Option<&str> {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let mut labels = name.split('.');
    let service = labels.next()?;
    let region = labels.next()?;
    let rest: Vec<&str> = labels.collect();
    let aws_domain = matches!(
        rest.as_slice(),
        ["amazonaws", "com"] | ["amazonaws", "com", "cn"]
    );
    (service.starts_with("bedrock") && aws_domain && !region.is_empty()).then_some(region)
}

impl Credential for AwsCredentials {
    fn apply(
        &self,
        request: &mut UpstreamRequest,
        context: &AttemptContext,
    ) -> Result<(), AuthError> {
        let identity = Credentials::new(
            &self.access_key_id,
            self.secret_access_key.expose(),
            self.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "llm-extproc",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region_for(context.host))
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| AuthError::Signing(e.to_string()))?
            .into();
        let content_type = request
            .headers
            .iter()
            .find(|(name, _)| name == "content-type")
            .map(|(_, v)| v.clone());
        let mut signed_headers = vec![("host", context.host)];
        if let Some(ct) = content_type.as_deref() {
            signed_headers.push(("content-type", ct));
        }
        let url = format!("https://{}{}", context.host, request.path);
        let signable = SignableRequest::new(
            "POST",
            &url,
            signed_headers.into_iter(),
            SignableBody::Bytes(context.body(request)),
        )
        .map_err(|e| AuthError::Signing(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| AuthError::Signing(e.to_string()))?
            .into_parts();
        let (headers, _) = instructions.into_parts();
        for header in headers {
            request
                .headers
                .push((header.name().to_string(), header.value().to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[profile prod]\naws_access_key_id=AKIDPROD\naws_secret_access_key=s2\naws_session_token=tok\n";

    #[test]
    fn reads_profiles() {
        let d = AwsCredentials::from_file(FILE, None, "us-east-1").unwrap();
        assert_eq!(d.access_key_id, "AKIDDEFAULT");
        assert!(d.session_token.is_none());
        let p = AwsCredentials::from_file(FILE, Some("prod"), "us-east-1").unwrap();
        assert_eq!(p.session_token.unwrap().expose(), "tok");
        assert_eq!(
            AwsCredentials::from_file(FILE, Some("dev"), "x").unwrap_err(),
            CredentialsFileError::NoProfile("dev".into())
        );
        assert!(!format!("{d:?}").contains("s1"));
    }

    #[test]
    fn region_comes_from_a_bedrock_host() {
        assert_eq!(
            region_in_host("bedrock-runtime.us-west-2.amazonaws.com"),
            Some("us-west-2")
        );
        assert_eq!(
            region_in_host("bedrock-runtime-fips.us-gov-west-1.amazonaws.com:443"),
            Some("us-gov-west-1")
        );
        assert_eq!(region_in_host("127.0.0.1:8080"), None);
        assert_eq!(region_in_host("bedrock.example.com"), None);
    }

    #[test]
    fn signs_host_content_type_date_and_token() {
        let c = AwsCredentials::from_file(FILE, Some("prod"), "eu-west-1").unwrap();
        let mut r = UpstreamRequest {
            path: "/model/anthropic.claude-v2%3A1/converse".into(),
            body: Some(b"{}".to_vec()),
            headers: vec![("content-type".into(), "application/json".into())],
            usage_injected: false,
        };
        let context = AttemptContext {
            client_body: b"",
            host: "bedrock-runtime.us-east-1.amazonaws.com",
        };
        c.apply(&mut r, &context).unwrap();
        let get = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDPROD/"));
        assert!(auth.contains("/us-east-1/bedrock/aws4_request"));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"));
        assert_eq!(get("x-amz-security-token").as_deref(), Some("tok"));
        assert!(get("x-amz-date").is_some());
    }
}
