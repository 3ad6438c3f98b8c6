//! The EnvoyProxy: the sidecar in every Envoy pod, as a native sidecar (an init
//! container that keeps running, started and ready before Envoy, stopped after it),
//! sharing the socket's emptyDir with the `envoy` container. Both filter placements
//! then reach the same process, which holds the per-request state.

use std::path::Path;

use serde_json::{json, Value};

use super::plan::Plan;

const SOCKET_VOLUME: &str = "llm-extproc-socket";
const CONFIG_VOLUME: &str = "llm-extproc-config";
const CONFIG_DIR: &str = "/etc/llm-extproc";
const SECRETS_DIR: &str = "/etc/llm-extproc-secrets";
/// Envoy Gateway's proxy runs as this user; the socket is 0600 (whoever reaches it can
/// have provider credentials used), so the sidecar runs as the same one.
const UID: u32 = 65532;

pub fn envoy_proxy(plan: &Plan) -> Value {
    let o = plan.options;
    let socket_dir = Path::new(&o.socket_path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut volumes = vec![
        json!({"name": SOCKET_VOLUME, "emptyDir": {}}),
        json!({"name": CONFIG_VOLUME, "configMap": {"name": o.config_map}}),
    ];
    let mut mounts = vec![
        json!({"name": SOCKET_VOLUME, "mountPath": socket_dir}),
        json!({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": true}),
    ];
    // One volume per Secret, at <secrets dir>/<name>/<key> as --secrets-dir reads them.
    // The Secrets must exist in the Gateway's namespace, where the Envoy pods run.
    for (i, secret) in plan.secrets.iter().enumerate() {
        let name = format!("llm-extproc-secret-{i}");
        volumes.push(json!({"name": name, "secret": {"secretName": secret}}));
        mounts.push(
            json!({"name": name, "mountPath": format!("{SECRETS_DIR}/{secret}"), "readOnly": true}),
        );
    }
    let probe = |path: &str, period: u32, failures: u32| json!({"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period, "failureThreshold": failures});
    let mut args = vec![
        "--log-format".to_string(),
        "json".into(),
        "serve".into(),
        "--config".into(),
        CONFIG_DIR.into(),
        "--listen".into(),
        o.socket_path.clone(),
        "--admin".into(),
        format!("0.0.0.0:{}", o.admin_port),
        "--max-body-bytes".into(),
        o.max_body_bytes.to_string(),
    ];
    if !plan.secrets.is_empty() {
        args.extend(["--secrets-dir".to_string(), SECRETS_DIR.into()]);
    }
    if let Some(header) = &o.consumer_header {
        args.extend(["--consumer-header".to_string(), header.clone()]);
    }
    if o.consumer_metric_attribute {
        args.push("--consumer-metric-attribute".into());
    }
    let sidecar = json!({
        "name": "llm-extproc",
        "image": o.image,
        "command": ["/usr/local/bin/llm-extproc"],
        "args": args,
        // Native sidecar: started (and, with the startup probe, ready) before Envoy.
        "restartPolicy": "Always",
        "ports": [{"name": "metrics", "containerPort": o.admin_port, "protocol": "TCP"}],
        "startupProbe": probe("/readyz", 1, 60),
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": UID,
            "runAsGroup": UID,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "volumeMounts": mounts
    });
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": super::metadata(&plan.envoy_proxy(), &plan.namespace),
        // No `mergeBackends`: it renames the clusters the EnvoyPatchPolicy patches.
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {
            "envoyDeployment": {
                "initContainers": [sidecar],
                "pod": {"volumes": volumes},
                "container": {"volumeMounts": [{"name": SOCKET_VOLUME, "mountPath": socket_dir}]}
            },
            // One pod at a time may be evicted. Envoy Gateway runs one replica unless told
            // otherwise, over which `minAvailable: 1` would allow no eviction at all and
            // hold every node drain; scaled out, this keeps all but one serving.
            "envoyPDB": {"maxUnavailable": 1}
        }}}
    })
}
