//! `render ratelimit-config`: the configuration of an `envoyproxy/ratelimit` deployment
//! for the QuotaPolicies, so that replicas share one budget through its Redis.

use serde_json::{json, Value};

use super::{Quotas, BUCKET_KEY, CLIENT_KEY, DOMAIN};

/// The service's YAML: one descriptor per bucket, whose `quota_client` has no value so
/// that each client value (a Distinct header's, or `all`) counts on its own.
pub fn render(quotas: &Quotas) -> String {
    let descriptors: Vec<Value> = quotas
        .buckets
        .iter()
        .map(|b| {
            let mut client = json!({
                "key": CLIENT_KEY,
                "rate_limit": {"unit": b.window.unit(), "requests_per_unit": b.limit}
            });
            if b.shadow {
                client["shadow_mode"] = json!(true);
            }
            json!({"key": BUCKET_KEY, "value": b.id, "descriptors": [client]})
        })
        .collect();
    let config = json!({"domain": DOMAIN, "descriptors": descriptors});
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}
