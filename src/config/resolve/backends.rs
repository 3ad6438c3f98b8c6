//! AIServiceBackends and the Envoy Gateway Backends they point at: schema, endpoints,
//! TLS, header mutations and credential.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::super::body_edits;
use super::super::load::{Document, Resources};
use super::super::model::*;
use super::super::problem::{did_you_mean, Problem};
use super::super::resources;
use super::{full_name, what};
use crate::auth::{self, Credential};
use crate::schema::{self, BackendSchema};

pub(super) fn resolve_backends(
    res: &Resources,
    credentials: &BTreeMap<String, Arc<dyn Credential>>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Backend>> {
    let mut out = BTreeMap::new();
    for doc in &res.backends {
        let w = what("AIServiceBackend", doc);
        if doc.spec.backend_security_policy_ref.is_some() {
            problems.push(Problem::new(
                &doc.file,
                &w,
                "spec.backendSecurityPolicyRef",
                "is deprecated and not read: the policy names its backends".into(),
                "remove it and list this backend in the BackendSecurityPolicy's targetRefs".into(),
            ));
        }
        let schema = backend_schema(doc, &w, problems);
        let Some(eg) = envoy_backend(doc, res, &w, problems) else {
            continue;
        };
        let Some((endpoints, tls)) = backend_endpoints(eg, res, problems) else {
            continue;
        };
        let Some(schema) = schema else { continue };
        let name = full_name(&doc.meta.name, doc.namespace());
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
        let body_mutation = body_edits::from_resource(
            doc.spec.body_mutation.as_ref(),
            &doc.file,
            &w,
            "spec.bodyMutation",
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
                body_mutation,
            }),
        );
    }
    out
}

/// The backend's schema, or a problem naming the schemas there are.
fn backend_schema(
    doc: &Document<resources::AIServiceBackendSpec>,
    w: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn BackendSchema>> {
    let why = match schema::build(&doc.spec.schema) {
        Ok(schema) => return Some(schema),
        Err(why) => why,
    };
    let names = schema::REGISTRY.iter().map(|(n, _)| *n);
    let name = doc.spec.schema.name.as_str();
    let (field, fix) = if names.clone().any(|n| n == name) {
        ("spec.schema.version", why.clone())
    } else {
        let fix = did_you_mean(name, names.clone())
            .unwrap_or_else(|| format!("use one of {}", names.collect::<Vec<_>>().join(", ")));
        ("spec.schema.name", fix)
    };
    problems.push(Problem::new(&doc.file, w, field, why, fix));
    None
}

/// The Envoy Gateway `Backend` that `spec.backendRef` names.
fn envoy_backend<'r>(
    doc: &Document<resources::AIServiceBackendSpec>,
    res: &'r Resources,
    w: &str,
    problems: &mut Vec<Problem>,
) -> Option<&'r Document<resources::BackendSpec>> {
    let bref = &doc.spec.backend_ref;
    if let Some(kind) = bref.kind.as_deref().filter(|k| *k != "Backend") {
        problems.push(Problem::new(
            &doc.file,
            w,
            "spec.backendRef.kind",
            format!("kind `{kind}` is not supported standalone"),
            "point backendRef at an Envoy Gateway `Backend`".into(),
        ));
        return None;
    }
    let ns = bref.namespace.as_deref().unwrap_or(doc.namespace());
    let found = res
        .envoy_backends
        .iter()
        .find(|b| b.meta.name == bref.name && b.namespace() == ns);
    if found.is_none() {
        let names = res.envoy_backends.iter().map(|b| b.meta.name.as_str());
        let fix = did_you_mean(&bref.name, names).unwrap_or_else(|| {
            format!("define a Backend named `{}` with its endpoints", bref.name)
        });
        problems.push(Problem::new(
            &doc.file,
            w,
            "spec.backendRef.name",
            format!("Backend `{ns}/{}` does not exist", bref.name),
            fix,
        ));
    }
    found
}

/// Envoy Gateway `Backend` fields this gateway does not act on. Each is refused by name
/// when set: accepting one would quietly give the backend something else (another CA,
/// no client certificate, no fallback) than the operator asked for.
fn unsupported_backend_fields(spec: &resources::BackendSpec) -> Vec<&'static str> {
    let mut set = Vec::new();
    let mut when = |field: &'static str, is_set: bool| {
        if is_set {
            set.push(field);
        }
    };
    when(
        "spec.type",
        spec.backend_type
            .as_deref()
            .is_some_and(|t| t != "Endpoints"),
    );
    when("spec.appProtocols", spec.app_protocols.is_some());
    when("spec.fallback", spec.fallback == Some(true));
    for e in &spec.endpoints {
        when("spec.endpoints[].hostname", e.hostname.is_some());
        when("spec.endpoints[].zone", e.zone.is_some());
    }
    if let Some(tls) = &spec.tls {
        let system = |v: &Option<String>| v.as_deref().is_none_or(|v| v == "System");
        when(
            "spec.tls.wellKnownCACertificates",
            !system(&tls.well_known_ca_certificates),
        );
        when(
            "spec.tls.caCertificateRefs",
            tls.ca_certificate_refs.is_some(),
        );
        when(
            "spec.tls.clientCertificateRef",
            tls.client_certificate_ref.is_some(),
        );
        when(
            "spec.tls.autoSNIFromEndpointHostname",
            tls.auto_sni_from_endpoint_hostname == Some(true),
        );
        when("spec.tls.alpnProtocols", tls.alpn_protocols.is_some());
        when("spec.tls.ciphers", tls.ciphers.is_some());
        when("spec.tls.ecdhCurves", tls.ecdh_curves.is_some());
        when("spec.tls.fingerprints", tls.fingerprints.is_some());
        when("spec.tls.minVersion", tls.min_version.is_some());
        when("spec.tls.maxVersion", tls.max_version.is_some());
        when(
            "spec.tls.signatureAlgorithms",
            tls.signature_algorithms.is_some(),
        );
    }
    set.dedup();
    set
}

fn backend_endpoints(
    doc: &Document<resources::BackendSpec>,
    res: &Resources,
    problems: &mut Vec<Problem>,
) -> Option<(Vec<Endpoint>, Option<TlsSettings>)> {
    let w = what("Backend", doc);
    let unsupported = unsupported_backend_fields(&doc.spec);
    for field in &unsupported {
        problems.push(Problem::new(
            &doc.file,
            &w,
            field,
            "is not supported by llm-extproc".into(),
            "remove it: TLS verifies against the system's CAs with the SNI from `tls.sni` or the endpoint".into(),
        ));
    }
    if !unsupported.is_empty() {
        return None;
    }
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
