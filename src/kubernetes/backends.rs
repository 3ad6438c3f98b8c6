//! The Backends: each provider's (with its TLS: the system CAs and the SNI), and the
//! sidecar's unix socket, which the EnvoyExtensionPolicy points at.

use serde_json::{json, Value};

use super::plan::{BackendPlan, Plan};

pub fn documents(plan: &Plan) -> Vec<Value> {
    let mut out: Vec<Value> = plan.backends.values().map(provider).collect();
    out.push(sidecar(plan));
    out
}

/// A provider Backend. `fallback: true` puts its endpoints at priority 1 of every
/// cluster that uses it (`backend-with-fallback` in Envoy Gateway's
/// internal/gatewayapi/testdata): the priority the retry policy moves to.
fn provider(b: &BackendPlan) -> Value {
    let mut spec = json!({"endpoints": b.endpoints});
    if let Some(tls) = &b.tls {
        // The CRD refuses a CA choice beside insecureSkipVerify.
        spec["tls"] = if tls.insecure_skip_verify {
            json!({"sni": tls.sni, "insecureSkipVerify": true})
        } else {
            json!({"sni": tls.sni, "wellKnownCACertificates": "System"})
        };
    }
    if b.fallback {
        spec["fallback"] = json!(true);
    }
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": super::metadata(&b.name, &b.namespace),
        "spec": spec
    })
}

/// The sidecar, in every Envoy pod, on the socket in the shared emptyDir (Envoy
/// Gateway needs `extensionApis.enableBackend` for this kind).
fn sidecar(plan: &Plan) -> Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "Backend",
        "metadata": super::metadata(&plan.sidecar_backend(), &plan.namespace),
        "spec": {"endpoints": [{"unix": {"path": plan.options.socket_path}}]}
    })
}
