//! `render gateway`: the Envoy Gateway (v1.9) and Gateway API resources that run the
//! sidecar beside Envoy Gateway, with no Envoy AI Gateway controller.
//!
//! One module per rendered kind. The resources rest on how Envoy Gateway names and
//! shapes the xDS it generates (see [`names`]); the EnvoyPatchPolicy adds what its other
//! resources cannot express: the router-level ext_proc settings the sidecar relies on,
//! the upstream-level filter, and the endpoint metadata that names each backend.

mod backends;
mod checks;
mod envoy_proxy;
mod error;
mod extension_policy;
mod gateway;
mod httproute;
pub mod names;
mod patch_policy;
mod plan;
mod secrets;
mod traffic_policies;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::config::load::Resources;
use crate::config::GatewayConfig;

pub use error::RenderError;

/// What a platform team chooses; every field has a default in the CLI.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub gateway_name: Option<String>,
    pub gateway_namespace: String,
    pub gateway_class: String,
    /// The Gateway listener's port.
    pub port: u16,
    pub image: String,
    /// The ConfigMap holding the AI resources, mounted as the sidecar's `--config`.
    pub config_map: String,
    /// Where the sidecar listens, in an emptyDir shared with the `envoy` container.
    pub socket_path: String,
    /// The sidecar's admin port (/healthz, /readyz, /metrics).
    pub admin_port: u16,
    pub max_body_bytes: u64,
    /// The `envoyproxy/ratelimit` service (host:port) for QuotaPolicies.
    pub rate_limit_service: Option<String>,
    /// The sidecar's `--consumer-header`: the header naming the consumer, which an
    /// authenticating filter before it sets.
    pub consumer_header: Option<String>,
    /// The sidecar's `--consumer-metric-attribute`.
    pub consumer_metric_attribute: bool,
}

/// Every resource, in a stable order, as one multi-document YAML text.
pub fn render(
    resources: &Resources,
    config: &GatewayConfig,
    options: &RenderOptions,
) -> Result<String, RenderError> {
    let plan = plan::Plan::build(resources, config, options)?;
    let mut documents: Vec<Value> = vec![gateway::gateway(&plan)];
    documents.extend(httproute::documents(&plan));
    documents.extend(backends::documents(&plan));
    documents.push(extension_policy::policy(&plan));
    documents.push(patch_policy::policy(&plan, config)?);
    documents.extend(traffic_policies::documents(&plan));
    documents.push(envoy_proxy::envoy_proxy(&plan));
    to_yaml(&documents)
}

/// What the rendered resources do differently from what the resources say, though not
/// wrongly enough to refuse: each to be shown to whoever renders.
pub fn notices(resources: &Resources, options: &RenderOptions) -> Vec<String> {
    let mut notes = secrets::secrets_in_config(resources, &options.config_map);
    notes.extend(secrets::mounted_elsewhere(
        &secrets::secret_uses(resources),
        &options.gateway_namespace,
    ));
    notes
}

fn to_yaml(documents: &[Value]) -> Result<String, RenderError> {
    let mut out = String::new();
    for document in documents {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml_ng::to_string(document).map_err(|e| RenderError::Yaml(e.to_string()))?,
        );
    }
    Ok(out)
}

/// `metadata` of a rendered object, labelled as this tool's.
fn metadata(name: &str, namespace: &str) -> Value {
    serde_json::json!({
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "llm-extproc"}
    })
}

/// Loads and resolves the configuration for rendering. Provider keys usually live only
/// in the cluster, so a Secret that no manifest (or `--secrets-dir`) provides is stood
/// in for by a placeholder of the right shape, for the kinds of key that can be: its
/// value is never read (nothing of a Secret is rendered; the pods mount the real one).
pub fn load(source: &crate::config::Source) -> Result<(Resources, GatewayConfig), String> {
    use crate::config::{load, problem, resolve};
    let files = load::config_files(&source.paths).map_err(|p| problem::report(&p))?;
    let mut resources = load::load_files(&files).map_err(|p| problem::report(&p))?;
    secrets::add_placeholders(&mut resources, source.secrets_dir.as_deref());
    let config = resolve::resolve(&resources, source.secrets_dir.as_deref())
        .map_err(|p| problem::report(&p))?;
    if config.routes.iter().all(|r| r.rules.is_empty()) {
        return Err("no AIGatewayRoute with rules: nothing to render".into());
    }
    Ok((resources, config))
}
