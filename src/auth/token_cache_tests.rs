//! The token cache against a scripted source (no network): schedule, single flight,
//! outages, recovery and reloads.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Answers fetch `n` with `script(n)`, after `delay`.
struct Scripted {
    fetches: Arc<AtomicUsize>,
    delay: Duration,
    script: fn(usize) -> Result<Fetched<String>, String>,
}

impl TokenSource for Scripted {
    type Token = String;
    type Error = String;
    async fn fetch(&self) -> Result<Fetched<String>, String> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        (self.script)(n)
    }
}

fn token(n: usize, lifetime_ms: u64) -> Result<Fetched<String>, String> {
    Ok(Fetched {
        token: format!("token-{n}"),
        lifetime: Duration::from_millis(lifetime_ms),
    })
}

fn key(policy: &str) -> CacheKey {
    CacheKey::new(policy.into(), "TestCredentials", "tenant/client".into())
}

fn start(
    policy: &str,
    delay: Duration,
    script: fn(usize) -> Result<Fetched<String>, String>,
) -> (TokenCache<String>, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let source = Scripted {
        fetches: fetches.clone(),
        delay,
        script,
    };
    (TokenCache::start(key(policy), source), fetches)
}

async fn wait_for_token(cache: &TokenCache<String>) -> String {
    for _ in 0..300 {
        if let Ok(token) = cache.current() {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no token within 3 s");
}

#[test]
fn refresh_schedule_is_min_of_five_minutes_and_a_fifth() {
    let s = Duration::from_secs;
    assert_eq!(refresh_after(s(3600)), s(3300), "1 h: 5 min ahead");
    assert_eq!(refresh_after(s(10)), s(8), "10 s: 2 s ahead");
    assert_eq!(refresh_after(s(0)), MIN_RETRY_INTERVAL, "never a busy loop");
    assert_eq!(expiry_margin(s(3600)), s(30));
    assert_eq!(expiry_margin(s(10)), Duration::from_millis(500));
    assert_eq!(retry_after(1), s(1));
    assert_eq!(retry_after(3), s(4));
    assert_eq!(retry_after(100), MAX_RETRY_INTERVAL);
}

#[tokio::test]
async fn one_fetch_serves_every_request_and_none_waits() {
    // A slow fetch: requests fail at once meanwhile, and do not start more fetches.
    let (cache, fetches) = start("ns/single", Duration::from_millis(300), |n| {
        token(n, 60_000)
    });
    let before = Instant::now();
    for _ in 0..100 {
        let error = cache.current().unwrap_err().to_string();
        assert!(error.contains("not been fetched yet"), "{error}");
    }
    assert!(
        before.elapsed() < Duration::from_millis(100),
        "never blocks"
    );
    assert_eq!(wait_for_token(&cache).await, "token-0");
    for _ in 0..100 {
        assert_eq!(cache.current().unwrap(), "token-0");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "single flight, cached");
}

#[tokio::test]
async fn refreshed_ahead_of_expiry_without_a_gap() {
    // 1.5 s tokens: refreshed after 1.2 s, usable for 1.425 s.
    let (cache, fetches) = start("ns/ahead", Duration::ZERO, |n| token(n, 1500));
    wait_for_token(&cache).await;
    let until = Instant::now() + Duration::from_millis(3300);
    while Instant::now() < until {
        cache.current().expect("a valid token at every moment");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = fetches.load(Ordering::SeqCst);
    assert!(
        (3..=4).contains(&n),
        "{n} fetches over 3.3 s of 1.5 s tokens"
    );
}

#[tokio::test]
async fn an_outage_is_ridden_out_then_fails_promptly_then_recovers() {
    // Fetch 0 succeeds (1.5 s token), fetches 1..=2 fail, later ones succeed.
    let (cache, fetches) = start("ns/outage", Duration::ZERO, |n| match n {
        0 => token(n, 1500),
        1 | 2 => Err("the token endpoint refused the client: HTTP 503".into()),
        _ => token(n, 60_000),
    });
    assert_eq!(wait_for_token(&cache).await, "token-0");
    // The refresh at 1.2 s fails; the token stays in use until 1.425 s.
    tokio::time::sleep(Duration::from_millis(1250)).await;
    assert_eq!(cache.current().unwrap(), "token-0", "ridden out");
    let labels = RefreshLabels {
        policy: "ns/outage".into(),
        policy_type: "TestCredentials".into(),
    };
    assert!(lock(refresh_failures())
        .get(&labels)
        .is_some_and(|n| *n >= 1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let error = cache.current().unwrap_err().to_string();
    assert!(
        error.contains("TestCredentials") && error.contains("HTTP 503"),
        "{error}"
    );
    // Requests wake the task: the retries come 1 s apart, not after the backoff.
    let recovered = wait_for_token(&cache).await;
    assert_eq!(recovered, "token-3");
    assert_eq!(fetches.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_unchanged_reload_keeps_the_cache_and_a_changed_secret_refreshes_at_once() {
    let (first, fetches) = start("ns/reload", Duration::ZERO, |n| token(n, 60_000));
    assert_eq!(wait_for_token(&first).await, "token-0");
    let (same, same_fetches) = start("ns/reload", Duration::ZERO, |n| token(n + 100, 60_000));
    assert_eq!(same.current().unwrap(), "token-0", "kept");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(same_fetches.load(Ordering::SeqCst), 0);

    // A rotated Secret: a new fetch at once, the old token bridging it.
    let rotated_fetches = Arc::new(AtomicUsize::new(0));
    let rotated = TokenCache::start(
        key("ns/reload").with_secrets(["new-secret"]),
        Scripted {
            fetches: rotated_fetches.clone(),
            delay: Duration::from_millis(200),
            script: |n| token(n + 200, 60_000),
        },
    );
    assert_eq!(rotated.current().unwrap(), "token-0", "bridged");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rotated.current().unwrap(), "token-200");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // Another identity (a different client) never inherits a token.
    let other = TokenCache::start(
        CacheKey::new("ns/reload".into(), "TestCredentials", "tenant/other".into()),
        Scripted {
            fetches: Arc::new(AtomicUsize::new(0)),
            delay: Duration::from_millis(200),
            script: |n| token(n + 300, 60_000),
        },
    );
    assert!(other.current().is_err());
}

#[tokio::test]
async fn dropping_the_last_clone_stops_the_task() {
    let (cache, fetches) = start("ns/drop", Duration::ZERO, |n| token(n, 1000));
    wait_for_token(&cache).await;
    let copy = cache.clone();
    drop(cache);
    drop(copy);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "no refresh after the drop"
    );
}

#[test]
fn without_a_runtime_nothing_is_fetched() {
    let (cache, fetches) = start("ns/check", Duration::ZERO, |n| token(n, 1000));
    assert!(cache.current().is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
}
