//! One HTTPRoute per AIGatewayRoute (same name and namespace, so Envoy Gateway's
//! cluster of rule `i` is `httproute/<ns>/<name>/rule/<i>`), and its HTTPRouteFilters:
//! the upstream Host set to the provider's, and the unknown-model answer.

use serde_json::{json, Value};

use super::plan::{gateway_duration, Plan, RoutePlan, RulePlan};
use crate::config::{BACKEND_BINDING_HEADER, STREAM_ROUTE_HEADER};

/// The last rule of every HTTPRoute: it matches any request, so that the router-level
/// ext_proc (which Envoy Gateway enables per route) runs on requests that carry no
/// `x-ai-eg-model` yet; once the sidecar has set it, the model's rule wins. What still
/// lands here (a model the sidecar lets through but no rule takes) gets a 404.
pub const UNKNOWN_MODEL_RULE: &str = "unknown-model";

pub fn documents(plan: &Plan) -> Vec<Value> {
    let mut out = Vec::new();
    for route in &plan.routes {
        out.push(host_rewrite_filter(route));
        out.push(unknown_model_filter(plan, route));
        out.push(http_route(plan, route));
    }
    out
}

pub(super) fn host_rewrite_name(route: &RoutePlan) -> String {
    format!("{}-host-rewrite", route.name)
}

pub(super) fn unknown_model_name(route: &RoutePlan) -> String {
    format!("{}-unknown-model", route.name)
}

/// `urlRewrite.hostname.type: Backend` is Envoy Gateway's `auto_host_rewrite`: each
/// attempt's Host is the host of the endpoint it goes to (a failover to another
/// provider sends that provider's host), as Envoy AI Gateway's controller renders it.
/// Without `appendXForwardedHost: false` Envoy Gateway also sends the client's Host to
/// the provider as x-forwarded-host (internal/xds/translator/route.go), which `run` does not.
fn host_rewrite_filter(route: &RoutePlan) -> Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "HTTPRouteFilter",
        "metadata": super::metadata(&host_rewrite_name(route), &route.namespace),
        "spec": {"urlRewrite": {"hostname": {"type": "Backend"}, "appendXForwardedHost": false}}
    })
}

/// The same text as the standalone catch-all route; the local-reply mapping the
/// EnvoyPatchPolicy adds turns it into an OpenAI-style JSON error.
fn unknown_model_filter(plan: &Plan, route: &RoutePlan) -> Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "HTTPRouteFilter",
        "metadata": super::metadata(&unknown_model_name(route), &route.namespace),
        "spec": {"directResponse": {
            "statusCode": 404,
            "contentType": "text/plain",
            "body": {"type": "Inline", "inline": format!("known models: {}", plan.known_models.join(", "))}
        }}
    })
}

fn http_route(plan: &Plan, route: &RoutePlan) -> Value {
    let mut rules: Vec<Value> = route.rules.iter().map(|r| rule(route, r)).collect();
    rules.push(json!({
        "name": UNKNOWN_MODEL_RULE,
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "filters": [extension_ref(&unknown_model_name(route))]
    }));
    let mut parent = json!({
        "group": "gateway.networking.k8s.io", "kind": "Gateway", "name": plan.gateway
    });
    if route.namespace != plan.namespace {
        parent["namespace"] = json!(plan.namespace);
    }
    let mut spec = json!({"parentRefs": [parent], "rules": rules});
    if let Some(hostnames) = &route.hostnames {
        spec["hostnames"] = hostnames.clone();
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": super::metadata(&route.name, &route.namespace),
        "spec": spec
    })
}

fn rule(route: &RoutePlan, rule: &RulePlan) -> Value {
    let matches: Vec<Value> = rule
        .matches
        .iter()
        .map(|headers| {
            let mut m = json!({"path": {"type": "PathPrefix", "value": "/"}});
            if !headers.is_empty() {
                m["headers"] = json!(headers);
            }
            m
        })
        .collect();
    // All the rule's backends on one cluster (no backendRef-level filters: those would
    // make Envoy Gateway give each backend its own cluster, and priorities would not
    // fail over).
    let backend_refs: Vec<Value> = rule
        .refs
        .iter()
        .map(|r| {
            json!({
                "group": "gateway.envoyproxy.io", "kind": "Backend", "name": r.backend, "weight": r.weight
            })
        })
        .collect();
    // Only `request`: with `backendRequest` and no Gateway API retry, Envoy Gateway
    // makes backendRequest the whole route's timeout and bounds no attempt
    // (`processRouteTimeout`, internal/gatewayapi/route.go); the BackendTrafficPolicy's
    // `retry.perRetry.timeout` bounds each attempt instead, as `run` does.
    let timeouts = json!({"request": gateway_duration(rule.request_timeout)});
    json!({
        "name": rule.name,
        "matches": matches,
        "filters": [
            // The sidecar's routing hints never leave Envoy.
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "remove": [BACKEND_BINDING_HEADER, STREAM_ROUTE_HEADER]
            }},
            extension_ref(&host_rewrite_name(route))
        ],
        "backendRefs": backend_refs,
        // Without `timeouts.request` a rule gets 60 s, as under Envoy AI Gateway; it also
        // bounds streamed answers (standalone, streams have no overall deadline).
        "timeouts": timeouts
    })
}

fn extension_ref(name: &str) -> Value {
    json!({"type": "ExtensionRef", "extensionRef": {
        "group": "gateway.envoyproxy.io", "kind": "HTTPRouteFilter", "name": name
    }})
}
