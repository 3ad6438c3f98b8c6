//! Secret values: from Secret manifests, or from a directory of mounted keys.

use std::path::Path;

use base64::Engine;

use super::load::{Document, Resources};
use super::resources::SecretBody;
pub use crate::secret::SecretValue;

/// Why a Secret's key could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretLookupError {
    /// No Secret manifest and no mounted directory of that name.
    NoSecret,
    /// The Secret exists but lacks the key; these are the keys it has.
    NoKey { present: Vec<String> },
    /// The value is not valid base64 (in `data`) or not UTF-8.
    BadValue(String),
}

/// Finds `key` of Secret `namespace/name`.
pub fn lookup(
    resources: &Resources,
    secrets_dir: Option<&Path>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<SecretValue, SecretLookupError> {
    if let Some(doc) = find(resources, namespace, name) {
        return from_manifest(&doc.spec, key);
    }
    if let Some(dir) = secrets_dir {
        let secret_dir = dir.join(name);
        if secret_dir.is_dir() {
            let path = secret_dir.join(key);
            return match std::fs::read_to_string(&path) {
                Ok(v) => Ok(SecretValue::new(
                    v.trim_end_matches(['\n', '\r']).to_string(),
                )),
                Err(_) => Err(SecretLookupError::NoKey {
                    present: mounted_keys(&secret_dir),
                }),
            };
        }
    }
    Err(SecretLookupError::NoSecret)
}

fn find<'a>(
    resources: &'a Resources,
    namespace: &str,
    name: &str,
) -> Option<&'a Document<SecretBody>> {
    resources
        .secrets
        .iter()
        .find(|s| s.meta.name == name && s.namespace() == namespace)
}

fn from_manifest(secret: &SecretBody, key: &str) -> Result<SecretValue, SecretLookupError> {
    // As in Kubernetes, `stringData` wins over `data` for the same key.
    if let Some(v) = secret.string_data.get(key) {
        return Ok(SecretValue::new(v.trim().to_string()));
    }
    if let Some(encoded) = secret.data.get(key) {
        let compact: String = encoded.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| {
                SecretLookupError::BadValue(format!("`data.{key}` is not valid base64: {e}"))
            })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| SecretLookupError::BadValue(format!("`data.{key}` is not UTF-8 text")))?;
        return Ok(SecretValue::new(text.trim().to_string()));
    }
    let mut present: Vec<String> = secret
        .data
        .keys()
        .chain(secret.string_data.keys())
        .cloned()
        .collect();
    present.sort();
    present.dedup();
    Err(SecretLookupError::NoKey { present })
}

fn mounted_keys(dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(data: &[(&str, &str)], string_data: &[(&str, &str)]) -> SecretBody {
        SecretBody {
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            string_data: string_data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_base64_data_and_string_data() {
        let s = secret(&[("apiKey", "c2stYWJj")], &[]);
        assert_eq!(from_manifest(&s, "apiKey").unwrap().expose(), "sk-abc");
        let s = secret(&[("apiKey", "c2stYWJj")], &[("apiKey", "sk-plain")]);
        assert_eq!(from_manifest(&s, "apiKey").unwrap().expose(), "sk-plain");
    }

    #[test]
    fn missing_key_lists_present_keys() {
        let s = secret(&[], &[("key", "sk")]);
        assert_eq!(
            from_manifest(&s, "apiKey"),
            Err(SecretLookupError::NoKey {
                present: vec!["key".into()]
            })
        );
    }

    #[test]
    fn debug_hides_the_value() {
        assert_eq!(
            format!("{:?}", SecretValue::new("sk-secret".into())),
            "SecretValue(***)"
        );
    }
}
