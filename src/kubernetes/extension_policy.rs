//! The router-level filter: an EnvoyExtensionPolicy on the Gateway, fail-closed, over
//! the sidecar's unix-socket Backend, with the processing modes `run` uses. What it
//! cannot say (`send_body_without_waiting_for_header_response`) the EnvoyPatchPolicy adds.

use serde_json::{json, Value};

use super::plan::Plan;
use crate::envoy::resources::SIDECAR_MAX_STREAMS;
use crate::extproc::messages::METADATA_NAMESPACE;

pub fn policy(plan: &Plan) -> Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": super::metadata(&plan.extension_policy(), &plan.namespace),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": plan.gateway}],
            "extProc": [{
                "backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": plan.sidecar_backend()}],
                // Every request holds a stream for its whole life, plus one per attempt on
                // rules with the upstream filter: Envoy's default of 1,024 is far too few.
                "backendSettings": {"circuitBreaker": {
                    "maxConnections": SIDECAR_MAX_STREAMS,
                    "maxPendingRequests": SIDECAR_MAX_STREAMS,
                    "maxParallelRequests": SIDECAR_MAX_STREAMS,
                    "maxParallelRetries": 0
                }},
                // No request goes on unprocessed: the sidecar holds the credentials.
                "failOpen": false,
                // Envoy's default of 200 ms fails on large bodies.
                "messageTimeout": "10s",
                // FullDuplexStreamed makes Envoy Gateway set request_trailer_mode SEND
                // (`buildProcessingMode`, internal/xds/translator/extproc.go).
                "processingMode": {
                    "request": {"body": "FullDuplexStreamed"},
                    "response": {"body": "Streamed"}
                },
                "metadata": {"writableNamespaces": [METADATA_NAMESPACE]}
            }]
        }
    })
}
