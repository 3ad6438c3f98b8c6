//! AIServiceBackends and the Envoy Gateway Backends they point at: schema, endpoints,
//! TLS, header mutations and credential.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::super::load::{Document, Resources};
use super::super::model::*;
use super::super::problem::{did_you_mean, Problem};
use super::super::resources;
use super::{full_name, what};
use crate::auth::{self, Credential};
use crate::schema;

pub(super) fn resolve_backends(
    res: &Resources,
    credentials: &BTreeMap<String, Arc<dyn Credential>>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Backend>> {
    let schema_names: Vec<&str> = schema::REGISTRY.iter().map(|(n, _)| *n).collect();
    let eg_names: Vec<&str> = res
        .envoy_backends
        .iter()
        .map(|b| b.meta.name.as_str())
        .collect();
    let mut out = BTreeMap::new();
    for doc in &res.backends {
        let w = what("AIServiceBackend", doc);
        let ns = doc.namespace();
        let schema = match schema::build(&doc.spec.schema) {
            Ok(s) => Some(s),
            Err(why) => {
                let fix = if schema_names.contains(&doc.spec.schema.name.as_str()) {
                    why.clone()
                } else {
                    did_you_mean(&doc.spec.schema.name, schema_names.iter().copied())
                        .unwrap_or_else(|| format!("use one of {}", schema_names.join(", ")))
                };
                let field = if schema_names.contains(&doc.spec.schema.name.as_str()) {
                    "spec.schema.version"
                } else {
                    "spec.schema.name"
                };
                problems.push(Problem::new(&doc.file, &w, field, why, fix));
                None
            }
        };
        let bref = &doc.spec.backend_ref;
        if let Some(kind) = bref.kind.as_deref().filter(|k| *k != "Backend") {
            problems.push(Problem::new(
                &doc.file,
                &w,
                "spec.backendRef.kind",
                format!("kind `{kind}` is not supported standalone"),
                "point backendRef at an Envoy Gateway `Backend`".into(),
            ));
            continue;
        }
        let bns = bref.namespace.as_deref().unwrap_or(ns);
        let Some(eg) = res
            .envoy_backends
            .iter()
            .find(|b| b.meta.name == bref.name && b.namespace() == bns)
        else {
            let fix = did_you_mean(&bref.name, eg_names.iter().copied()).unwrap_or_else(|| {
                format!("define a Backend named `{}` with its endpoints", bref.name)
            });
            problems.push(Problem::new(
                &doc.file,
                &w,
                "spec.backendRef.name",
                format!("Backend `{bns}/{}` does not exist", bref.name),
                fix,
            ));
            continue;
        };
        let Some((endpoints, tls)) = backend_endpoints(eg, res, problems) else {
            continue;
        };
        let Some(schema) = schema else { continue };
        let name = full_name(&doc.meta.name, ns);
        let credential = credentials
            .get(&name)
            .cloned()
            .unwrap_or_else(|| Arc::new(auth::NoCredential));
        let header_mutation = header_edits(
            doc.spec.header_mutation.as_ref(),
            &doc.file,
            &w,
            "spec.headerMutation",
            problems,
        );
        out.insert(
            name.clone(),
            Arc::new(Backend {
                name,
                schema,
                endpoints,
                tls,
                credential,
                header_mutation,
            }),
        );
    }
    out
}

fn backend_endpoints(
    doc: &Document<resources::BackendSpec>,
    res: &Resources,
    problems: &mut Vec<Problem>,
) -> Option<(Vec<Endpoint>, Option<TlsSettings>)> {
    let w = what("Backend", doc);
    let mut endpoints = Vec::new();
    for (i, e) in doc.spec.endpoints.iter().enumerate() {
        let endpoint = match (&e.fqdn, &e.ip) {
            (Some(f), None) => Endpoint {
                host: f.hostname.clone(),
                port: f.port,
            },
            (None, Some(ip)) => Endpoint {
                host: ip.address.clone(),
                port: ip.port,
            },
            _ => {
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("spec.endpoints[{i}]"),
                    "needs exactly one of `fqdn` or `ip`".into(),
                    "write `fqdn: {hostname, port}` or `ip: {address, port}`".into(),
                ));
                return None;
            }
        };
        if endpoint.host.is_empty()
            || !endpoint
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_[]".contains(&b))
        {
            problems.push(Problem::new(
                &doc.file,
                &w,
                &format!("spec.endpoints[{i}]"),
                format!("`{}` is not a host name or IP address", endpoint.host),
                "fix the hostname".into(),
            ));
            return None;
        }
        endpoints.push(endpoint);
    }
    let Some(first) = endpoints.first() else {
        problems.push(Problem::new(
            &doc.file,
            &w,
            "spec.endpoints",
            "is empty".into(),
            "add an `fqdn` or `ip` endpoint".into(),
        ));
        return None;
    };
    // TLS when the Backend says so, when a BackendTLSPolicy targets it, or on port 443.
    let policy_sni = res
        .tls_policies
        .iter()
        .find(|(ns, name, _)| ns == doc.namespace() && *name == doc.meta.name)
        .map(|(_, _, host)| host.clone());
    let tls = match (&doc.spec.tls, policy_sni) {
        (Some(t), _) => Some(TlsSettings {
            sni: t.sni.clone().unwrap_or_else(|| first.host.clone()),
            insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
        }),
        (None, Some(host)) => Some(TlsSettings {
            sni: host.unwrap_or_else(|| first.host.clone()),
            insecure_skip_verify: false,
        }),
        (None, None) if first.port == 443 => Some(TlsSettings {
            sni: first.host.clone(),
            insecure_skip_verify: false,
        }),
        (None, None) => None,
    };
    Some((endpoints, tls))
}

/// `headerMutation`, checked: names must be HTTP tokens and values free of line breaks,
/// since they become request headers.
pub(super) fn header_edits(
    m: Option<&resources::HeaderMutation>,
    file: &Path,
    what: &str,
    field: &str,
    problems: &mut Vec<Problem>,
) -> HeaderEdits {
    let Some(m) = m else {
        return HeaderEdits::default();
    };
    let token = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    for (i, h) in m.set.iter().enumerate() {
        if !token(&h.name) || h.value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            problems.push(Problem::new(
                file,
                what,
                &format!("{field}.set[{i}]"),
                format!(
                    "`{}` is not a valid header name and value",
                    h.name.escape_default()
                ),
                "use a plain header name (no `:` pseudo-headers) and a value without line breaks"
                    .into(),
            ));
        }
    }
    for (i, name) in m.remove.iter().enumerate() {
        if !token(name) {
            problems.push(Problem::new(
                file,
                what,
                &format!("{field}.remove[{i}]"),
                format!("`{}` is not a valid header name", name.escape_default()),
                "use a plain header name".into(),
            ));
        }
    }
    HeaderEdits {
        set: m
            .set
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}
