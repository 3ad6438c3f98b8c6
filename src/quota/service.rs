//! The embedded rate-limit service: Envoy's `envoy.service.ratelimit.v3` API answered
//! from in-memory counters, so that the standalone gateway enforces quotas with no other
//! service. Windows are fixed and aligned to the clock (a `1m` window starts on the
//! minute), and a request is over its limit when what was already charged plus its own
//! hits exceeds the limit, both as `envoyproxy/ratelimit` counts them, so that one
//! machine and many replicas behind Redis refuse the same requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use tonic::{Request, Response, Status};

use super::{Bucket, Window, BUCKET_KEY, CLIENT_KEY, DOMAIN};
use crate::config::watch::SharedConfig;
use crate::sync::lock;

/// Above this many counters, those of past windows are dropped (at most once a second).
/// Distinct header values are the client's to choose, so the map must not keep every
/// one it ever saw.
const PRUNE_ABOVE: usize = 100_000;
/// The most counters held: a client value that would need a new one past it is refused
/// (never silently let through), and logged.
const MAX_COUNTERS: usize = 1_000_000;

pub struct EmbeddedRateLimit {
    config: SharedConfig,
    counters: Mutex<Counters>,
    max_counters: usize,
}

#[derive(Default)]
struct Counters {
    by_client: HashMap<(String, String), Counter>,
    /// When past windows were last dropped (seconds since the epoch).
    pruned_at: u64,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// The window's number: seconds since the epoch divided by its length.
    window: u64,
    used: u64,
}

impl EmbeddedRateLimit {
    pub fn new(config: SharedConfig) -> Arc<EmbeddedRateLimit> {
        Arc::new(EmbeddedRateLimit {
            config,
            counters: Mutex::new(Counters::default()),
            max_counters: MAX_COUNTERS,
        })
    }

    /// Answers one request at `now` (seconds since the epoch).
    fn answer(&self, request: &RateLimitRequest, now: u64) -> RateLimitResponse {
        let mut response = RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..Default::default()
        };
        if request.domain != DOMAIN {
            return response; // no limits of ours
        }
        let config = self.config.load();
        let mut counters = lock(&self.counters);
        if counters.by_client.len() > PRUNE_ABOVE && counters.pruned_at != now {
            counters.pruned_at = now;
            let quotas = &config.quotas;
            counters.by_client.retain(|(id, _), c| {
                quotas
                    .by_id(id)
                    .is_some_and(|b| c.window == now / b.window.seconds())
            });
        }
        for descriptor in &request.descriptors {
            let Some((bucket, client)) = entries(descriptor) else {
                response.statuses.push(DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                });
                continue;
            };
            let Some(b) = config.quotas.by_id(bucket) else {
                // A bucket a reload removed while Envoy still had it: no limit.
                response.statuses.push(DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                });
                continue;
            };
            let hits = descriptor.hits_addend.as_ref().map(|h| h.value).unwrap_or(
                match request.hits_addend {
                    0 => 1,
                    n => u64::from(n),
                },
            );
            let window = now / b.window.seconds();
            let key = (bucket.to_string(), client.to_string());
            let known = counters.by_client.contains_key(&key);
            if hits == 0 && !known && counters.by_client.len() < self.max_counters {
                // The check before a request of a client with nothing counted yet: nothing
                // is used, and nothing is stored, so only charged requests fill the table
                // (not a client sending random values).
                let reset = (window + 1) * b.window.seconds() - now;
                response.statuses.push(status(b, b.limit == 0, 0, reset));
                if b.limit == 0 && !b.shadow {
                    response.overall_code = Code::OverLimit as i32;
                }
                continue;
            }
            if counters.by_client.len() >= self.max_counters && !known {
                tracing::warn!(bucket, "{MAX_COUNTERS} quota counters in use: a new client is refused until a window ends");
                if !b.shadow {
                    response.overall_code = Code::OverLimit as i32;
                }
                response
                    .statuses
                    .push(status(b, true, b.limit, b.window.seconds()));
                continue;
            }
            let counter = counters
                .by_client
                .entry(key)
                .or_insert(Counter { window, used: 0 });
            if counter.window != window {
                *counter = Counter { window, used: 0 };
            }
            counter.used = counter.used.saturating_add(hits);
            let over = counter.used > b.limit;
            tracing::debug!(
                bucket,
                client,
                hits,
                used = counter.used,
                limit = b.limit,
                "quota counted"
            );
            if over && b.shadow {
                // Shadow mode's telemetry: what would have been refused.
                tracing::info!(
                    bucket,
                    client,
                    used = counter.used,
                    limit = b.limit,
                    "quota exceeded in shadow mode (not refused)"
                );
            }
            let reset = (window + 1) * b.window.seconds() - now;
            if over && !b.shadow {
                response.overall_code = Code::OverLimit as i32;
            }
            response.statuses.push(status(b, over, counter.used, reset));
        }
        response
    }
}

fn entries(descriptor: &RateLimitDescriptor) -> Option<(&str, &str)> {
    let find = |key: &str| {
        descriptor
            .entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    Some((find(BUCKET_KEY)?, find(CLIENT_KEY)?))
}

fn status(b: &Bucket, over: bool, used: u64, reset: u64) -> DescriptorStatus {
    let unit = match b.window {
        Window::Second => Unit::Second,
        Window::Minute => Unit::Minute,
        Window::Hour => Unit::Hour,
        Window::Day => Unit::Day,
    };
    DescriptorStatus {
        code: if over && !b.shadow {
            Code::OverLimit as i32
        } else {
            Code::Ok as i32
        },
        current_limit: Some(RateLimit {
            name: b.id.clone(),
            requests_per_unit: u32::try_from(b.limit).unwrap_or(u32::MAX),
            unit: unit as i32,
        }),
        limit_remaining: u32::try_from(b.limit.saturating_sub(used)).unwrap_or(u32::MAX),
        duration_until_reset: Some(ProtoDuration {
            seconds: i64::try_from(reset).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        quota: None,
    }
}

#[tonic::async_trait]
impl RateLimitService for EmbeddedRateLimit {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let request = request.into_inner();
        let response = self.answer(&request, now);
        tracing::debug!(
            descriptors = request.descriptors.len(),
            over = response.overall_code == Code::OverLimit as i32,
            "rate-limit check"
        );
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;
    use crate::quota::cost::Cost;
    use crate::quota::Quotas;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    fn service(shadow: bool) -> Arc<EmbeddedRateLimit> {
        let (client_key, cost_key) = crate::quota::metadata_keys("ns/p/b.ns/m/default");
        let bucket = Bucket {
            id: "ns/p/b.ns/m/default".into(),
            client_key,
            cost_key,
            backend: "b.ns".into(),
            model: Some("m".into()),
            limit: 10,
            window: Window::Minute,
            shadow,
            selectors: Vec::new(),
            cost: Arc::new(Cost::total_tokens()),
        };
        let config = GatewayConfig {
            quotas: Arc::new(Quotas::new(vec![bucket])),
            ..Default::default()
        };
        EmbeddedRateLimit::new(Arc::new(arc_swap::ArcSwap::from_pointee(config)))
    }

    fn request(client: &str, hits: Option<u64>) -> RateLimitRequest {
        RateLimitRequest {
            domain: DOMAIN.into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![
                    Entry {
                        key: BUCKET_KEY.into(),
                        value: "ns/p/b.ns/m/default".into(),
                    },
                    Entry {
                        key: CLIENT_KEY.into(),
                        value: client.into(),
                    },
                ],
                hits_addend: hits
                    .map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
                ..Default::default()
            }],
            hits_addend: 0,
        }
    }

    fn over(r: &RateLimitResponse) -> bool {
        r.overall_code == Code::OverLimit as i32
    }

    #[test]
    fn charged_at_the_end_refused_on_the_next_check() {
        let s = service(false);
        let now = 120; // the start of a minute
        assert!(!over(&s.answer(&request("alice", Some(0)), now)));
        // The charge at the stream's end (its answer is not read by Envoy).
        s.answer(&request("alice", Some(12)), now + 1);
        let refused = s.answer(&request("alice", Some(0)), now + 2);
        assert!(over(&refused));
        // Envoy's x-ratelimit-reset, which its 429 turns into retry-after.
        let reset = refused.statuses[0]
            .duration_until_reset
            .as_ref()
            .map(|d| d.seconds);
        assert_eq!(reset, Some(58));
        // Another client has a counter of its own; the next window starts afresh.
        assert!(!over(&s.answer(&request("bob", Some(0)), now + 2)));
        assert!(!over(&s.answer(&request("alice", Some(0)), now + 60)));
    }

    #[test]
    fn shadow_counts_but_never_refuses() {
        let s = service(true);
        s.answer(&request("alice", Some(50)), 0);
        let r = s.answer(&request("alice", Some(0)), 1);
        assert!(!over(&r));
        assert_eq!(r.statuses[0].limit_remaining, 0);
    }

    #[test]
    fn past_the_counter_cap_a_new_client_is_refused_not_let_through() {
        let mut s = service(false);
        Arc::get_mut(&mut s).expect("one owner").max_counters = 2;
        // Checks of new clients store nothing: random values cannot fill the table.
        for client in ["x", "y", "z"] {
            assert!(!over(&s.answer(&request(client, Some(0)), 0)));
        }
        // Charges do; once it is full, a new client is refused.
        s.answer(&request("a", Some(1)), 0);
        s.answer(&request("b", Some(1)), 0);
        assert!(over(&s.answer(&request("c", Some(0)), 0)));
        assert!(
            !over(&s.answer(&request("a", Some(0)), 0)),
            "known clients go on"
        );
    }

    #[test]
    fn shadow_buckets_never_refuse_even_past_the_counter_cap() {
        let mut s = service(true);
        Arc::get_mut(&mut s).expect("one owner").max_counters = 1;
        s.answer(&request("a", Some(1)), 0);
        assert!(!over(&s.answer(&request("c", Some(0)), 0)));
    }

    #[test]
    fn without_hits_a_request_counts_one() {
        let s = service(false);
        for _ in 0..10 {
            assert!(!over(&s.answer(&request("c", None), 0)));
        }
        assert!(over(&s.answer(&request("c", None), 0)));
    }
}
