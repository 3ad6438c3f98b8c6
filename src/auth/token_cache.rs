//! One cache and refresher for every short-lived credential (Entra, Google and AWS
//! temporary tokens): the token is cached per policy and refreshed in the background
//! when less than min(5 minutes, 20% of its lifetime) remains.
//!
//! - `current` runs on the ext_proc path and never waits: it reads the cached token.
//! - One task per policy fetches, so a refresh is single-flight however many requests
//!   there are.
//! - A failed fetch is retried with capped exponential backoff; while the cached token
//!   is valid, requests keep using it. Once none is valid, requests fail at once and wake
//!   the task, which then retries no more often than [`MIN_RETRY_INTERVAL`]: recovery
//!   follows within about a second of the endpoint coming back.
//! - A configuration reload that leaves a policy's inputs unchanged keeps its cache
//!   (and its token); a changed Secret or policy gets a new cache that fetches at once.
//!   While that first fetch runs, the previous token of the same identity (same
//!   policy, client and endpoint: only a secret changed) keeps being sent, so a rotated
//!   Secret causes no errors.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::AuthError;
use crate::sync::lock;

/// Refresh at the latest this long before expiry.
const REFRESH_AHEAD_MAX: Duration = Duration::from_secs(300);
/// ... or this fraction of the lifetime before it, when that is shorter (1/5 = 20%).
const REFRESH_AHEAD_DIVISOR: u32 = 5;
/// A token is not sent in its last 30 s (or last twentieth of its life, when shorter):
/// it could expire in flight. Between the refresh and this margin, 15% of the lifetime
/// at least is left for an outage to be ridden out on the cached token.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
const EXPIRY_MARGIN_DIVISOR: u32 = 20;
/// Fewest time between two fetches after a failure, however often requests ask.
pub const MIN_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between retries after repeated failures.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// Longest one fetch (all its exchanges) may take before it counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// A token and how long it lives from when its fetch started.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub token: T,
    pub lifetime: Duration,
}

/// Where a policy's tokens come from: one fetch, with all the exchanges it takes.
pub trait TokenSource: Send + Sync + 'static {
    type Token: Clone + Send + Sync + 'static;
    /// Why a fetch failed; its `Display` never holds a credential.
    type Error: fmt::Display + Send;
    fn fetch(&self) -> impl Future<Output = Result<Fetched<Self::Token>, Self::Error>> + Send;
}

/// Which policy a cache serves, for the registry, the metric and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// `namespace/name` of the BackendSecurityPolicy.
    pub policy: String,
    pub policy_type: &'static str,
    /// Everything but the secrets that decides which token is issued (tenant, client,
    /// endpoints, role...): a token of the same identity may bridge a Secret rotation.
    pub identity: String,
    /// A digest of the secret inputs: a change starts a new cache.
    pub secrets: u64,
}

impl CacheKey {
    pub fn new(policy: String, policy_type: &'static str, identity: String) -> Self {
        CacheKey {
            policy,
            policy_type,
            identity,
            secrets: 0,
        }
    }

    /// Adds secret inputs to the digest (kept in memory only, never shown).
    pub fn with_secrets<'a>(mut self, secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut hasher = DefaultHasher::new();
        self.secrets.hash(&mut hasher);
        for secret in secrets {
            secret.hash(&mut hasher);
        }
        self.secrets = hasher.finish();
        self
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RefreshLabels {
    pub policy: String,
    pub policy_type: String,
}

/// Failed token fetches per policy, which the metrics observe when they are read (one
/// entry per configured policy, so bounded).
pub fn refresh_failures() -> &'static Mutex<HashMap<RefreshLabels, u64>> {
    static FAILURES: LazyLock<Mutex<HashMap<RefreshLabels, u64>>> = LazyLock::new(Default::default);
    &FAILURES
}

struct Cached<T> {
    token: T,
    usable_until: Instant,
}

struct Shared<T> {
    token: ArcSwapOption<Cached<T>>,
    /// Why the last fetch failed (never a credential), for the client's error.
    last_error: Mutex<Option<String>>,
    /// Wakes the task early: a request found no valid token.
    wake: Notify,
}

impl<T: Clone> Shared<T> {
    fn valid(&self, now: Instant) -> Option<T> {
        self.token
            .load()
            .as_ref()
            .filter(|cached| now < cached.usable_until)
            .map(|cached| cached.token.clone())
    }

    fn usable_until(&self) -> Option<Instant> {
        self.token.load().as_ref().map(|cached| cached.usable_until)
    }
}

/// A policy's token cache. Cloned into every credential of the policy; the refresh task
/// stops when the last clone is dropped (the configuration that used it was replaced).
pub struct TokenCache<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for TokenCache<T> {
    fn clone(&self) -> Self {
        TokenCache {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<T> {
    key: CacheKey,
    shared: Arc<Shared<T>>,
    task: Option<AbortHandle>,
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<T> fmt::Debug for TokenCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("policy", &self.inner.key.policy)
            .field("refreshing", &self.inner.task.is_some())
            .finish_non_exhaustive()
    }
}

/// The live caches by policy, so that a reload finds the cache it can keep.
type Registry = Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static LIVE: LazyLock<Registry> = LazyLock::new(Default::default);
    &LIVE
}

impl<T: Clone + Send + Sync + 'static> TokenCache<T> {
    /// The cache for `key`: the live one when a previous configuration built the same,
    /// else a new one whose task fetches at once. Without a tokio runtime (`check`)
    /// nothing is fetched and nothing is registered.
    pub fn start<S: TokenSource<Token = T>>(key: CacheKey, source: S) -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return TokenCache::without_task(key);
        };
        let mut live = lock(registry());
        live.retain(|_, cache| cache.strong_count() > 0);
        let previous = live
            .get(&key.policy)
            .and_then(Weak::upgrade)
            .and_then(|cache| cache.downcast::<Inner<T>>().ok());
        if let Some(previous) = &previous {
            if previous.key == key {
                return TokenCache {
                    inner: previous.clone(),
                };
            }
        }
        let shared = Arc::new(Shared {
            token: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            wake: Notify::new(),
        });
        if let Some(previous) = previous.filter(|p| p.key.identity == key.identity) {
            shared.token.store(previous.shared.token.load_full());
        }
        let task = runtime
            .spawn(refresh_loop(shared.clone(), source, key.clone()))
            .abort_handle();
        let inner = Arc::new(Inner {
            key,
            shared,
            task: Some(task),
        });
        let erased: Arc<dyn Any + Send + Sync> = inner.clone();
        live.insert(inner.key.policy.clone(), Arc::downgrade(&erased));
        TokenCache { inner }
    }

    fn without_task(key: CacheKey) -> Self {
        TokenCache {
            inner: Arc::new(Inner {
                key,
                shared: Arc::new(Shared {
                    token: ArcSwapOption::empty(),
                    last_error: Mutex::new(None),
                    wake: Notify::new(),
                }),
                task: None,
            }),
        }
    }

    /// The cached token, or at once the reason there is none (waking the task).
    pub fn current(&self) -> Result<T, AuthError> {
        let shared = &self.inner.shared;
        if let Some(token) = shared.valid(Instant::now()) {
            return Ok(token);
        }
        shared.wake.notify_one();
        let reason = match (lock(&shared.last_error).clone(), shared.usable_until()) {
            (Some(error), Some(_)) => format!("it expired and the last refresh failed: {error}"),
            (Some(error), None) => error,
            (None, Some(_)) => "it expired and is being refreshed".to_string(),
            (None, None) => "it has not been fetched yet".to_string(),
        };
        Err(AuthError::TokenUnavailable {
            policy_type: self.inner.key.policy_type.to_string(),
            reason,
        })
    }
}

/// Fetches, stores and schedules the next fetch, for as long as the cache lives.
async fn refresh_loop<S: TokenSource>(shared: Arc<Shared<S::Token>>, source: S, key: CacheKey) {
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(FETCH_TIMEOUT, source.fetch()).await {
            Ok(Ok(fetched)) => Ok(fetched),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer from the token endpoint within {} s",
                FETCH_TIMEOUT.as_secs()
            )),
        };
        let next = match outcome {
            Ok(fetched) => {
                failures = 0;
                let lifetime = fetched.lifetime;
                shared.token.store(Some(Arc::new(Cached {
                    token: fetched.token,
                    usable_until: started + lifetime - expiry_margin(lifetime),
                })));
                *lock(&shared.last_error) = None;
                tracing::debug!(
                    policy = %key.policy,
                    policy_type = key.policy_type,
                    lifetime_s = lifetime.as_secs(),
                    "access token refreshed"
                );
                started + refresh_after(lifetime)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let retry = retry_after(failures);
                *lock(refresh_failures())
                    .entry(RefreshLabels {
                        policy: key.policy.clone(),
                        policy_type: key.policy_type.to_string(),
                    })
                    .or_default() += 1;
                tracing::warn!(
                    policy = %key.policy,
                    policy_type = key.policy_type,
                    failures,
                    retry_in_s = retry.as_secs(),
                    "access token refresh failed: {error}"
                );
                *lock(&shared.last_error) = Some(error);
                Instant::now() + retry
            }
        };
        wait_for_next_fetch(&shared, started, next).await;
    }
}

/// Sleeps until `next`, or until a request found no valid token; fetches stay
/// [`MIN_RETRY_INTERVAL`] apart however many requests ask.
async fn wait_for_next_fetch<T: Clone>(shared: &Shared<T>, last_fetch: Instant, next: Instant) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => return,
            _ = shared.wake.notified() => {
                // A wake left from before the last fetch finished is stale.
                if shared.valid(Instant::now()).is_none() {
                    tokio::time::sleep_until((last_fetch + MIN_RETRY_INTERVAL).into()).await;
                    return;
                }
            }
        }
    }
}

/// When to fetch the next token: once less than min(5 min, 20% of the lifetime) remains
/// (never sooner than a second: a provider claiming no lifetime causes no busy loop).
pub fn refresh_after(lifetime: Duration) -> Duration {
    let ahead = REFRESH_AHEAD_MAX.min(lifetime / REFRESH_AHEAD_DIVISOR);
    (lifetime - ahead).max(MIN_RETRY_INTERVAL)
}

fn expiry_margin(lifetime: Duration) -> Duration {
    EXPIRY_MARGIN.min(lifetime / EXPIRY_MARGIN_DIVISOR)
}

/// Exponential backoff from 1 s to [`MAX_RETRY_INTERVAL`].
pub fn retry_after(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (MIN_RETRY_INTERVAL * 2u32.pow(exponent)).min(MAX_RETRY_INTERVAL)
}

#[cfg(test)]
#[path = "token_cache_tests.rs"]
mod tests;
