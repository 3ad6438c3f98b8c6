//! `render gateway`: the Envoy Gateway (v1.9) and Gateway API resources that run the
//! sidecar beside Envoy Gateway, with no Envoy AI Gateway controller.
//!
//! One module per rendered kind. The resources rest on how Envoy Gateway names and
//! shapes the xDS it generates (see [`names`]); the EnvoyPatchPolicy adds what its other
//! resources cannot express: the router-level ext_proc settings the sidecar relies on,
//! the upstream-level filter, and the endpoint metadata that names each backend.

mod backends;
mod envoy_proxy;
mod extension_policy;
mod gateway;
mod httproute;
pub mod names;
mod patch_policy;
mod plan;
mod traffic_policies;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::config::load::Resources;
use crate::config::GatewayConfig;

pub use plan::RenderError;

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
    add_placeholder_secrets(&mut resources, source.secrets_dir.as_deref());
    let config = resolve::resolve(&resources, source.secrets_dir.as_deref())
        .map_err(|p| problem::report(&p))?;
    if config.routes.iter().all(|r| r.rules.is_empty()) {
        return Err("no AIGatewayRoute with rules: nothing to render".into());
    }
    Ok((resources, config))
}

fn add_placeholder_secrets(res: &mut Resources, secrets_dir: Option<&std::path::Path>) {
    use crate::config::load::Document;
    use crate::config::resources::{ObjectMeta, ObjectRef, SecretBody};
    let mut wanted: Vec<(String, &ObjectRef, &'static str, String)> = Vec::new();
    for doc in &res.policies {
        let s = &doc.spec;
        let ns = doc.namespace().to_string();
        for holder in [&s.api_key, &s.azure_api_key, &s.anthropic_api_key]
            .into_iter()
            .flatten()
        {
            wanted.push((
                ns.clone(),
                &holder.secret_ref,
                "apiKey",
                "placeholder".into(),
            ));
        }
        if let Some(r) = s
            .azure_credentials
            .as_ref()
            .and_then(|a| a.client_secret_ref.as_ref())
        {
            wanted.push((ns.clone(), r, "client-secret", "placeholder".into()));
        }
        if let Some(file) = s
            .aws_credentials
            .as_ref()
            .and_then(|a| a.credentials_file.as_ref())
        {
            let profile = file.profile.as_deref().unwrap_or("default");
            let text = format!("[{profile}]\naws_access_key_id = placeholder\naws_secret_access_key = placeholder\n");
            wanted.push((ns.clone(), &file.secret_ref, "credentials", text));
        }
    }
    let mut added: Vec<Document<SecretBody>> = Vec::new();
    for (policy_ns, secret, key, value) in wanted {
        let ns = secret.namespace.clone().unwrap_or(policy_ns);
        let defined = res
            .secrets
            .iter()
            .chain(&added)
            .any(|d| d.meta.name == secret.name && d.namespace() == ns)
            || secrets_dir.is_some_and(|dir| dir.join(&secret.name).is_dir());
        if defined {
            continue;
        }
        added.push(Document {
            meta: ObjectMeta {
                name: secret.name.clone(),
                namespace: Some(ns),
                ..Default::default()
            },
            spec: SecretBody {
                data: Default::default(),
                string_data: [(key.to_string(), value)].into(),
                secret_type: None,
                immutable: None,
            },
            file: "<render placeholder>".into(),
        });
    }
    res.secrets.extend(added);
}
