//! The Gateway: one HTTP listener admitting the routes' namespaces, its Envoy pods
//! shaped by the EnvoyProxy that adds the sidecar.

use serde_json::{json, Value};

use super::plan::Plan;

pub fn gateway(plan: &Plan) -> Value {
    let namespaces: Vec<String> = plan.route_namespaces().into_iter().collect();
    let allowed = if namespaces == [plan.namespace.clone()] {
        json!({"from": "Same"})
    } else {
        // Only the namespaces of the rendered routes, not every namespace.
        json!({"from": "Selector", "selector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces
        }]}})
    };
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": super::metadata(&plan.gateway, &plan.namespace),
        "spec": {
            "gatewayClassName": plan.options.gateway_class,
            "infrastructure": {"parametersRef": {
                "group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": plan.envoy_proxy()
            }},
            "listeners": [{
                "name": plan.listener(),
                "protocol": "HTTP",
                "port": plan.options.port,
                "allowedRoutes": {"namespaces": allowed}
            }]
        }
    })
}
