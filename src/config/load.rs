//! Reading resource documents from files and directories.
//!
//! `--config` takes files or directories; every `*.yaml`, `*.yml` or `*.json` file in a
//! directory is read (not recursively), and each file may hold several `---` documents.
//! Each document is checked against its kind's serde type with the field path kept, so an
//! error names the file, the resource and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::problem::Problem;
use super::resources::*;

/// One parsed resource document.
#[derive(Debug, Clone)]
pub struct Document<T> {
    pub meta: ObjectMeta,
    pub spec: T,
    pub file: PathBuf,
}

impl<T> Document<T> {
    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("default")
    }
}

/// Everything the config files hold, by kind.
#[derive(Debug, Default, Clone)]
pub struct Resources {
    pub routes: Vec<Document<AIGatewayRouteSpec>>,
    pub backends: Vec<Document<AIServiceBackendSpec>>,
    pub policies: Vec<Document<BackendSecurityPolicySpec>>,
    pub envoy_backends: Vec<Document<BackendSpec>>,
    pub secrets: Vec<Document<SecretBody>>,
    /// `BackendTLSPolicy` targets: (namespace, Backend name, SNI hostname).
    pub tls_policies: Vec<(String, String, Option<String>)>,
    pub quota_policies: Vec<Document<QuotaPolicySpec>>,
    /// What was read but is not enforced here (Kubernetes-only kinds), to be named by
    /// `check`, `serve` and `run`.
    pub not_enforced: Vec<Problem>,
}

/// Kinds that belong to a Kubernetes install and mean nothing standalone.
const IGNORED_KINDS: &[&str] = &[
    "Gateway",
    "GatewayClass",
    "HTTPRoute",
    "GRPCRoute",
    "EnvoyProxy",
    "BackendTrafficPolicy",
    "ClientTrafficPolicy",
    "EnvoyExtensionPolicy",
    "EnvoyPatchPolicy",
    "SecurityPolicy",
    "ReferenceGrant",
    "Namespace",
    "ConfigMap",
    "ServiceAccount",
    "Service",
    "Deployment",
    "MCPRoute",
];

const KNOWN_KINDS: &[&str] = &[
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "Backend",
    "Secret",
    "BackendTLSPolicy",
    "QuotaPolicy",
];

/// The list of files named by `--config` arguments, in a stable order.
pub fn config_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Vec<Problem>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file() && is_config_file(p))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => problems.push(Problem::file(path, format!("cannot read directory: {e}"))),
            }
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            problems.push(Problem::file(path, "no such file or directory".to_string()));
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

pub fn is_config_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Reads and parses every document of the given files (see [`config_files`]).
pub fn load_files(files: &[PathBuf]) -> Result<Resources, Vec<Problem>> {
    let mut resources = Resources::default();
    let mut problems = Vec::new();
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => parse_text(&text, file, &mut resources, &mut problems),
            Err(e) => problems.push(Problem::file(file, format!("cannot read: {e}"))),
        }
    }
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(problems)
    }
}

/// Parses one file's text (one or more YAML documents) into `resources`.
pub fn parse_text(text: &str, file: &Path, resources: &mut Resources, problems: &mut Vec<Problem>) {
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                problems.push(Problem::file(
                    file,
                    format!("document {}: invalid YAML: {e}", index + 1),
                ));
                // A syntax error stops the YAML stream; later documents cannot be trusted.
                return;
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        add_document(value, file, resources, problems);
    }
}

fn add_document(value: Value, file: &Path, resources: &mut Resources, problems: &mut Vec<Problem>) {
    let Value::Object(mut object) = value else {
        problems.push(Problem::file(
            file,
            "a document must be a mapping with `kind`".into(),
        ));
        return;
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let meta: ObjectMeta = object
        .remove("metadata")
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default();
    let what = format!("{kind} {}", display_name(&meta));
    if kind.is_empty() {
        problems.push(Problem::file(file, "a document has no `kind`".into()));
        return;
    }
    if !KNOWN_KINDS.contains(&kind.as_str()) {
        if IGNORED_KINDS.contains(&kind.as_str()) {
            resources.not_enforced.push(Problem::new(
                file,
                &what,
                "kind",
                format!("`{kind}` is read but not enforced: it belongs to a Kubernetes install"),
                "apply it to the cluster's controllers, or remove it here".into(),
            ));
        } else {
            let hint = super::problem::did_you_mean(&kind, KNOWN_KINDS.iter().copied());
            problems.push(Problem::new(
                file,
                &what,
                "kind",
                format!("unknown kind `{kind}`"),
                hint.unwrap_or_else(|| format!("use one of {}", KNOWN_KINDS.join(", "))),
            ));
        }
        return;
    }
    if meta.name.is_empty() {
        problems.push(Problem::new(
            file,
            &what,
            "metadata.name",
            "missing".into(),
            "give the resource a name".into(),
        ));
        return;
    }
    let doc = Incoming {
        meta,
        file,
        what: &what,
    };
    match kind.as_str() {
        "Secret" => add_secret(object, doc, resources, problems),
        "BackendTLSPolicy" => add_tls_policy(object, doc, resources),
        _ => add_spec_document(&kind, object, doc, resources, problems),
    }
}

/// A document being added: its metadata, file and name for messages.
struct Incoming<'a> {
    meta: ObjectMeta,
    file: &'a Path,
    what: &'a str,
}

fn add_secret(
    mut object: Map<String, Value>,
    doc: Incoming,
    resources: &mut Resources,
    problems: &mut Vec<Problem>,
) {
    // A Secret keeps its payload at the top level, next to apiVersion and kind.
    object.remove("apiVersion");
    object.remove("kind");
    if let Some(spec) = typed::<SecretBody>(Value::Object(object), doc.file, doc.what, "", problems)
    {
        resources.secrets.push(Document {
            meta: doc.meta,
            spec,
            file: doc.file.to_path_buf(),
        });
    }
}

/// A Gateway API BackendTLSPolicy: only the hostname it validates, per target, is read.
fn add_tls_policy(mut object: Map<String, Value>, doc: Incoming, resources: &mut Resources) {
    let spec = object.remove("spec").unwrap_or(Value::Null);
    let namespace = doc
        .meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let hostname = spec
        .pointer("/validation/hostname")
        .and_then(Value::as_str)
        .map(str::to_string);
    let targets = spec.get("targetRefs").and_then(Value::as_array);
    for target in targets.into_iter().flatten() {
        if let Some(name) = target.get("name").and_then(Value::as_str) {
            resources
                .tls_policies
                .push((namespace.clone(), name.to_string(), hostname.clone()));
        }
    }
}

/// A resource with a `spec`: AIGatewayRoute, AIServiceBackend, BackendSecurityPolicy or
/// Envoy Gateway's Backend.
fn add_spec_document(
    kind: &str,
    mut object: Map<String, Value>,
    doc: Incoming,
    resources: &mut Resources,
    problems: &mut Vec<Problem>,
) {
    let spec = object.remove("spec").unwrap_or(Value::Null);
    if spec.is_null() {
        let fix = "add a `spec`".into();
        problems.push(Problem::new(
            doc.file,
            doc.what,
            "spec",
            "missing".into(),
            fix,
        ));
        return;
    }
    let (meta, file, what) = (doc.meta, doc.file.to_path_buf(), doc.what);
    match kind {
        "AIGatewayRoute" => push(&mut resources.routes, spec, meta, file, what, problems),
        "AIServiceBackend" => push(&mut resources.backends, spec, meta, file, what, problems),
        "BackendSecurityPolicy" => push(&mut resources.policies, spec, meta, file, what, problems),
        "QuotaPolicy" => push(
            &mut resources.quota_policies,
            spec,
            meta,
            file,
            what,
            problems,
        ),
        _ => push(
            &mut resources.envoy_backends,
            spec,
            meta,
            file,
            what,
            problems,
        ),
    }
}

fn push<T: DeserializeOwned>(
    into: &mut Vec<Document<T>>,
    spec: Value,
    meta: ObjectMeta,
    file: PathBuf,
    what: &str,
    problems: &mut Vec<Problem>,
) {
    if let Some(spec) = typed::<T>(spec, &file, what, "spec.", problems) {
        into.push(Document { meta, spec, file });
    }
}

/// Deserializes `value` into `T`, turning a serde error into a problem that names the field.
fn typed<T: DeserializeOwned>(
    value: Value,
    file: &Path,
    what: &str,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(err) => {
            let path = err.path().to_string();
            let mut inner = err.into_inner().to_string();
            if what.starts_with("Secret ") && !inner.starts_with("unknown field") {
                // serde quotes the offending value, and in a Secret that is a credential.
                inner = "each value must be a string (quote numbers and booleans)".to_string();
            }
            problems.push(super::problem::from_serde(
                file, what, prefix, &path, &inner,
            ));
            None
        }
    }
}

fn display_name(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name),
        None => meta.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Resources, Vec<Problem>) {
        let mut res = Resources::default();
        let mut problems = Vec::new();
        parse_text(yaml, Path::new("t.yaml"), &mut res, &mut problems);
        (res, problems)
    }

    #[test]
    fn both_api_versions_and_kubernetes_only_kinds() {
        let (res, problems) = parse(
            "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend\nmetadata: {name: a}\n\
             spec: {schema: {name: OpenAI}, backendRef: {name: a, kind: Backend, group: gateway.envoyproxy.io}}\n---\n\
             apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b, namespace: ns}\n\
             spec: {schema: {name: AzureOpenAI, version: v}, backendRef: {name: b}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {anything: [1]}\n---\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(res.backends.len(), 2);
        assert_eq!(res.backends[1].namespace(), "ns");
    }

    #[test]
    fn secret_data_and_string_data() {
        let (res, problems) = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\ndata: {apiKey: c2s=}\nstringData: {other: x}\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(res.secrets[0].spec.data["apiKey"], "c2s=");
    }

    #[test]
    fn a_bad_secret_value_is_not_echoed() {
        let (_, problems) = parse("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {apiKey: 123456789012345}\n");
        assert_eq!(problems.len(), 1);
        assert!(
            !problems[0].to_string().contains("123456789012345"),
            "{}",
            problems[0]
        );
        assert!(problems[0].field.contains("apiKey"));
    }

    #[test]
    fn a_yaml_syntax_error_names_its_document_and_line() {
        let (_, problems) = parse(
            "kind: Secret\nmetadata: {name: s}\n---\nkind: Secret\nmetadata: {name: x\nspec: [\n",
        );
        assert_eq!(problems.len(), 1);
        let text = problems[0].to_string();
        // The line is the file's, not the document's.
        assert!(
            text.contains("document 2") && text.contains("line 6"),
            "{text}"
        );
    }

    #[test]
    fn unknown_kind_gets_a_suggestion() {
        let (_, problems) =
            parse("apiVersion: x/v1\nkind: AIGatewayRoutes\nmetadata: {name: r}\nspec: {}\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].fix, "did you mean `AIGatewayRoute`?");
    }
}
