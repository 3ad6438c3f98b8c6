//! `AzureCredentials` against fake Entra ID and OIDC token endpoints on local ports.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::auth::test_support::{env, fake_token_endpoint, form, token_answer, TestSource};
use crate::auth::AttemptContext;
use crate::wire::UpstreamRequest;

/// The Bearer header of the first attempt that gets a token (within 3 s).
async fn bearer(credential: &Arc<dyn Credential>) -> String {
    let context = AttemptContext {
        client_body: b"{}",
        host: "my-resource.openai.azure.com",
    };
    for _ in 0..300 {
        let mut request = UpstreamRequest::default();
        if credential.apply(&mut request, &context).is_ok() {
            assert!(request.headers.iter().all(|(name, _)| name != "api-key"));
            let (name, value) = &request.headers[0];
            assert_eq!(name, "authorization");
            return value.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no token within 3 s");
}

fn authority(uri: &str) -> String {
    uri.trim_end_matches("/token").to_string()
}

#[tokio::test]
async fn client_secret_grant() {
    let entra = fake_token_endpoint(vec![token_answer("entra-token-1", 3599)]).await;
    let mut source = TestSource::new(
        "azure-secret",
        "{type: AzureCredentials, azureCredentials: {clientID: app-1, tenantID: tenant-1, clientSecretRef: {name: s}}}",
        &[("s/client-secret", "the-client-secret")],
    );
    let host = authority(&entra.uri);
    let credential = build_with(&mut source, &env(&[("AZURE_AUTHORITY_HOST", &host)])).unwrap();
    assert_eq!(bearer(&credential).await, "Bearer entra-token-1");
    let sent = form(&entra.bodies.lock().unwrap()[0]);
    let expected: HashMap<String, String> = [
        ("client_id", "app-1"),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
        ("client_secret", "the-client-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(sent, expected);
    assert!(!format!("{credential:?}").contains("the-client-secret"));
}

#[tokio::test]
async fn oidc_token_as_a_federated_client_assertion() {
    // The OIDC provider: discovery, then the client-credentials grant.
    let discovery = r#"{"issuer":"x","token_endpoint":"{uri}"}"#.to_string();
    let oidc = fake_token_endpoint(vec![(200, discovery), token_answer("oidc-jwt", 600)]).await;
    let entra = fake_token_endpoint(vec![token_answer("entra-token-2", 3599)]).await;
    let issuer = authority(&oidc.uri);
    let spec = format!(
        "{{type: AzureCredentials, azureCredentials: {{clientID: app-2, tenantID: t2, oidcExchangeToken: \
         {{oidc: {{provider: {{issuer: \"{issuer}\"}}, clientID: gateway, clientSecret: {{name: idp}}, scopes: [api]}}}}}}}}"
    );
    let mut source = TestSource::new("azure-oidc", &spec, &[("idp/client-secret", "idp-secret")]);
    let host = authority(&entra.uri);
    let credential = build_with(&mut source, &env(&[("AZURE_AUTHORITY_HOST", &host)]))
        .unwrap_or_else(|| panic!("{:?}", source.problems));
    assert_eq!(bearer(&credential).await, "Bearer entra-token-2");
    let grant = form(&oidc.bodies.lock().unwrap()[1]);
    assert_eq!(grant["grant_type"], "client_credentials");
    assert_eq!(
        (grant["client_id"].as_str(), grant["client_secret"].as_str()),
        ("gateway", "idp-secret")
    );
    assert_eq!(grant["scope"], "openid api");
    let sent = form(&entra.bodies.lock().unwrap()[0]);
    assert_eq!(sent["client_assertion"], "oidc-jwt");
    assert_eq!(sent["client_assertion_type"], CLIENT_ASSERTION_TYPE);
    assert_eq!(sent["client_id"], "app-2");
    assert!(!sent.contains_key("client_secret"));
}

#[tokio::test]
async fn workload_identity_token_file_is_read_at_every_refresh() {
    let entra = fake_token_endpoint(vec![
        token_answer("entra-a", 2),
        token_answer("entra-b", 3599),
    ])
    .await;
    let file = std::env::temp_dir().join(format!("azure-token-{}", std::process::id()));
    std::fs::write(&file, "projected-sa-token-1\n").unwrap();
    let mut source = TestSource::new(
        "azure-file",
        "{type: AzureCredentials, azureCredentials: {clientID: app-3, tenantID: t3}}",
        &[],
    );
    let host = authority(&entra.uri);
    let path = file.to_string_lossy().to_string();
    let credential = build_with(
        &mut source,
        &env(&[
            ("AZURE_AUTHORITY_HOST", &host),
            ("AZURE_FEDERATED_TOKEN_FILE", &path),
        ]),
    )
    .unwrap_or_else(|| panic!("{:?}", source.problems));
    assert_eq!(bearer(&credential).await, "Bearer entra-a");
    std::fs::write(&file, "projected-sa-token-2\n").unwrap();
    // The 2 s token is refreshed 0.4 s before its end, with the rotated file.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(bearer(&credential).await, "Bearer entra-b");
    let bodies = entra.bodies.lock().unwrap().clone();
    assert_eq!(form(&bodies[0])["client_assertion"], "projected-sa-token-1");
    assert_eq!(form(&bodies[1])["client_assertion"], "projected-sa-token-2");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn policies_that_cannot_work_are_refused_by_field() {
    let problems = |spec: &str, vars: &[(&str, &str)]| {
        let mut source = TestSource::new("azure-bad", spec, &[("s/client-secret", "x")]);
        assert!(build_with(&mut source, &env(vars)).is_none());
        source.problems.join("\n")
    };
    let p = problems(
        "{type: AzureCredentials, azureCredentials: {clientID: a, tenantID: t}}",
        &[],
    );
    assert!(p.contains("AZURE_FEDERATED_TOKEN_FILE is not set"), "{p}");
    let p = problems(
        "{type: AzureCredentials, azureCredentials: {clientID: a, tenantID: t}}",
        &[("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token")],
    );
    assert!(p.contains("cannot be read"), "{p}");
    let p = problems(
        "{type: AzureCredentials, azureCredentials: {clientID: a, tenantID: \"t/../x\", clientSecretRef: {name: s}}}",
        &[],
    );
    assert!(p.contains("tenantID"), "{p}");
    let p = problems(
        "{type: AzureCredentials, azureCredentials: {clientID: a, tenantID: t, clientSecretRef: {name: s}, \
         oidcExchangeToken: {oidc: {provider: {issuer: \"https://idp\"}, clientID: c, clientSecret: {name: s}}}}}",
        &[],
    );
    assert!(p.contains("sets both"), "{p}");
    let p = problems(
        "{type: AzureCredentials, azureCredentials: {clientID: a, tenantID: t, oidcExchangeToken: \
         {grantType: password, oidc: {provider: {issuer: \"https://idp\", authorizationEndpoint: \"https://idp/a\"}, \
         clientID: c, clientSecret: {name: s}, cookieDomain: example.com}}}}",
        &[],
    );
    assert!(p.contains("oidcExchangeToken.oidc.cookieDomain"), "{p}");
    assert!(
        p.contains("oidcExchangeToken.oidc.provider.authorizationEndpoint"),
        "{p}"
    );
    assert!(p.contains("`password` is not supported"), "{p}");
}
