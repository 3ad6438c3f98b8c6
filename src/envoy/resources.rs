//! Envoy resources derived from the gateway configuration: the route configuration
//! (one route per rule match, plus the unknown-model catch-all) and one cluster per rule,
//! its endpoints grouped by priority and carrying the backend reference as metadata.

use serde_json::{json, Value};

use crate::config::{GatewayConfig, Route, Rule, BACKEND_BINDING_HEADER, STREAM_ROUTE_HEADER};
use crate::extproc::upstream::{BACKEND_NAME_ATTRIBUTE, BACKEND_REF_ATTRIBUTE};
use crate::extproc::PLACEMENT_METADATA;

pub const EXTPROC_CLUSTER: &str = "llm-extproc";
pub const ROUTE_CONFIG_NAME: &str = "llm-routes";
/// Endpoint metadata namespace (Envoy AI Gateway's).
pub const ENDPOINT_METADATA_NAMESPACE: &str = "aigateway.envoy.io";

/// Requests one provider cluster (one rule) carries at once, and so its connections
/// (HTTP/1.1: one per request in flight) and concurrent retries (a dead primary sends
/// everything in flight to the backup). As many as the sidecar holds state for; Envoy's
/// defaults (1,024 requests, 3 retries) are for short RPCs, not answers that stream for
/// minutes.
pub const PROVIDER_MAX_REQUESTS: usize = crate::extproc::store::DEFAULT_MAX_IN_FLIGHT;
/// Concurrent gRPC streams to the sidecar: every request holds a router-level stream
/// for its whole life and, on rules with several backends, an upstream-level one per
/// attempt. Above twice the sidecar's own cap, so that the sidecar's 503 naming the cap
/// comes first, not Envoy's overflow.
pub const SIDECAR_MAX_STREAMS: usize = 2 * crate::extproc::store::DEFAULT_MAX_IN_FLIGHT + 1024;

/// Circuit-breaker thresholds for a cluster (Envoy's DEFAULT routing priority; the
/// gateway uses no other).
pub fn circuit_breakers(requests: usize, retries: usize) -> Value {
    json!({"thresholds": [{
        "priority": "DEFAULT",
        "max_connections": requests,
        "max_pending_requests": requests,
        "max_requests": requests,
        "max_retries": retries
    }]})
}

/// The ext_proc filter for either placement.
pub fn ext_proc_filter(upstream: bool) -> Value {
    ext_proc_filter_to(upstream, EXTPROC_CLUSTER)
}

/// The ext_proc filter for either placement, reaching the sidecar through `cluster`
/// (`render gateway` uses the cluster Envoy Gateway names for the sidecar's Backend).
pub fn ext_proc_filter_to(upstream: bool, cluster: &str) -> Value {
    let mut grpc = json!({"envoy_grpc": {"cluster_name": cluster}, "timeout": "30s"});
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "failure_mode_allow": false,
        // Envoy's default of 200 ms fails on large bodies.
        "message_timeout": "10s",
        "metadata_options": {"receiving_namespaces": {"untyped": ["io.envoy.ai_gateway"]}}
    });
    if upstream {
        grpc["initial_metadata"] = json!([{"key": PLACEMENT_METADATA, "value": "upstream"}]);
        // Everything happens on request headers: the body comes from the router level's
        // state and is replaced in the header phase; responses are handled at the router level.
        config["processing_mode"] = json!({
            "request_header_mode": "SEND", "request_body_mode": "NONE", "request_trailer_mode": "SKIP",
            "response_header_mode": "SKIP", "response_body_mode": "NONE", "response_trailer_mode": "SKIP"
        });
        config["request_attributes"] = json!([BACKEND_REF_ATTRIBUTE, BACKEND_NAME_ATTRIBUTE]);
        config["metadata_options"]["forwarding_namespaces"] =
            json!({"untyped": ["io.envoy.ai_gateway"]});
    } else {
        // Each phase is answered once, when it has been read whole: Envoy sends the body
        // right after the headers, without waiting for their answer, and the sidecar
        // answers the headers with everything at once (header edits, the route-cache
        // clear, and the body that replaces the one sent, `CONTINUE_AND_REPLACE`). Two
        // waits per request instead of four. Seen on Envoy 1.40:
        // - request FULL_DUPLEX_STREAMED: routing still waits for the headers' answer, so
        //   it routes on the `x-ai-eg-model` that answer sets; the body comes as a piece
        //   plus an empty end-of-stream piece; trailers come as their own message even
        //   while the headers' answer is pending (which STREAMED with
        //   `send_body_without_waiting_for_header_response` does not do: a request with
        //   trailers and no data would wait out the message timeout); a slow upload
        //   restarts the message timer with each piece;
        // - response STREAMED with `send_body_without_waiting_for_header_response`: a
        //   unary answer's body arrives before its headers are answered, so its status
        //   can still change (or an immediate response replace it); a stream's headers are
        //   answered at once and its pieces one by one;
        // - `mode_override` is ignored in both configurations, hence no override;
        // - Envoy drops content-length whenever a body is replaced this way: the
        //   request's is restored by the header_mutation filter after this one, the
        //   client's answers are chunked.
        config["processing_mode"] = json!({
            "request_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED", "request_trailer_mode": "SEND",
            "response_header_mode": "SEND", "response_body_mode": "STREAMED", "response_trailer_mode": "SKIP"
        });
        config["send_body_without_waiting_for_header_response"] = json!(true);
    }
    config["grpc_service"] = grpc;
    json!({"name": "envoy.filters.http.ext_proc", "typed_config": config})
}

/// The route configuration for `config`.
pub fn route_configuration(config: &GatewayConfig) -> Value {
    let mut routes = Vec::new();
    for route in &config.routes {
        for rule in &route.rules {
            for conditions in &rule.matches {
                let mut headers: Vec<Value> = conditions
                    .iter()
                    .map(|c| {
                        let string_match = if c.regex {
                            json!({"safe_regex": {"regex": c.value}})
                        } else {
                            json!({"exact": c.value})
                        };
                        json!({"name": c.name, "string_match": string_match})
                    })
                    .collect();
                let mut remove = vec![STREAM_ROUTE_HEADER];
                if let (true, Some(r)) = (rule.router_resolved, rule.backend_refs.first()) {
                    headers.push(json!({"name": BACKEND_BINDING_HEADER, "string_match": {"exact": r.backend.name}}));
                    remove.push(BACKEND_BINDING_HEADER);
                }
                if !rule.request_timeout_set {
                    // Streams first: without a `timeouts.request` of its own, a streamed
                    // answer has no overall deadline (reasoning models stream for
                    // minutes; Envoy 1.40 resets a stream mid-answer when the route
                    // timeout fires), only the idle bounds.
                    let mut stream_headers = headers.clone();
                    stream_headers
                        .push(json!({"name": STREAM_ROUTE_HEADER, "present_match": true}));
                    routes.push(route_entry(
                        route,
                        rule,
                        routes.len(),
                        stream_headers,
                        &remove,
                        true,
                    ));
                }
                routes.push(route_entry(
                    route,
                    rule,
                    routes.len(),
                    headers,
                    &remove,
                    false,
                ));
            }
        }
    }
    // The sidecar answers unknown models itself; this is the net under it (for example a
    // model matched by no rule's other header conditions).
    let known: Vec<&str> = config.models.keys().map(String::as_str).collect();
    routes.push(json!({
        "name": "unknown-model",
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": format!(
            "known models: {}", known.join(", "))}}
    }));
    let mut virtual_host = json!({"name": "llm", "domains": ["*"], "routes": routes});
    if !config.quotas.is_empty() {
        virtual_host["typed_per_filter_config"] =
            crate::quota::envoy::virtual_host_config(&config.quotas);
    }
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG_NAME,
        "virtual_hosts": [virtual_host]
    })
}

fn route_entry(
    route: &Route,
    rule: &Rule,
    index: usize,
    headers: Vec<Value>,
    remove: &[&str],
    stream: bool,
) -> Value {
    json!({
        "name": format!("{}#{}", rule.cluster, index),
        "match": {"prefix": "/", "headers": headers},
        "route": route_action(rule, stream),
        "request_headers_to_remove": remove,
        "metadata": {"filter_metadata": {ENDPOINT_METADATA_NAMESPACE: {"route_name": route.name}}}
    })
}

/// `stream`: the route for streamed answers of a rule without `timeouts.request`.
fn route_action(rule: &Rule, stream: bool) -> Value {
    let priorities = priority_levels(rule).len();
    let mut retry = json!({
        // A dead or failing primary costs the client nothing: the same request moves to
        // the next priority (verified on Envoy 1.40 with update_frequency 1).
        "retry_on": "connect-failure,reset,5xx",
        "num_retries": priorities.max(2) - 1,
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1
            }
        },
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 3
    });
    if has_alternative_host(rule) {
        // A 429 moves on to a host that is not rate limited, at once (the previous_hosts
        // predicate keeps it off the host that refused). Retried on the only host, it
        // would just be refused again, sooner than the provider's retry-after asked:
        // that 429 goes to the client with its retry-after, which the SDKs honour.
        // No `rate_limited_retry_back_off`: on Envoy 1.40 it makes the retry to the
        // backup wait out the primary's retry-after (seen: 2 s), a delay the backup
        // does not need.
        retry["retry_on"] = json!("connect-failure,reset,5xx,retriable-status-codes");
        retry["retriable_status_codes"] = json!([429]);
    }
    if let Some(t) = rule.backend_request_timeout {
        retry["per_try_timeout"] = json!(duration(t));
    }
    if let Some(t) = rule.stream_idle_timeout {
        // As Envoy AI Gateway maps `streamIdleTimeout`: before the first byte a retry can
        // still move on; mid-answer the stream is cut.
        retry["per_try_idle_timeout"] = json!(duration(t));
    }
    // 0s: no deadline (the HCM's stream_idle_timeout still ends a silent stream).
    let timeout = if stream {
        std::time::Duration::ZERO
    } else {
        rule.request_timeout
    };
    json!({
        "cluster": rule.cluster,
        "timeout": duration(timeout),
        "auto_host_rewrite": true,
        "retry_policy": retry
    })
}

fn duration(d: std::time::Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// Whether a retry can reach another host than the first attempt's: more than one
/// endpoint, in one priority or several.
pub(crate) fn has_alternative_host(rule: &Rule) -> bool {
    let mut hosts = rule
        .backend_refs
        .iter()
        .flat_map(|r| r.backend.endpoints.iter().map(|e| (&e.host, e.port)));
    hosts
        .next()
        .is_some_and(|first| hosts.any(|other| other != first))
}

/// The distinct priorities of a rule, ascending. Envoy wants dense levels 0, 1, …
pub(crate) fn priority_levels(rule: &Rule) -> Vec<u32> {
    let mut p: Vec<u32> = rule.backend_refs.iter().map(|r| r.priority).collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// One cluster per rule.
pub fn clusters(config: &GatewayConfig) -> Vec<Value> {
    config
        .routes
        .iter()
        .flat_map(|r| &r.rules)
        .map(cluster)
        .collect()
}

fn cluster(rule: &Rule) -> Value {
    let (locality_endpoints, tls_matches) = endpoints(rule);
    let mut cluster = json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": rule.cluster,
        "type": "STRICT_DNS",
        // localhost may resolve to ::1 while a backend listens on 127.0.0.1.
        "dns_lookup_family": "V4_ONLY",
        "connect_timeout": "5s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": rule.cluster, "endpoints": locality_endpoints},
        "circuit_breakers": circuit_breakers(PROVIDER_MAX_REQUESTS, PROVIDER_MAX_REQUESTS),
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_local_origin_failure": 3,
            "split_external_local_origin_errors": true,
            "interval": "5s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 100
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}}
            }
        }
    });
    if !rule.router_resolved {
        // Which backend an attempt goes to is only known per attempt: the upstream-level
        // filter builds each attempt's request.
        cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"] =
            upstream_filters(EXTPROC_CLUSTER);
    }
    if !tls_matches.is_empty() {
        cluster["transport_socket_matches"] = json!(tls_matches);
    }
    cluster
}

/// The upstream filters of a cluster whose attempts the sidecar builds, the sidecar
/// reached through `extproc_cluster`.
pub fn upstream_filters(extproc_cluster: &str) -> Value {
    json!([
            ext_proc_filter_to(true, extproc_cluster),
            {
                // The ext_proc body replacement drops content-length; restore it
                // from the length the sidecar put in dynamic metadata.
                "name": "envoy.filters.http.header_mutation",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                    "mutations": {"request_mutations": [{"append": {
                        "header": {"key": "content-length", "value": "%DYNAMIC_METADATA(io.envoy.ai_gateway:content_length)%"},
                        "append_action": "ADD_IF_ABSENT"
                    }}]}
                }
            },
            {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}
    ])
}

/// The rule's endpoints by priority level (each carrying its backend in metadata), and
/// the TLS transport socket of each backend reached over TLS.
fn endpoints(rule: &Rule) -> (Vec<Value>, Vec<Value>) {
    let levels = priority_levels(rule);
    let mut tls_matches = Vec::new();
    let mut locality_endpoints = Vec::new();
    for (level, priority) in levels.iter().enumerate() {
        let mut lb_endpoints = Vec::new();
        for r in rule.backend_refs.iter().filter(|r| r.priority == *priority) {
            let backend = &r.backend;
            let mut filter_metadata = json!({
                ENDPOINT_METADATA_NAMESPACE: {"per_route_rule_backend_name": r.ref_key, "backend_name": backend.name}
            });
            if let Some(tls) = &backend.tls {
                filter_metadata["envoy.transport_socket_match"] =
                    json!({"llm_backend": backend.name});
                if !tls_matches
                    .iter()
                    .any(|m: &Value| m["name"] == json!(backend.name))
                {
                    tls_matches.push(tls_match(&backend.name, &tls.sni, tls.insecure_skip_verify));
                }
            }
            for e in &backend.endpoints {
                let mut meta = filter_metadata.clone();
                meta[ENDPOINT_METADATA_NAMESPACE]["upstream_host"] = json!(e.host);
                lb_endpoints.push(json!({
                    "endpoint": {
                        "address": {"socket_address": {"address": e.host, "port_value": e.port}},
                        "hostname": backend.authority()
                    },
                    "load_balancing_weight": r.weight,
                    "metadata": {"filter_metadata": meta}
                }));
            }
        }
        locality_endpoints.push(json!({"priority": level, "lb_endpoints": lb_endpoints}));
    }
    (locality_endpoints, tls_matches)
}

fn tls_match(backend: &str, sni: &str, insecure: bool) -> Value {
    let mut context = json!({"sni": sni, "common_tls_context": {}});
    if !insecure {
        context["common_tls_context"]["validation_context"] = json!({
            "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": sni}}]
        });
    }
    context["@type"] =
        json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    json!({
        "name": backend,
        "match": {"llm_backend": backend},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": context}
    })
}

/// Wraps resources as the DiscoveryResponse a file-based xDS source holds.
pub fn discovery_response(version: u64, resources: Vec<Value>) -> Value {
    json!({"version_info": version.to_string(), "resources": resources})
}
