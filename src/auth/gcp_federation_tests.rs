//! Workload identity federation against fake OIDC, Google STS and IAM Credentials
//! endpoints on local ports.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::gcp_credentials::build_with;
use crate::auth::test_support::{env, fake_token_endpoint, form, token_answer, TestSource};
use crate::auth::{AttemptContext, Credential};
use crate::wire::UpstreamRequest;

async fn bearer(credential: &Arc<dyn Credential>) -> UpstreamRequest {
    let context = AttemptContext {
        client_body: b"{}",
        host: "us-central1-aiplatform.googleapis.com",
    };
    for _ in 0..300 {
        let mut request = UpstreamRequest {
            path: "/publishers/google/models/gemini-2.5-flash:generateContent".into(),
            ..UpstreamRequest::default()
        };
        if credential.apply(&mut request, &context).is_ok() {
            return request;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no token within 3 s");
}

fn spec(oidc_uri: &str, impersonation: &str) -> String {
    format!(
        "{{type: GCPCredentials, gcpCredentials: {{projectName: my-project, region: us-central1, workloadIdentityFederationConfig: \
         {{projectID: \"123456\", workloadIdentityPoolName: pool-1, workloadIdentityProviderName: idp-1{impersonation}, \
         oidcExchangeToken: {{oidc: {{provider: {{issuer: \"http://idp\", tokenEndpoint: \"{oidc_uri}\"}}, clientID: gw, clientSecret: {{name: idp}}}}}}}}}}}}"
    )
}

#[tokio::test]
async fn oidc_token_exchanged_at_sts() {
    let oidc = fake_token_endpoint(vec![token_answer("oidc-jwt", 600)]).await;
    let sts = fake_token_endpoint(vec![token_answer("ya29.federated", 3599)]).await;
    let base = sts.uri.trim_end_matches("/token").to_string();
    let mut source = TestSource::new(
        "gcp-wif",
        &spec(&oidc.uri, ""),
        &[("idp/client-secret", "s")],
    );
    let credential = build_with(
        &mut source,
        &env(&[("CLOUDSDK_API_ENDPOINT_OVERRIDES_STS", &format!("{base}/"))]),
    )
    .unwrap_or_else(|| panic!("{:?}", source.problems));
    let r = bearer(&credential).await;
    assert_eq!(r.headers[0].1, "Bearer ya29.federated");
    assert!(r
        .path
        .starts_with("/v1/projects/my-project/locations/us-central1/publishers/"));
    let sent = form(&sts.bodies.lock().unwrap()[0]);
    assert_eq!(
        sent["grant_type"],
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert_eq!(
        sent["audience"],
        "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool-1/providers/idp-1"
    );
    assert_eq!(sent["subject_token"], "oidc-jwt");
    assert_eq!(
        sent["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert_eq!(
        sent["requested_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(
        sent["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
}

#[tokio::test]
async fn the_federated_token_impersonates_the_service_account() {
    let oidc = fake_token_endpoint(vec![token_answer("oidc-jwt", 600)]).await;
    let sts = fake_token_endpoint(vec![token_answer("ya29.federated", 3599)]).await;
    let expire = (time::OffsetDateTime::now_utc() + time::Duration::minutes(60))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let iam = fake_token_endpoint(vec![(
        200,
        format!(r#"{{"accessToken":"ya29.impersonated","expireTime":"{expire}"}}"#),
    )])
    .await;
    let strip = |uri: &str| uri.trim_end_matches("/token").to_string();
    let mut source = TestSource::new(
        "gcp-wif-sa",
        &spec(
            &oidc.uri,
            ", serviceAccountImpersonation: {serviceAccountName: vertex-gw}",
        ),
        &[("idp/client-secret", "s")],
    );
    let vars = [
        ("CLOUDSDK_API_ENDPOINT_OVERRIDES_STS", strip(&sts.uri)),
        (
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
            strip(&iam.uri),
        ),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let credential =
        build_with(&mut source, &env(&vars)).unwrap_or_else(|| panic!("{:?}", source.problems));
    let r = bearer(&credential).await;
    assert_eq!(r.headers[0].1, "Bearer ya29.impersonated");
    let body: serde_json::Value = serde_json::from_str(&iam.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "3600s"})
    );
}

#[test]
fn federation_problems_are_named() {
    let mut source = TestSource::new(
        "gcp-wif-bad",
        &spec(
            "http://idp/token",
            ", serviceAccountImpersonation: {serviceAccountName: \"a@b\"}, extra: 1",
        ),
        &[("idp/client-secret", "s")],
    );
    assert!(build_with(&mut source, &env(&[])).is_none());
    let p = source.problems.join("\n");
    assert!(p.contains("workloadIdentityFederationConfig.extra"), "{p}");
    assert!(p.contains("serviceAccountImpersonation"), "{p}");
}
