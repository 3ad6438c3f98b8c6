//! What Envoy needs to enforce the quotas: the rate-limit filter, its service, the
//! virtual host's rate limits (one check and one charge per bucket) and the 429 answers.
//!
//! Seen on Envoy 1.40 (`e2e/test_quota.py`, and the descriptors the embedded service
//! received):
//! - `VirtualHost.rate_limits` entries reach the service with no `hits_addend` at all,
//!   whatever `hits_addend` says (each request counts 1): the rate limits go in the
//!   virtual host's `RateLimitPerRoute.rate_limits` instead, which honours both
//!   `hits_addend` and `apply_on_stream_done`.
//! - There, `hits_addend.number: 0` sends hits 0: a check that charges nothing, so a
//!   spent budget answers 429 before the request goes upstream.
//! - An `apply_on_stream_done` entry is sent once the response is over, and its
//!   `hits_addend.format` `%DYNAMIC_METADATA(io.envoy.ai_gateway:<key>)%` reads what the
//!   sidecar set in its last response answer, streams included (a number or a string).
//! - A `metadata` action whose key the sidecar did not set leaves that descriptor out
//!   (the others are still sent): that is how a request falls only in the buckets the
//!   sidecar chose. Not with `skip_if_absent`: that drops only the entry, and Envoy then
//!   sends the descriptor without it, or logs `Invalid hits_addend` at warning level for
//!   a charge whose cost key is missing too (a request the sidecar answered itself).

use serde_json::{json, Value};

use super::{Quotas, BUCKET_KEY, CLIENT_KEY, DOMAIN};
use crate::extproc::messages::METADATA_NAMESPACE;

/// The cluster of an external rate-limit service (`--rate-limit-service`).
pub const RATE_LIMIT_CLUSTER: &str = "ratelimit";

/// Where Envoy's rate-limit filter sends its checks.
#[derive(Debug, Clone)]
pub enum RateLimitService {
    /// The sidecar's own embedded service, on the sidecar's cluster.
    Embedded,
    /// An `envoyproxy/ratelimit` deployment.
    External { host: String, port: u16 },
}

impl RateLimitService {
    /// Parses `--rate-limit-service host:port`.
    pub fn parse(text: &str) -> Result<RateLimitService, String> {
        let (host, port) = text
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| format!("--rate-limit-service `{text}` must be host:port"))?;
        Ok(RateLimitService::External {
            host: host.to_string(),
            port,
        })
    }
}

/// The HTTP rate-limit filter, after the router-level ext_proc (which decides the
/// buckets) and before the router.
pub fn rate_limit_filter(service: &RateLimitService, sidecar_cluster: &str) -> Value {
    let cluster = match service {
        RateLimitService::Embedded => sidecar_cluster,
        RateLimitService::External { .. } => RATE_LIMIT_CLUSTER,
    };
    json!({
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": DOMAIN,
            // A budget that is configured is enforced: no service, no request.
            "failure_mode_deny": true,
            // x-ratelimit-limit, -remaining and -reset on answers, as providers send.
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            // The filter's own timeout bounds each call (default 20 ms, which a first call
            // to a remote service exceeded, answering 500); the gRPC service's is unused.
            "timeout": "1s",
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": cluster}}
            }
        }
    })
}

/// The cluster of an external rate-limit service; None for the embedded one.
pub fn rate_limit_cluster(service: &RateLimitService) -> Option<Value> {
    let RateLimitService::External { host, port } = service else {
        return None;
    };
    Some(json!({
        "name": RATE_LIMIT_CLUSTER,
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {"cluster_name": RATE_LIMIT_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}
    }))
}

/// The virtual host's `typed_per_filter_config` carrying [`rate_limits`].
pub fn virtual_host_config(quotas: &Quotas) -> Value {
    json!({"envoy.filters.http.ratelimit": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
        "rate_limits": rate_limits(quotas)
    }})
}

/// Per bucket, a check before the request goes upstream and a charge when its stream is
/// done.
pub fn rate_limits(quotas: &Quotas) -> Vec<Value> {
    let mut limits = Vec::new();
    for bucket in &quotas.buckets {
        let actions = json!([
            {"generic_key": {"descriptor_key": BUCKET_KEY, "descriptor_value": bucket.id}},
            {"metadata": {
                "descriptor_key": CLIENT_KEY,
                "metadata_key": {"key": METADATA_NAMESPACE, "path": [{"key": bucket.client_key}]},
                "source": "DYNAMIC"
            }}
        ]);
        limits.push(json!({"actions": actions, "hits_addend": {"number": 0}}));
        limits.push(json!({
            "actions": actions,
            "hits_addend": {"format": format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:{})%", bucket.cost_key)},
            "apply_on_stream_done": true
        }));
    }
    limits
}

/// Local-reply mappers for the filter's 429, first in the list: an OpenAI error, or an
/// Anthropic one for Messages clients (`messages` is the CEL condition telling them).
pub fn reply_mappers(messages: &str) -> Vec<Value> {
    let cel = |expression: String| {
        json!({"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression
            }
        }})
    };
    let limited = "response.code_details == 'request_rate_limited'";
    let message = "token quota exceeded: this request's quota is spent until its window resets (see retry-after)";
    // The filter's x-ratelimit-reset (DRAFT_VERSION_03, from the service's
    // duration_until_reset) is the window's rest: the retry-after the SDKs honour.
    let retry_after = json!([{
        "header": {"key": "retry-after", "value": "%RESP(X-RATELIMIT-RESET)%"},
        "append_action": "ADD_IF_ABSENT"
    }]);
    vec![
        json!({
            "filter": cel(format!("{limited} && {messages}")),
            "headers_to_add": retry_after,
            "body_format_override": {
                "json_format": {"type": "error", "error": {"type": "rate_limit_error", "message": message}},
                "content_type": "application/json"
            }
        }),
        json!({
            "filter": cel(limited.to_string()),
            "headers_to_add": retry_after,
            "body_format_override": {
                "json_format": {"error": {"message": message, "type": "tokens", "param": null, "code": "rate_limit_exceeded"}},
                "content_type": "application/json"
            }
        }),
    ]
}
