//! `GCPCredentials`: a service account's OAuth access token as `authorization: Bearer`,
//! and the project and region prefix of every Vertex AI publisher path
//! (`/publishers/...` → `/v1/projects/{projectName}/locations/{region}/publishers/...`).
//!
//! `apply` runs on the ext_proc path and never waits: a background task fetches the
//! token when the credential is built and again ahead of its expiry. While no valid token
//! is cached, an attempt fails at once (503 naming the backend, saying why) and wakes the
//! task, which retries no more often than [`MIN_RETRY_INTERVAL`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::google_token::{AccessToken, ServiceAccountKey, TokenExchange};
use super::{AttemptContext, AuthError, Credential, NotYetSupported, PolicySource};
use crate::secret::SecretValue;
use crate::sync::lock;
use crate::wire::UpstreamRequest;

/// The credential of a `GCPCredentials` policy: a service account key file from
/// `credentialsFile.secretRef` (key `service_account.json`). Workload identity
/// federation is validated but not served yet (its attempts answer 503).
pub fn build(source: &mut dyn PolicySource) -> Option<Arc<dyn Credential>> {
    let Some(gcp) = source.spec().gcp_credentials.clone() else {
        source.problem(
            "spec.gcpCredentials",
            "missing".into(),
            "type GCPCredentials needs `gcpCredentials` with projectName, region and credentialsFile".into(),
        );
        return None;
    };
    let valid = [("projectName", &gcp.project_name), ("region", &gcp.region)]
        .into_iter()
        .fold(true, |valid, (field, value)| {
            path_safe(source, field, value) && valid
        });
    let file = match (
        &gcp.credentials_file,
        &gcp.workload_identity_federation_config,
    ) {
        (Some(_), Some(_)) => {
            source.problem(
                "spec.gcpCredentials",
                "sets both credentialsFile and workloadIdentityFederationConfig".into(),
                "keep one of them".into(),
            );
            return None;
        }
        (None, Some(_)) => {
            return valid.then(|| {
                Arc::new(NotYetSupported {
                    policy_type: "GCPCredentials (workload identity federation)".into(),
                }) as Arc<dyn Credential>
            })
        }
        (None, None) => {
            source.problem(
                "spec.gcpCredentials.credentialsFile",
                "missing".into(),
                "set `credentialsFile.secretRef` naming the Secret with the service account key in `service_account.json`".into(),
            );
            return None;
        }
        (Some(file), None) => file,
    };
    const KEY: &str = "service_account.json";
    let field = "spec.gcpCredentials.credentialsFile.secretRef";
    let text = source.secret_text(field, &file.secret_ref, KEY)?;
    let key = match ServiceAccountKey::parse(&text) {
        Ok(key) => key,
        Err(why) => {
            let secret = source.secret_name(&file.secret_ref);
            source.problem(
                field,
                format!("Secret `{secret}`: `{KEY}` {why}"),
                "store the service account key file downloaded from Google Cloud (IAM > Service accounts > Keys) under `service_account.json`".into(),
            );
            return None;
        }
    };
    let exchange = match TokenExchange::new(key) {
        Ok(exchange) => exchange,
        Err(why) => {
            source.problem(field, why.to_string(), "report this as a bug".into());
            return None;
        }
    };
    valid.then(|| {
        Arc::new(GcpCredentials::new(
            exchange,
            &gcp.project_name,
            &gcp.region,
        )) as Arc<dyn Credential>
    })
}

/// Whether a project or region can be a path segment; a problem when not.
fn path_safe(source: &mut dyn PolicySource, field: &str, value: &str) -> bool {
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !safe {
        source.problem(
            &format!("spec.gcpCredentials.{field}"),
            format!("{value:?} is not a GCP {field}"),
            "use the project ID and the region (e.g. us-central1, or global) as Google writes them"
                .into(),
        );
    }
    safe
}

/// A new token is fetched this long before the current one expires.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// A token is not sent when it has less than this left (it could expire in flight), or a
/// quarter of its lifetime when that is shorter.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Fewest time between two token requests after a failure, however often attempts ask.
const MIN_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between retries after repeated failures.
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// The token cache shared by the credential and its refresh task.
#[derive(Default)]
struct TokenCache {
    /// The token and until when it may be sent.
    token: Option<(SecretValue, Instant)>,
    /// Why the last refresh failed (never a credential), for the client's error.
    last_error: Option<String>,
}

struct Shared {
    cache: Mutex<TokenCache>,
    /// Wakes the refresh task early (an attempt found no valid token).
    wake: Notify,
}

impl Shared {
    /// The cached token, unless it is about to expire.
    fn valid_token(&self, now: Instant) -> Result<SecretValue, String> {
        let cache = lock(&self.cache);
        match &cache.token {
            Some((token, usable_until)) if now < *usable_until => Ok(token.clone()),
            _ => Err(cache
                .last_error
                .clone()
                .unwrap_or_else(|| "it has not been fetched yet".to_string())),
        }
    }

    fn store(&self, token: &AccessToken, fetched: Instant) {
        let mut cache = lock(&self.cache);
        let margin = EXPIRY_MARGIN.min(token.lifetime / 4);
        cache.token = Some((token.token.clone(), fetched + token.lifetime - margin));
        cache.last_error = None;
    }

    fn record_error(&self, error: String) {
        lock(&self.cache).last_error = Some(error);
    }
}

pub struct GcpCredentials {
    /// `/v1/projects/{project}/locations/{region}`.
    path_prefix: String,
    shared: Arc<Shared>,
    /// The refresh task, stopped when the credential is dropped (a config reload).
    refresher: Option<AbortHandle>,
}

impl fmt::Debug for GcpCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpCredentials")
            .field("path_prefix", &self.path_prefix)
            .field("refreshing", &self.refresher.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for GcpCredentials {
    fn drop(&mut self) {
        if let Some(task) = &self.refresher {
            task.abort();
        }
    }
}

impl GcpCredentials {
    /// Starts refreshing on the current tokio runtime, if there is one. (`check` returns
    /// before its runtime polls the task, and a config that fails validation drops the
    /// credential, which stops the task: neither fetches a token.)
    pub fn new(exchange: TokenExchange, project: &str, region: &str) -> Self {
        let shared = Arc::new(Shared {
            cache: Mutex::new(TokenCache::default()),
            wake: Notify::new(),
        });
        let refresher = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            runtime
                .spawn(refresh_loop(shared.clone(), exchange))
                .abort_handle()
        });
        GcpCredentials {
            path_prefix: format!("/v1/projects/{project}/locations/{region}"),
            shared,
            refresher,
        }
    }
}

impl Credential for GcpCredentials {
    fn apply(&self, request: &mut UpstreamRequest, _: &AttemptContext) -> Result<(), AuthError> {
        let token = self.shared.valid_token(Instant::now()).map_err(|reason| {
            self.shared.wake.notify_one();
            AuthError::TokenUnavailable {
                policy_type: "GCPCredentials".into(),
                reason,
            }
        })?;
        if request.path.starts_with("/publishers/") {
            request.path = format!("{}{}", self.path_prefix, request.path);
        }
        request
            .headers
            .push(("authorization".into(), format!("Bearer {}", token.expose())));
        Ok(())
    }
}

/// Fetches a token, sleeps until shortly before it expires (or until woken while no
/// valid token is cached), and again, for as long as the credential lives.
async fn refresh_loop(shared: Arc<Shared>, exchange: TokenExchange) {
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let wait = match exchange.fetch().await {
            Ok(token) => {
                failures = 0;
                shared.store(&token, started);
                refresh_after(token.lifetime)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, failures, "GCP access token refresh failed");
                shared.record_error(e.to_string());
                retry_after(failures)
            }
        };
        wait_for_next_fetch(&shared, started, started + wait).await;
    }
}

/// Sleeps until `next`, or until an attempt found no valid token; however many attempts
/// ask, fetches are [`MIN_RETRY_INTERVAL`] apart.
async fn wait_for_next_fetch(shared: &Shared, last_fetch: Instant, next: Instant) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => return,
            _ = shared.wake.notified() => {
                // A wake left from before the last fetch finished is stale.
                if shared.valid_token(Instant::now()).is_err() {
                    tokio::time::sleep_until((last_fetch + MIN_RETRY_INTERVAL).into()).await;
                    return;
                }
            }
        }
    }
}

/// When to fetch the next token: [`REFRESH_AHEAD`] before expiry, or halfway through
/// a lifetime too short for that.
fn refresh_after(lifetime: Duration) -> Duration {
    lifetime
        .checked_sub(REFRESH_AHEAD)
        .unwrap_or_default()
        .max(lifetime / 2)
        .max(MIN_RETRY_INTERVAL)
}

/// Exponential backoff from 1 s to [`MAX_RETRY_INTERVAL`].
fn retry_after(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (MIN_RETRY_INTERVAL * 2u32.pow(exponent)).min(MAX_RETRY_INTERVAL)
}

#[cfg(test)]
#[path = "gcp_credentials_tests.rs"]
mod tests;
