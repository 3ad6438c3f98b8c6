//! `render ratelimit-config`: the configuration of an `envoyproxy/ratelimit` deployment
//! for the QuotaPolicies, so that replicas share one budget through its Redis.

use serde::Serialize;

use super::{Quotas, BUCKET_KEY, CLIENT_KEY, DOMAIN};

#[derive(Serialize)]
struct Config<'a> {
    domain: &'a str,
    descriptors: Vec<BucketDescriptor<'a>>,
}

#[derive(Serialize)]
struct BucketDescriptor<'a> {
    key: &'a str,
    value: &'a str,
    descriptors: [ClientDescriptor<'a>; 1],
}

/// No `value`: each client value (a Distinct header's, or `all`) counts on its own.
#[derive(Serialize)]
struct ClientDescriptor<'a> {
    key: &'a str,
    rate_limit: RateLimit,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shadow_mode: bool,
}

#[derive(Serialize)]
struct RateLimit {
    unit: &'static str,
    requests_per_unit: u64,
}

/// The service's YAML: one descriptor per bucket.
pub fn render(quotas: &Quotas) -> String {
    let config = Config {
        domain: DOMAIN,
        descriptors: quotas
            .buckets
            .iter()
            .map(|b| BucketDescriptor {
                key: BUCKET_KEY,
                value: &b.id,
                descriptors: [ClientDescriptor {
                    key: CLIENT_KEY,
                    rate_limit: RateLimit {
                        unit: b.window.unit(),
                        requests_per_unit: b.limit,
                    },
                    shadow_mode: b.shadow,
                }],
            })
            .collect(),
    };
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}
