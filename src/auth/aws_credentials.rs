//! `AWSCredentials`: AWS Signature Version 4 over the final provider request (path,
//! `host`, `content-type` and the transcoded body, with the session token of temporary
//! keys), with keys from:
//! - `credentialsFile`: a shared credentials file held in a Secret (`credentials` key,
//!   `[profile]` sections, `aws_session_token` included), read again when it changes;
//! - `oidcExchangeToken`: STS `AssumeRoleWithWebIdentity` for `awsRoleArn` with a token
//!   of the policy's OIDC provider;
//! - neither: the standard chain, the first that is set up of the environment's keys
//!   (`AWS_ACCESS_KEY_ID`...), EKS IRSA (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`),
//!   the container credentials endpoint (EKS Pod Identity, ECS) and IMDSv2.
//!
//! Temporary keys live in the shared token cache (see [`super::aws_sources`]).
//!
//! The region is the one the Bedrock host names (`bedrock-runtime.<region>.amazonaws.com`),
//! since a signature for another region is refused there; otherwise the policy's.
//! The credentials file is parsed here rather than with `aws-config`: the format used is
//! a few keys in INI sections, and aws-config would bring the whole SDK runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use serde_json::Value;

use super::aws_sources::{
    sts_endpoint, AssumeRole, AwsKeys, ContainerAuthorization, ContainerEndpoint, InstanceMetadata,
    WebIdentity, DEFAULT_SESSION_NAME,
};
use super::oauth;
use super::oidc::OidcClient;
use super::token_cache::{CacheKey, TokenCache};
use super::{AttemptContext, AuthError, Credential, PolicySource};
use crate::secret::SecretValue;
use crate::wire::UpstreamRequest;

const POLICY_TYPE: &str = "AWSCredentials";

pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    build_with(source, &|name| std::env::var(name).ok())
}

/// [`build`] with the process environment given (tests pass their own).
fn build_with(
    source: &mut dyn PolicySource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Arc<dyn Credential>> {
    let Some(aws) = source.spec().aws_credentials.clone() else {
        source.problem(
            "spec.awsCredentials",
            "missing".into(),
            "type AWSCredentials needs `awsCredentials` with `region`".into(),
        );
        return None;
    };
    let keys = match (&aws.credentials_file, &aws.oidc_exchange_token) {
        (Some(_), Some(_)) => {
            source.problem(
                "spec.awsCredentials",
                "sets both credentialsFile and oidcExchangeToken".into(),
                "keep one of them".into(),
            );
            return None;
        }
        (Some(file), None) => {
            let field = "spec.awsCredentials.credentialsFile.secretRef";
            let text = source.secret_text(field, &file.secret_ref, "credentials")?;
            match keys_from_file(text.expose(), file.profile.as_deref()) {
                Ok(keys) => Keys::Static(Arc::new(keys)),
                Err(e) => {
                    source.problem(
                        field,
                        format!("the credentials file in Secret `{}` {e}", file.secret_ref.name),
                        "store an AWS shared credentials file (aws_access_key_id, aws_secret_access_key and, for temporary keys, aws_session_token under [profile]) in the Secret's `credentials`".into(),
                    );
                    return None;
                }
            }
        }
        (None, Some(exchange)) => oidc_role(source, env, exchange, &aws.region)?,
        (None, None) => standard_chain(source, env, &aws.region)?,
    };
    Some(Arc::new(AwsCredentials {
        keys,
        region: aws.region.clone(),
    }))
}

/// `oidcExchangeToken`: the policy's OIDC token exchanged for `awsRoleArn`'s keys.
fn oidc_role(
    source: &mut dyn PolicySource,
    env: &dyn Fn(&str) -> Option<String>,
    exchange: &Value,
    region: &str,
) -> Option<Keys> {
    let field = "spec.awsCredentials.oidcExchangeToken";
    let role_arn = exchange
        .get("awsRoleArn")
        .and_then(Value::as_str)
        .filter(|arn| arn.starts_with("arn:"))
        .map(str::to_string);
    let client = OidcClient::from_policy(source, field, exchange, &["awsRoleArn"]);
    let Some(role_arn) = role_arn else {
        source.problem(
            &format!("{field}.awsRoleArn"),
            "missing or not an ARN".into(),
            "set the ARN of the IAM role to assume, e.g. arn:aws:iam::123456789012:role/bedrock-gateway".into(),
        );
        return None;
    };
    let client = client?;
    let key = CacheKey::new(
        source.policy_name(),
        POLICY_TYPE,
        format!("role {role_arn} with {}", client.identity()),
    )
    .with_secrets([client.secret()]);
    let exchange = AssumeRole {
        identity: WebIdentity::Oidc(client),
        role_arn,
        session_name: DEFAULT_SESSION_NAME.into(),
        sts_url: sts_endpoint(env, region),
        http: oauth::http_client(),
    };
    Some(Keys::Rotating(TokenCache::start(key, exchange)))
}

/// The standard chain, as the AWS SDKs walk it: the first link that is set up.
fn standard_chain(
    source: &mut dyn PolicySource,
    env: &dyn Fn(&str) -> Option<String>,
    region: &str,
) -> Option<Keys> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let cache = |source: &mut dyn PolicySource, identity: String| {
        CacheKey::new(source.policy_name(), POLICY_TYPE, identity)
    };
    if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        let session = var("AWS_SESSION_TOKEN");
        let plain = |v: &str| v.bytes().all(|b| b.is_ascii_graphic());
        if !(plain(&id) && plain(&secret) && session.as_deref().is_none_or(plain)) {
            source.problem(
                "spec.awsCredentials",
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_SESSION_TOKEN contains whitespace or a control or non-ASCII character".into(),
                "set the bare keys in the sidecar's environment".into(),
            );
            return None;
        }
        return Some(Keys::Static(Arc::new(AwsKeys {
            access_key_id: id,
            secret_access_key: SecretValue::new(secret),
            session_token: session.map(SecretValue::new),
        })));
    }
    if let (Some(file), Some(role_arn)) = (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
    {
        let session_name =
            var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| DEFAULT_SESSION_NAME.into());
        let sts_url = sts_endpoint(env, region);
        let key = cache(
            source,
            format!("role {role_arn} with web identity token file {file} at {sts_url}"),
        );
        let exchange = AssumeRole {
            identity: WebIdentity::File(PathBuf::from(file)),
            role_arn,
            session_name,
            sts_url,
            http: oauth::http_client(),
        };
        return Some(Keys::Rotating(TokenCache::start(key, exchange)));
    }
    let container = var("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .map(|path| format!("http://169.254.170.2{path}"))
    });
    if let Some(url) = container {
        let authorization = match (
            var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(file), _) => Some(ContainerAuthorization::File(PathBuf::from(file))),
            (None, Some(token)) => Some(ContainerAuthorization::Value(SecretValue::new(token))),
            (None, None) => None,
        };
        let secret = match &authorization {
            Some(ContainerAuthorization::Value(token)) => Some(token.expose().to_string()),
            _ => None,
        };
        let key = cache(source, format!("container credentials endpoint {url}"))
            .with_secrets(secret.as_deref());
        let endpoint = ContainerEndpoint {
            url,
            authorization,
            http: oauth::metadata_client(),
        };
        return Some(Keys::Rotating(TokenCache::start(key, endpoint)));
    }
    if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        source.problem(
            "spec.awsCredentials.credentialsFile",
            "missing, and the environment has no AWS credentials (keys, AWS_WEB_IDENTITY_TOKEN_FILE, a container credentials endpoint) while AWS_EC2_METADATA_DISABLED turns off IMDS".into(),
            "set `credentialsFile` or `oidcExchangeToken`, or give the sidecar AWS credentials (IRSA, EKS Pod Identity, an instance profile)".into(),
        );
        return None;
    }
    let base =
        var("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
    let key = cache(source, format!("instance metadata at {base}"));
    let imds = InstanceMetadata {
        base,
        http: oauth::metadata_client(),
    };
    Some(Keys::Rotating(TokenCache::start(key, imds)))
}

/// The service name Bedrock's runtime endpoints sign with.
const SERVICE: &str = "bedrock";

#[derive(Debug)]
pub struct AwsCredentials {
    keys: Keys,
    region: String,
}

/// Keys read once (a file, the environment) or temporary ones kept fresh.
#[derive(Debug)]
enum Keys {
    Static(Arc<AwsKeys>),
    Rotating(TokenCache<Arc<AwsKeys>>),
}

impl Keys {
    fn current(&self) -> Result<Arc<AwsKeys>, AuthError> {
        match self {
            Keys::Static(keys) => Ok(keys.clone()),
            Keys::Rotating(cache) => cache.current(),
        }
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

/// Reads `profile` (default `default`) from the text of a shared credentials file.
pub fn keys_from_file(file: &str, profile: Option<&str>) -> Result<AwsKeys, CredentialsFileError> {
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
    Ok(AwsKeys {
        access_key_id: required("aws_access_key_id")?,
        secret_access_key: SecretValue::new(required("aws_secret_access_key")?),
        session_token: token.map(SecretValue::new),
    })
}

impl AwsCredentials {
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
        let keys = self.keys.current()?;
        let identity = Credentials::new(
            &keys.access_key_id,
            keys.secret_access_key.expose(),
            keys.session_token.as_ref().map(|t| t.expose().to_string()),
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
        let d = keys_from_file(FILE, None).unwrap();
        assert_eq!(d.access_key_id, "AKIDDEFAULT");
        assert!(d.session_token.is_none());
        let p = keys_from_file(FILE, Some("prod")).unwrap();
        assert_eq!(p.session_token.unwrap().expose(), "tok");
        assert_eq!(
            keys_from_file(FILE, Some("dev")).unwrap_err(),
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
        let c = AwsCredentials {
            keys: Keys::Static(Arc::new(keys_from_file(FILE, Some("prod")).unwrap())),
            region: "eu-west-1".into(),
        };
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

#[cfg(test)]
#[path = "aws_credentials_tests.rs"]
mod chain_tests;
