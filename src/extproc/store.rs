//! Per-request state shared by the router-level and upstream-level streams.
//!
//! The router-level stream creates the entry (and hands its key to the upstream level
//! in dynamic metadata) and holds a [`StoreGuard`]; the entry is
//! removed when the guard drops, which happens however that stream ends (success, client
//! abort, upstream reset, timeout, sidecar error). The store is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::HeaderMap;

use crate::api::ClientRequest;
use crate::config::{BackendRefTarget, GatewayConfig};

/// The dynamic metadata key (under `io.envoy.ai_gateway`) that carries the store key from
/// the router level to the upstream level.
pub const REQUEST_KEY_METADATA: &str = "llm_extproc_request";

/// What both placements know about one client request.
#[derive(Debug)]
pub struct RequestState {
    pub request: ClientRequest,
    /// The configuration the request started with; it finishes on it.
    pub config: Arc<GatewayConfig>,
    /// Envoy's `x-request-id`, for logs.
    pub request_id: String,
    /// The client's request headers as received: each attempt starts from these, since
    /// what an earlier attempt changed is still there on a retry.
    pub client_headers: HeaderMap,
    /// The latest upstream attempt, written by the upstream level.
    pub attempt: Mutex<Option<Attempt>>,
    /// The `traceparent` naming the request's span, sent to the provider; None when
    /// traces are off (the client's own header then reaches the provider unchanged).
    pub traceparent: Option<String>,
}

/// One upstream attempt: which backend reference served it and how.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub target: BackendRefTarget,
    pub usage_injected: bool,
    pub number: u32,
    /// Headers this and every earlier attempt set, to be put back to the client's values
    /// (or removed) by a retry that does not set them.
    pub set_headers: Vec<String>,
}

/// Default cap on requests in flight whose state the sidecar holds; Envoy's circuit
/// breakers are sized from it.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

#[derive(Debug)]
pub struct RequestStore {
    entries: Mutex<HashMap<u64, Arc<RequestState>>>,
    capacity: usize,
    /// The next key. Keys only travel in Envoy's dynamic metadata, which clients cannot
    /// set, so they need to be unique, not unguessable: a counter (from a random start,
    /// so that a restarted sidecar does not reuse the last one's), not a random draw per
    /// request.
    next_key: AtomicU64,
}

/// Removes its entry from the store when dropped.
#[derive(Debug)]
pub struct StoreGuard {
    store: Arc<RequestStore>,
    key: u64,
}

impl StoreGuard {
    pub fn key(&self) -> u64 {
        self.key
    }
}

impl Drop for StoreGuard {
    fn drop(&mut self) {
        self.store.lock().remove(&self.key);
    }
}

impl RequestStore {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(RequestStore {
            entries: Mutex::new(HashMap::new()),
            capacity,
            next_key: AtomicU64::new(rand_key()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<RequestState>>> {
        crate::sync::lock(&self.entries)
    }

    /// Adds `state`; None when the store is full.
    pub fn insert(self: &Arc<Self>, state: Arc<RequestState>) -> Option<StoreGuard> {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            return None;
        }
        let mut key = self.next_key.fetch_add(1, Ordering::Relaxed);
        while entries.contains_key(&key) {
            key = self.next_key.fetch_add(1, Ordering::Relaxed);
        }
        entries.insert(key, state);
        Some(StoreGuard {
            store: self.clone(),
            key,
        })
    }

    pub fn get(&self, key: u64) -> Option<Arc<RequestState>> {
        self.lock().get(&key).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

fn rand_key() -> u64 {
    let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
    a ^ b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;

    fn state() -> Arc<RequestState> {
        Arc::new(RequestState {
            request: ClientRequest::parse(
                ApiKind::ChatCompletions,
                bytes::Bytes::from_static(b"{\"model\":\"m\"}"),
            )
            .unwrap(),
            config: Arc::new(GatewayConfig::default()),
            request_id: String::new(),
            client_headers: Default::default(),
            attempt: Mutex::new(None),
            traceparent: None,
        })
    }

    #[test]
    fn guard_frees_and_capacity_bounds() {
        let store = RequestStore::new(1);
        let g = store.insert(state()).unwrap();
        assert!(store.get(g.key()).is_some());
        assert!(store.insert(state()).is_none());
        drop(g);
        assert_eq!(store.len(), 0);
        assert!(store.insert(state()).is_some());
    }
}
