//! `AWSCredentials` with temporary keys, against fake OIDC, STS, container and IMDS
//! endpoints on local ports.

use std::time::Duration;

use super::*;
use crate::auth::test_support::{env, fake_token_endpoint, form, token_answer, TestSource};

fn in_minutes(minutes: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::minutes(minutes))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// An STS answer shaped on the recording (../shared/fixtures/token).
fn sts_answer(id: &str) -> (u16, String) {
    (
        200,
        format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleWithWebIdentityResult>\n    <Credentials>\n      <AccessKeyId>{id}</AccessKeyId>\n      <SecretAccessKey>secret-of-{id}</SecretAccessKey>\n      <SessionToken>session-of-{id}</SessionToken>\n      <Expiration>{}</Expiration>\n    </Credentials>\n  </AssumeRoleWithWebIdentityResult>\n</AssumeRoleWithWebIdentityResponse>\n",
            in_minutes(60)
        ),
    )
}

/// The Authorization and x-amz-security-token of the first signed attempt (within 3 s).
async fn signed(credential: &Arc<dyn Credential>) -> (String, Option<String>) {
    let context = AttemptContext {
        client_body: b"{}",
        host: "bedrock-runtime.us-east-1.amazonaws.com",
    };
    for _ in 0..300 {
        let mut request = UpstreamRequest {
            path: "/model/m/converse".into(),
            ..UpstreamRequest::default()
        };
        if credential.apply(&mut request, &context).is_ok() {
            let get = |n: &str| {
                request
                    .headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            };
            return (get("authorization").unwrap(), get("x-amz-security-token"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no keys within 3 s");
}

#[tokio::test]
async fn oidc_token_assumes_the_role() {
    let oidc = fake_token_endpoint(vec![token_answer("oidc-jwt", 600)]).await;
    let sts = fake_token_endpoint(vec![sts_answer("ASIAOIDC")]).await;
    let spec = format!(
        "{{type: AWSCredentials, awsCredentials: {{region: us-east-1, oidcExchangeToken: {{awsRoleArn: \"arn:aws:iam::123456789012:role/gw\", \
         oidc: {{provider: {{issuer: \"http://idp\", tokenEndpoint: \"{}\"}}, clientID: gw, clientSecret: {{name: idp}}}}}}}}}}",
        oidc.uri
    );
    let mut source = TestSource::new("aws-oidc", &spec, &[("idp/client-secret", "idp-secret")]);
    let credential = build_with(&mut source, &env(&[("AWS_ENDPOINT_URL_STS", &sts.uri)]))
        .unwrap_or_else(|| panic!("{:?}", source.problems));
    let (auth, token) = signed(&credential).await;
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAOIDC/"),
        "{auth}"
    );
    assert_eq!(token.as_deref(), Some("session-of-ASIAOIDC"));
    let sent = form(&sts.bodies.lock().unwrap()[0]);
    assert_eq!(sent["Action"], "AssumeRoleWithWebIdentity");
    assert_eq!(sent["RoleArn"], "arn:aws:iam::123456789012:role/gw");
    assert_eq!(sent["WebIdentityToken"], "oidc-jwt");
    assert_eq!(sent["RoleSessionName"], DEFAULT_SESSION_NAME);
    assert!(!format!("{credential:?}").contains("secret-of"));
}

#[tokio::test]
async fn irsa_token_file_assumes_the_role_in_the_environment() {
    let sts = fake_token_endpoint(vec![sts_answer("ASIAIRSA")]).await;
    let file = std::env::temp_dir().join(format!("irsa-token-{}", std::process::id()));
    std::fs::write(&file, "eks-projected-token\n").unwrap();
    let path = file.to_string_lossy().to_string();
    let mut source = TestSource::new(
        "aws-irsa",
        "{type: AWSCredentials, awsCredentials: {region: us-east-1}}",
        &[],
    );
    let vars = [
        ("AWS_ENDPOINT_URL", sts.uri.as_str()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", path.as_str()),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"),
        ("AWS_ROLE_SESSION_NAME", "pod-1"),
    ];
    let credential = build_with(&mut source, &env(&vars)).unwrap();
    let (auth, _) = signed(&credential).await;
    assert!(auth.contains("Credential=ASIAIRSA/"), "{auth}");
    let sent = form(&sts.bodies.lock().unwrap()[0]);
    assert_eq!(sent["WebIdentityToken"], "eks-projected-token");
    assert_eq!(sent["RoleSessionName"], "pod-1");
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn environment_keys_come_first() {
    let mut source = TestSource::new(
        "aws-env",
        "{type: AWSCredentials, awsCredentials: {region: us-east-1}}",
        &[],
    );
    let vars = [
        ("AWS_ACCESS_KEY_ID", "AKIAENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ("AWS_SESSION_TOKEN", "env-session"),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::1:role/ignored-when-keys-are-set",
        ),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent"),
    ];
    let credential = build_with(&mut source, &env(&vars)).unwrap();
    let (auth, token) = signed(&credential).await;
    assert!(auth.contains("Credential=AKIAENV/"));
    assert_eq!(token.as_deref(), Some("env-session"));
}

fn json_keys_answer(id: &str) -> (u16, String) {
    (
        200,
        format!(
            r#"{{"AccessKeyId":"{id}","SecretAccessKey":"secret-of-{id}","Token":"session-of-{id}","Expiration":"{}"}}"#,
            in_minutes(60)
        ),
    )
}

#[tokio::test]
async fn container_endpoint_with_its_authorization_token_file() {
    let endpoint = fake_token_endpoint(vec![json_keys_answer("ASIAPOD")]).await;
    let file = std::env::temp_dir().join(format!("pod-identity-{}", std::process::id()));
    std::fs::write(&file, "pod-identity-token").unwrap();
    let path = file.to_string_lossy().to_string();
    let mut source = TestSource::new(
        "aws-pod",
        "{type: AWSCredentials, awsCredentials: {region: us-east-1}}",
        &[],
    );
    let vars = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.uri.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", path.as_str()),
    ];
    let credential = build_with(&mut source, &env(&vars)).unwrap();
    let (auth, token) = signed(&credential).await;
    assert!(auth.contains("Credential=ASIAPOD/"));
    assert_eq!(token.as_deref(), Some("session-of-ASIAPOD"));
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn imds_v2_session_token_role_then_keys() {
    let imds = fake_token_endpoint(vec![
        (200, "imds-session-token".into()),
        (200, "gateway-role\n".into()),
        json_keys_answer("ASIAEC2"),
    ])
    .await;
    let base = imds.uri.trim_end_matches("/token").to_string();
    let mut source = TestSource::new(
        "aws-imds",
        "{type: AWSCredentials, awsCredentials: {region: us-east-1}}",
        &[],
    );
    let credential = build_with(
        &mut source,
        &env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &base)]),
    )
    .unwrap();
    let (auth, _) = signed(&credential).await;
    assert!(auth.contains("Credential=ASIAEC2/"));
}

#[test]
fn without_any_credentials_and_imds_off_the_policy_is_refused() {
    let mut source = TestSource::new(
        "aws-none",
        "{type: AWSCredentials, awsCredentials: {region: us-east-1}}",
        &[],
    );
    assert!(build_with(&mut source, &env(&[("AWS_EC2_METADATA_DISABLED", "true")])).is_none());
    assert!(
        source.problems[0].contains("AWS_EC2_METADATA_DISABLED"),
        "{:?}",
        source.problems
    );
    let mut source = TestSource::new(
        "aws-no-role",
        "{type: AWSCredentials, awsCredentials: {region: us-east-1, oidcExchangeToken: {oidc: {provider: {issuer: \"https://idp\"}, clientID: c, clientSecret: {name: s}}}}}",
        &[("s/client-secret", "x")],
    );
    assert!(build_with(&mut source, &env(&[])).is_none());
    assert!(
        source.problems[0].contains("awsRoleArn"),
        "{:?}",
        source.problems
    );
}
