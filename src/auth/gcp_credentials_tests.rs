//! `GCPCredentials` against a fake Google token endpoint on a local port.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::auth::google_token::tests::{key_file, verify, TEST_PRIVATE_KEY};
use crate::auth::google_token::ServiceAccountKey;
use crate::auth::test_support::{fake_token_endpoint, token_answer};
use crate::auth::token_cache::{CacheKey, TokenCache};

fn credential(uri: &str) -> GcpCredentials {
    let key = ServiceAccountKey::parse(&SecretValue::new(key_file(uri))).unwrap();
    // One policy per fake endpoint: tests run in parallel and share the cache registry.
    let cache_key = CacheKey::new(format!("test/{uri}"), "GCPCredentials", uri.into());
    let token = TokenCache::start(cache_key, TokenExchange::new(key).unwrap());
    GcpCredentials::new(token, "my-project", "us-central1")
}

fn context() -> AttemptContext<'static> {
    AttemptContext {
        client_body: b"",
        host: "us-central1-aiplatform.googleapis.com",
    }
}

fn publisher_request() -> UpstreamRequest {
    UpstreamRequest {
        path: "/publishers/google/models/gemini-2.5-flash:generateContent".into(),
        ..UpstreamRequest::default()
    }
}

/// Applies until it succeeds (the first fetch runs in the background), for up to 5 s.
async fn apply_when_ready(c: &GcpCredentials) -> UpstreamRequest {
    for _ in 0..500 {
        let mut r = publisher_request();
        if c.apply(&mut r, &context()).is_ok() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no token within 5 s");
}

#[tokio::test]
async fn fetches_caches_and_applies_the_token() {
    let endpoint = fake_token_endpoint(vec![token_answer("ya29.first", 3600)]).await;
    let c = credential(&endpoint.uri);
    let r = apply_when_ready(&c).await;
    assert_eq!(
        r.path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        r.headers,
        vec![("authorization".to_string(), "Bearer ya29.first".to_string())]
    );
    for _ in 0..20 {
        let mut r = publisher_request();
        c.apply(&mut r, &context()).unwrap();
    }
    assert_eq!(endpoint.requests.load(Ordering::SeqCst), 1, "cached");

    let body = endpoint.bodies.lock().unwrap()[0].clone();
    let assertion = body
        .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
        .unwrap();
    let (claims, kid) = verify(assertion, &endpoint.uri);
    assert_eq!(claims.aud, endpoint.uri);
    assert_eq!(kid.as_deref(), Some("kid-1"));

    let mut other = UpstreamRequest {
        path: "/v1/already/absolute".into(),
        ..UpstreamRequest::default()
    };
    c.apply(&mut other, &context()).unwrap();
    assert_eq!(
        other.path, "/v1/already/absolute",
        "only publisher paths are prefixed"
    );
}

#[tokio::test]
async fn refreshes_ahead_of_expiry() {
    // A 2 s token is refreshed 0.4 s before its end (20% of its life).
    let endpoint = fake_token_endpoint(vec![
        token_answer("ya29.short", 2),
        token_answer("ya29.next", 3600),
    ])
    .await;
    let c = credential(&endpoint.uri);
    let first = apply_when_ready(&c).await;
    assert_eq!(first.headers[0].1, "Bearer ya29.short");
    for _ in 0..300 {
        if endpoint.requests.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = apply_when_ready(&c).await;
    assert_eq!(r.headers[0].1, "Bearer ya29.next");
}

#[tokio::test]
async fn a_refused_exchange_fails_attempts_without_leaking_and_is_retried() {
    let endpoint = fake_token_endpoint(vec![
        (
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.into(),
        ),
        token_answer("ya29.after-retry", 3600),
    ])
    .await;
    let c = credential(&endpoint.uri);
    let mut error = None;
    for _ in 0..300 {
        let mut r = publisher_request();
        match c.apply(&mut r, &context()) {
            Err(e) if e.to_string().contains("invalid_grant") => {
                error = Some(e);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(()) => panic!("no token was issued yet"),
        }
    }
    let error = error.expect("the refusal is reported").to_string();
    assert!(
        error.contains("GCPCredentials") && error.contains("HTTP 400"),
        "{error}"
    );
    assert!(
        !error.contains("PRIVATE KEY") && !error.contains("eyJ"),
        "{error}"
    );
    // The failed attempt woke the task: the retry (1 s later) succeeds.
    let r = apply_when_ready(&c).await;
    assert_eq!(r.headers[0].1, "Bearer ya29.after-retry");
    assert_eq!(endpoint.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn debug_shows_no_secret() {
    let endpoint = fake_token_endpoint(vec![token_answer("ya29.secret-token", 3600)]).await;
    let c = credential(&endpoint.uri);
    apply_when_ready(&c).await;
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("ya29") && !shown.contains("PRIVATE"),
        "{shown}"
    );
    assert!(!TEST_PRIVATE_KEY.is_empty());
}

#[test]
fn without_a_runtime_nothing_is_fetched() {
    let c = credential("http://127.0.0.1:9/token");
    let mut r = publisher_request();
    let e = c.apply(&mut r, &context()).unwrap_err();
    assert!(e.to_string().contains("not been fetched yet"), "{e}");
}
