//! The EnvoyPatchPolicy: JSONPatches on the xDS Envoy Gateway generates for the Gateway,
//! for what no other resource expresses. The filter JSON is the one `run` uses
//! (`crate::envoy`), so the two cannot drift.
//!
//! - Listener: the router-level ext_proc's `send_body_without_waiting_for_header_response`
//!   (without it the sidecar, which answers a request's headers once its body is read,
//!   and Envoy, which waits for that answer before sending the body, deadlock); the
//!   content-length restore after it; the rate-limit filter of the QuotaPolicies; the
//!   OpenAI-style local replies.
//! - Clusters of rules whose backend is chosen per attempt: the upstream-level ext_proc,
//!   the content-length restore and `upstream_codec`, and on each endpoint the metadata
//!   naming its backend reference.
//!
//! Envoy Gateway applies each operation with `EnsurePathExistsOnAdd`
//! (internal/utils/jsonpatch/patch.go), but the patches never rely on it: every `add`
//! goes into a parent that Envoy Gateway's own output has, so that a plain RFC 6902
//! library gives the same result. `EnvoyProxy.spec.mergeBackends` must stay unset: it
//! renames the clusters these patches address.

use serde_json::{json, Value};

use super::error::RenderError;
use super::names;
use super::plan::{Plan, RulePlan};
use crate::config::GatewayConfig;
use crate::envoy::bootstrap::{local_reply_config, restore_request_length};
use crate::envoy::resources::{upstream_filters, ENDPOINT_METADATA_NAMESPACE};
use crate::quota::envoy::{rate_limit_cluster, rate_limit_filter, RateLimitService};

const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_CONFIGURATION: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LOAD_ASSIGNMENT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub fn policy(plan: &Plan, config: &GatewayConfig) -> Result<Value, RenderError> {
    let mut patches = listener_patches(plan);
    if !config.quotas.is_empty() {
        patches.extend(quota_patches(plan, config)?);
    }
    let sidecar = Sidecar::of(plan);
    for route in &plan.routes {
        for rule in route.rules.iter().filter(|r| r.binding_backend.is_none()) {
            patches.push(upstream_filter_patch(rule, &sidecar));
            patches.extend(endpoint_metadata_patches(rule));
        }
    }
    Ok(json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyPatchPolicy",
        "metadata": super::metadata(&plan.extension_policy(), &plan.namespace),
        "spec": {
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": plan.gateway},
            "type": "JSONPatch",
            "jsonPatches": patches
        }
    }))
}

/// How the patched filters reach the sidecar: Envoy Gateway's cluster of the
/// EnvoyExtensionPolicy's Backend, with the `:authority` Envoy Gateway gives the router
/// level (`<backend>.<namespace>`, `buildExtProc` in
/// internal/gatewayapi/envoyextensionpolicy.go). Without one Envoy sends the cluster
/// name, whose `/` the sidecar's HTTP/2 server refuses (RST_STREAM PROTOCOL_ERROR,
/// seen on Envoy 1.40 by e2e/test_kubernetes_xds.py).
struct Sidecar {
    cluster: String,
    authority: String,
}

impl Sidecar {
    fn of(plan: &Plan) -> Sidecar {
        Sidecar {
            cluster: names::extproc_cluster(&plan.namespace, &plan.extension_policy()),
            authority: names::extproc_authority(&plan.namespace, &plan.sidecar_backend()),
        }
    }

    /// Sets the authority on a filter's `envoy_grpc` at `pointer`.
    fn address(&self, mut filter: Value, pointer: &str) -> Value {
        if let Some(Value::Object(grpc)) = filter.pointer_mut(pointer) {
            grpc.insert("authority".into(), json!(self.authority));
        }
        filter
    }
}

fn patch(kind: &str, name: &str, operation: Value) -> Value {
    json!({"type": kind, "name": name, "operation": operation})
}

/// A JSONPath selecting the element of a list whose `name` is `name`.
fn named(list: &str, name: &str) -> String {
    format!("$..{list}[?(@.name=='{name}')]")
}

fn listener_name(plan: &Plan) -> String {
    names::listener(&plan.namespace, &plan.gateway, plan.listener())
}

fn listener_patches(plan: &Plan) -> Vec<Value> {
    let listener = listener_name(plan);
    let extproc = names::extproc_filter(&plan.namespace, &plan.extension_policy());
    vec![
        // Envoy Gateway writes FullDuplexStreamed with request_trailer_mode SEND already;
        // this is the one setting the EnvoyExtensionPolicy has no field for.
        patch(
            LISTENER,
            &listener,
            json!({
                "op": "add",
                "jsonPath": named("http_filters", &extproc),
                "path": "/typed_config/send_body_without_waiting_for_header_response",
                "value": true
            }),
        ),
        // Added at the router's place, i.e. just before it, after the ext_proc filters.
        patch(
            LISTENER,
            &listener,
            json!({
                "op": "add",
                "jsonPath": named("http_filters", names::ROUTER_FILTER),
                "value": restore_request_length()
            }),
        ),
        patch(
            LISTENER,
            &listener,
            json!({
                "op": "add",
                "jsonPath": named("filters", names::HCM_FILTER),
                "path": "/typed_config/local_reply_config",
                "value": local_reply_config()
            }),
        ),
    ]
}

/// The QuotaPolicies as `run` enforces them: the rate-limit filter before the router,
/// and on every route one check and one charge per bucket, with the descriptors
/// `render ratelimit-config` configures `envoyproxy/ratelimit` for.
fn quota_patches(plan: &Plan, config: &GatewayConfig) -> Result<Vec<Value>, RenderError> {
    let listener = listener_name(plan);
    let sidecar = Sidecar::of(plan);
    let service = match &plan.options.rate_limit_service {
        // The sidecar's own counters: each Envoy pod counts alone.
        None => RateLimitService::Embedded,
        Some(text) => RateLimitService::parse(text).map_err(RenderError::Option)?,
    };
    let mut patches = Vec::new();
    if let Some(cluster) = rate_limit_cluster(&service) {
        // A whole resource: `add` with no path (internal/xds/translator/jsonpatch.go
        // reads the value as the resource itself, without `@type`).
        patches.push(patch(
            CLUSTER,
            crate::quota::envoy::RATE_LIMIT_CLUSTER,
            json!({"op": "add", "path": "", "value": cluster}),
        ));
    }
    let mut filter = rate_limit_filter(&service, &sidecar.cluster);
    if matches!(service, RateLimitService::Embedded) {
        filter = sidecar.address(
            filter,
            "/typed_config/rate_limit_service/grpc_service/envoy_grpc",
        );
    }
    patches.push(patch(
        LISTENER,
        &listener,
        json!({
            "op": "add",
            "jsonPath": named("http_filters", names::ROUTER_FILTER),
            "value": filter
        }),
    ));
    // Every route of the Gateway has `typed_per_filter_config` (Envoy Gateway enables
    // the ext_proc filter there), so this adds into an existing map.
    let per_route = crate::quota::envoy::virtual_host_config(&config.quotas);
    patches.push(patch(
        ROUTE_CONFIGURATION,
        &listener,
        json!({
            "op": "add",
            "jsonPath": "$..routes[*]",
            "path": "/typed_per_filter_config/envoy.filters.http.ratelimit",
            "value": per_route["envoy.filters.http.ratelimit"]
        }),
    ));
    Ok(patches)
}

/// The upstream filters, in the cluster's HttpProtocolOptions. Envoy Gateway emits that
/// message only when every backend of the cluster is TLS (`auto_config`; see
/// `buildTypedExtensionProtocolOptions`, internal/xds/translator/cluster.go), with no
/// `http_filters`: then the filters are added to it; otherwise the whole message is
/// added, with HTTP/1.1 as Envoy Gateway would have chosen.
fn upstream_filter_patch(rule: &RulePlan, sidecar: &Sidecar) -> Value {
    let mut filters = upstream_filters(&sidecar.cluster);
    if let Some(ext_proc) = filters.get_mut(0) {
        *ext_proc = sidecar.address(ext_proc.take(), "/typed_config/grpc_service/envoy_grpc");
    }
    let operation = if rule.all_tls {
        json!({
            "op": "add",
            "path": format!("/typed_extension_protocol_options/{PROTOCOL_OPTIONS}/http_filters"),
            "value": filters
        })
    } else {
        json!({
            "op": "add",
            "path": "/typed_extension_protocol_options",
            "value": {PROTOCOL_OPTIONS: {
                "@type": format!("type.googleapis.com/{PROTOCOL_OPTIONS}"),
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": filters
            }}
        })
    };
    patch(CLUSTER, &rule.cluster, operation)
}

/// On each endpoint of each backendRef (its locality is named after the reference), the
/// metadata the upstream filter reads. Hostname endpoints are inline in the Cluster
/// (STRICT_DNS); IP endpoints come by EDS, in the ClusterLoadAssignment of the same name.
/// A TLS endpoint already has metadata (`envoy.transport_socket_match`), which must stay.
fn endpoint_metadata_patches(rule: &RulePlan) -> Vec<Value> {
    rule.refs
        .iter()
        .enumerate()
        .map(|(j, r)| {
            let locality = names::backend_locality(&rule.cluster, j);
            let (kind, endpoints) = if rule.fqdn {
                (CLUSTER, "$.load_assignment.endpoints")
            } else {
                (LOAD_ASSIGNMENT, "$.endpoints")
            };
            let values = json!({"per_route_rule_backend_name": r.ref_key, "backend_name": r.ai_backend});
            let (path, value) = if r.tls {
                (format!("/metadata/filter_metadata/{ENDPOINT_METADATA_NAMESPACE}"), values)
            } else {
                ("/metadata".to_string(), json!({"filter_metadata": {ENDPOINT_METADATA_NAMESPACE: values}}))
            };
            patch(
                kind,
                &rule.cluster,
                json!({
                    "op": "add",
                    "jsonPath": format!("{endpoints}[?(@.locality.region=='{locality}')].lb_endpoints[*]"),
                    "path": path,
                    "value": value
                }),
            )
        })
        .collect()
}
