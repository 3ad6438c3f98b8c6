//! The Secrets the sidecar mounts (found in the BackendSecurityPolicies), and the
//! placeholders that let a configuration whose keys live only in the cluster resolve.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::error::{unsupported, RenderError};
use crate::config::load::Resources;

/// A Secret a BackendSecurityPolicy reads: where it lives and which field names it.
pub(super) struct SecretUse {
    pub namespace: String,
    pub name: String,
    /// `BackendSecurityPolicy <ns>/<name>`.
    pub policy: String,
    pub field: String,
}

/// The Secrets the BackendSecurityPolicies read: every `secretRef` / `*SecretRef`
/// they hold, at any depth (credential files, client secrets, token exchanges). A ref
/// without a namespace is in the policy's.
pub(super) fn secret_uses(res: &Resources) -> Vec<SecretUse> {
    let mut uses = Vec::new();
    for doc in &res.policies {
        let s = &doc.spec;
        let policy = format!(
            "BackendSecurityPolicy {}/{}",
            doc.namespace(),
            doc.meta.name
        );
        let mut add = |r: &crate::config::resources::ObjectRef, field: &str| {
            uses.push(SecretUse {
                namespace: r
                    .namespace
                    .clone()
                    .unwrap_or_else(|| doc.namespace().to_string()),
                name: r.name.clone(),
                policy: policy.clone(),
                field: field.to_string(),
            })
        };
        let refs = [
            (
                s.api_key.as_ref().map(|h| &h.secret_ref),
                "spec.apiKey.secretRef",
            ),
            (
                s.azure_api_key.as_ref().map(|h| &h.secret_ref),
                "spec.azureAPIKey.secretRef",
            ),
            (
                s.anthropic_api_key.as_ref().map(|h| &h.secret_ref),
                "spec.anthropicAPIKey.secretRef",
            ),
            (
                s.aws_credentials
                    .as_ref()
                    .and_then(|a| a.credentials_file.as_ref())
                    .map(|f| &f.secret_ref),
                "spec.awsCredentials.credentialsFile.secretRef",
            ),
            (
                s.azure_credentials
                    .as_ref()
                    .and_then(|a| a.client_secret_ref.as_ref()),
                "spec.azureCredentials.clientSecretRef",
            ),
            (
                s.gcp_credentials
                    .as_ref()
                    .and_then(|g| g.credentials_file.as_ref())
                    .map(|f| &f.secret_ref),
                "spec.gcpCredentials.credentialsFile.secretRef",
            ),
        ];
        for (r, field) in refs {
            if let Some(r) = r {
                add(r, field);
            }
        }
        let loose = [
            (
                s.aws_credentials
                    .as_ref()
                    .and_then(|a| a.oidc_exchange_token.as_ref()),
                "spec.awsCredentials.oidcExchangeToken",
            ),
            (
                s.azure_credentials
                    .as_ref()
                    .and_then(|a| a.oidc_exchange_token.as_ref()),
                "spec.azureCredentials.oidcExchangeToken",
            ),
            (
                s.gcp_credentials
                    .as_ref()
                    .and_then(|g| g.workload_identity_federation_config.as_ref()),
                "spec.gcpCredentials.workloadIdentityFederationConfig",
            ),
            (s.credential_override.as_ref(), "spec.credentialOverride"),
        ];
        for (value, field) in loose {
            let mut found = Vec::new();
            if let Some(value) = value {
                collect_secret_refs(value, field, &mut found);
            }
            for (name, namespace, field) in found {
                uses.push(SecretUse {
                    namespace: namespace.unwrap_or_else(|| doc.namespace().to_string()),
                    name,
                    policy: policy.clone(),
                    field,
                });
            }
        }
    }
    uses
}

/// (name, namespace, field) of every `secretRef` / `*SecretRef` under `value`.
pub(super) fn collect_secret_refs(
    value: &Value,
    path: &str,
    found: &mut Vec<(String, Option<String>, String)>,
) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}.{key}");
                if key == "secretRef" || key.ends_with("SecretRef") {
                    if let Some(name) = v.get("name").and_then(Value::as_str) {
                        let ns = v.get("namespace").and_then(Value::as_str).map(String::from);
                        found.push((name.to_string(), ns, here.clone()));
                    }
                }
                collect_secret_refs(v, &here, found);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_secret_refs(v, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// The Secrets the sidecar mounts under `--secrets-dir`, where they are found by name
/// alone: two Secrets of one name in different namespaces would be one key for both.
pub(super) fn secret_names(uses: &[SecretUse]) -> Result<BTreeSet<String>, RenderError> {
    let mut by_name: BTreeMap<&str, &SecretUse> = BTreeMap::new();
    for u in uses {
        match by_name.get(u.name.as_str()) {
            Some(first) if first.namespace != u.namespace => {
                return Err(unsupported(
                    u.policy.clone(),
                    &u.field,
                    format!(
                        "names Secret `{}/{}`, and {} names `{}/{}` ({}): the sidecar finds mounted Secrets by name alone, so both backends would get one key",
                        u.namespace, u.name, first.policy, first.namespace, first.name, first.field
                    ),
                    "give the Secrets different names",
                ));
            }
            Some(_) => {}
            None => {
                by_name.insert(&u.name, u);
            }
        }
    }
    Ok(by_name.keys().map(|n| n.to_string()).collect())
}

/// Secrets outside the Gateway's namespace: the Envoy pods run there and mount only its
/// Secrets, so each is mounted from the Gateway's namespace under the same name.
pub(super) fn mounted_elsewhere(uses: &[SecretUse], gateway_namespace: &str) -> Vec<String> {
    let mut notes = BTreeSet::new();
    for u in uses.iter().filter(|u| u.namespace != gateway_namespace) {
        notes.insert(format!(
            "{}: {}: Secret `{}/{}` is mounted from the Gateway's namespace as `{gateway_namespace}/{}` (a pod mounts only Secrets of its own namespace): create it there",
            u.policy, u.field, u.namespace, u.name, u.name
        ));
    }
    notes.into_iter().collect()
}

/// Where a placeholder Secret comes from (no file: it stands in for one in the cluster).
const PLACEHOLDER_FILE: &str = "<render placeholder>";

/// Secret manifests among the `--config` files: those files are what the sidecar reads
/// from its ConfigMap, and it reads a Secret manifest before the mounted Secret of that
/// name.
pub(super) fn secrets_in_config(res: &Resources, config_map: &str) -> Vec<String> {
    res.secrets
        .iter()
        .filter(|d| d.file.as_os_str() != PLACEHOLDER_FILE)
        .map(|d| {
            format!(
                "Secret {}/{} is in the --config files ({}): loaded into the ConfigMap `{config_map}`, its key would be readable by whoever reads ConfigMaps, and the sidecar would use it over the mounted Secret (a rotation would change nothing): keep Secrets out of the ConfigMap",
                d.namespace(),
                d.meta.name,
                d.file.display()
            )
        })
        .collect()
}

/// Stands in for each Secret that no manifest or `--secrets-dir` provides, for the
/// kinds of key that can be (see [`super::load`]).
pub(super) fn add_placeholders(res: &mut Resources, secrets_dir: Option<&std::path::Path>) {
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
            file: PLACEHOLDER_FILE.into(),
        });
    }
    res.secrets.extend(added);
}
