//! The Secrets the sidecar mounts (found in the BackendSecurityPolicies), and the
//! placeholders that let a configuration whose keys live only in the cluster resolve.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::config::load::Resources;

/// The Secrets the BackendSecurityPolicies read: every `secretRef` / `*SecretRef`
/// they hold, at any depth (credential files, client secrets, token exchanges).
pub(super) fn secret_names(res: &Resources) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for doc in &res.policies {
        let s = &doc.spec;
        let refs = [
            s.api_key.as_ref().map(|h| &h.secret_ref),
            s.azure_api_key.as_ref().map(|h| &h.secret_ref),
            s.anthropic_api_key.as_ref().map(|h| &h.secret_ref),
            s.aws_credentials
                .as_ref()
                .and_then(|a| a.credentials_file.as_ref())
                .map(|f| &f.secret_ref),
            s.azure_credentials
                .as_ref()
                .and_then(|a| a.client_secret_ref.as_ref()),
            s.gcp_credentials
                .as_ref()
                .and_then(|g| g.credentials_file.as_ref())
                .map(|f| &f.secret_ref),
        ];
        names.extend(refs.into_iter().flatten().map(|r| r.name.clone()));
        let loose = [
            s.aws_credentials
                .as_ref()
                .and_then(|a| a.oidc_exchange_token.as_ref()),
            s.azure_credentials
                .as_ref()
                .and_then(|a| a.oidc_exchange_token.as_ref()),
            s.gcp_credentials
                .as_ref()
                .and_then(|g| g.workload_identity_federation_config.as_ref()),
            s.credential_override.as_ref(),
        ];
        for value in loose.into_iter().flatten() {
            collect_secret_refs(value, &mut names);
        }
    }
    names
}

pub(super) fn collect_secret_refs(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "secretRef" || key.ends_with("SecretRef") {
                    if let Some(name) = v.get("name").and_then(Value::as_str) {
                        names.insert(name.to_string());
                    }
                }
                collect_secret_refs(v, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_secret_refs(v, names)),
        _ => {}
    }
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
            file: "<render placeholder>".into(),
        });
    }
    res.secrets.extend(added);
}
