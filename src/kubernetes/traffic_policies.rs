//! Retries and limits. A BackendTrafficPolicy per HTTPRoute rule (its `sectionName`)
//! with the retry policy `run` gives the rule's route: the first failing attempt moves
//! to the next priority. A ClientTrafficPolicy on the Gateway with a buffer large enough
//! for the sidecar's body limit.

use serde_json::{json, Value};

use super::plan::{gateway_duration, Plan, RoutePlan, RulePlan};
use crate::envoy::resources::PROVIDER_MAX_REQUESTS;

pub fn documents(plan: &Plan) -> Vec<Value> {
    let mut out: Vec<Value> = plan
        .routes
        .iter()
        .flat_map(|route| {
            route
                .rules
                .iter()
                .map(move |rule| backend_policy(plan, route, rule))
        })
        .collect();
    out.push(client_policy(plan));
    out
}

/// The rule's BackendTrafficPolicy.
pub(super) fn backend_policy_name(route: &RoutePlan, rule: &RulePlan) -> String {
    format!("{}-{}", route.name, rule.name)
}

fn backend_policy(plan: &Plan, route: &RoutePlan, rule: &RulePlan) -> Value {
    let mut triggers = vec!["connect-failure", "reset", "5xx"];
    let mut retry_on = json!({});
    if rule.retry_429 {
        // A 429 moves on at once to a host that is not rate limited (the previous-hosts
        // predicate Envoy Gateway always adds keeps it off the one that refused).
        triggers.push("retriable-status-codes");
        retry_on["httpStatusCodes"] = json!([429]);
    }
    retry_on["triggers"] = json!(triggers);
    let mut retry = json!({
        "numRetries": rule.num_retries,
        // previous_priorities with update_frequency 1: the first retry goes to the next
        // priority (`buildRetryPolicy`, internal/xds/translator/route.go; with 2 the
        // first retry would hit the dead priority again).
        "numAttemptsPerPriority": 1,
        "retryOn": retry_on
    });
    if let Some(t) = rule.backend_request_timeout {
        // `timeouts.backendRequest`: each attempt's bound (per_try_timeout).
        retry["perRetry"] = json!({"timeout": gateway_duration(t)});
    }
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": super::metadata(&backend_policy_name(route, rule), &route.namespace),
        "spec": {
            "targetRefs": [{
                "group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                "name": route.name, "sectionName": rule.name
            }],
            "retry": retry,
            // As in `run`: as many requests (and retries) as the sidecar holds state for.
            "circuitBreaker": {
                "maxConnections": PROVIDER_MAX_REQUESTS,
                "maxPendingRequests": PROVIDER_MAX_REQUESTS,
                "maxParallelRequests": PROVIDER_MAX_REQUESTS,
                "maxParallelRetries": PROVIDER_MAX_REQUESTS
            },
            "healthCheck": {"passive": {
                "consecutive5XxErrors": 5,
                "consecutiveLocalOriginFailures": 3,
                "splitExternalLocalOriginErrors": true,
                "interval": "5s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 100
            }},
            // Envoy Gateway's default is 32 KiB (`tcpClusterPerConnectionBufferLimitBytes`,
            // internal/xds/translator/cluster.go); the upstream filter replaces whole bodies.
            "connection": {"bufferLimit": plan.buffer_limit()}
        }
    })
}

fn client_policy(plan: &Plan) -> Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "ClientTrafficPolicy",
        "metadata": super::metadata(&plan.extension_policy(), &plan.namespace),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": plan.gateway}],
            "connection": {"bufferLimit": plan.buffer_limit()},
            // LLM streams pause while the model thinks (as in `run`).
            "timeout": {"http": {"streamIdleTimeout": "300s"}}
        }
    })
}
