//! What is rendered, decided once from the resources and their resolved configuration:
//! which Gateway, which HTTPRoute rules and Backends, which Secrets the sidecar mounts.
//! Everything the Envoy Gateway resources cannot express is refused here, by name.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::checks::{
    check_hostnames, check_http_route_limits, check_options, check_precedence,
    check_rate_limit_service, check_rendered_names, check_route_fields, gateway_name,
    is_section_name,
};
use super::error::{unsupported, RenderError};
use super::names;
use super::secrets::{secret_names, secret_uses};
use super::RenderOptions;
use crate::config::load::{Document, Resources};
use crate::config::resources::HeaderMatchType;
use crate::config::{GatewayConfig, BACKEND_BINDING_HEADER};
use crate::envoy::resources::{has_alternative_host, priority_levels};

pub struct Plan<'a> {
    pub options: &'a RenderOptions,
    pub gateway: String,
    pub namespace: String,
    pub routes: Vec<RoutePlan>,
    /// The provider Backends, by (namespace, name).
    pub backends: BTreeMap<(String, String), BackendPlan>,
    /// The Secrets the sidecar mounts under `--secrets-dir`.
    pub secrets: BTreeSet<String>,
    /// Models the unknown-model answer lists.
    pub known_models: Vec<String>,
}

pub struct RoutePlan {
    pub namespace: String,
    pub name: String,
    pub hostnames: Option<Value>,
    pub rules: Vec<RulePlan>,
}

pub struct RulePlan {
    /// The HTTPRoute rule's name (a BackendTrafficPolicy's `sectionName`).
    pub name: String,
    /// Envoy Gateway's cluster for the rule.
    pub cluster: String,
    /// Gateway API header matches, one list per alternative.
    pub matches: Vec<Vec<Value>>,
    pub refs: Vec<RefPlan>,
    /// The router level builds the provider request: no upstream filter, and the
    /// route requires the binding header naming this backend.
    pub binding_backend: Option<String>,
    pub request_timeout: Duration,
    pub backend_request_timeout: Option<Duration>,
    pub num_retries: usize,
    /// A 429 moves on to another host (there is one).
    pub retry_429: bool,
    /// Every endpoint is an FQDN (a STRICT_DNS cluster with an inline load_assignment);
    /// else every endpoint is an IP (EDS: a ClusterLoadAssignment).
    pub fqdn: bool,
    /// Every backend is reached over TLS: Envoy Gateway then emits HttpProtocolOptions
    /// (`auto_config`) on the cluster.
    pub all_tls: bool,
}

pub struct RefPlan {
    /// The rendered Backend this reference points at.
    pub backend: String,
    /// At the rule's second priority: the Backend's `fallback: true` copy.
    pub fallback: bool,
    pub weight: u32,
    /// `per_route_rule_backend_name`: the sidecar's key of the reference.
    pub ref_key: String,
    /// `name.namespace` of the AIServiceBackend.
    pub ai_backend: String,
    pub tls: bool,
}

pub struct BackendPlan {
    pub name: String,
    /// The Backend it is rendered from (`name` is `<source>-fallback` for a fallback copy).
    pub source: String,
    pub namespace: String,
    /// `fqdn` / `ip` endpoints as the Backend CRD writes them.
    pub endpoints: Vec<Value>,
    pub tls: Option<crate::config::TlsSettings>,
    pub fallback: bool,
}

impl<'a> Plan<'a> {
    pub fn build(
        res: &Resources,
        config: &GatewayConfig,
        options: &'a RenderOptions,
    ) -> Result<Plan<'a>, RenderError> {
        check_options(options)?;
        check_rate_limit_service(options, config)?;
        let gateway = gateway_name(res, options)?;
        let mut plan = Plan {
            options,
            gateway,
            namespace: options.gateway_namespace.clone(),
            routes: Vec::new(),
            backends: BTreeMap::new(),
            secrets: secret_names(&secret_uses(res))?,
            known_models: config.models.keys().cloned().collect(),
        };
        let eg_backends = eg_backend_of(res);
        // Which Backends serve as a primary, and which as a fallback (Envoy Gateway's
        // `fallback` is the Backend's, not the reference's).
        let mut uses: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
        let mut pending = Vec::new();
        for (doc, route) in res.routes.iter().zip(&config.routes) {
            let what = format!("AIGatewayRoute {}/{}", doc.namespace(), doc.meta.name);
            check_route_fields(doc, &what)?;
            let mut rules = Vec::new();
            let mut names = BTreeSet::from([super::httproute::UNKNOWN_MODEL_RULE.to_string()]);
            for (i, (raw, rule)) in doc.spec.rules.iter().zip(&route.rules).enumerate() {
                if raw.stream_idle_timeout.is_some() {
                    return Err(unsupported(what, &format!("spec.rules[{i}].streamIdleTimeout"),
                        "has no Envoy Gateway equivalent (a BackendTrafficPolicy has no per-try idle timeout)".into(),
                        "remove it; `timeouts.backendRequest` bounds each attempt"));
                }
                let levels = priority_levels(rule);
                if levels.len() > 2 {
                    return Err(unsupported(what, &format!("spec.rules[{i}].backendRefs"),
                        format!("uses {} priorities; Envoy Gateway expresses two (primary, and Backends with `fallback: true`)", levels.len()),
                        "use priority 0 for primaries and one higher priority for fallbacks"));
                }
                let name = raw.name.clone().unwrap_or_else(|| format!("rule-{i}"));
                if !is_section_name(&name) {
                    return Err(unsupported(
                        what,
                        &format!("spec.rules[{i}].name"),
                        format!("`{name}` is not a Gateway API section name, which the HTTPRoute rule (and its BackendTrafficPolicy's sectionName) needs"),
                        "use lower-case letters, digits, `-` and `.`, at most 253",
                    ));
                }
                if !names.insert(name.clone()) {
                    return Err(unsupported(
                        what,
                        &format!("spec.rules[{i}].name"),
                        format!("`{name}` names two rules"),
                        "give each rule a unique name",
                    ));
                }
                let cluster = names::route_cluster(doc.namespace(), &doc.meta.name, i);
                let mut refs = Vec::new();
                for r in &rule.backend_refs {
                    let Some((ns, eg_name)) = eg_backends.get(&r.backend.name) else {
                        return Err(RenderError::Config(format!(
                            "AIServiceBackend {} has no Backend",
                            r.backend.name
                        )));
                    };
                    if *ns != doc.namespace() {
                        return Err(unsupported(what, &format!("spec.rules[{i}].backendRefs"),
                            format!("AIServiceBackend `{}` points at a Backend in namespace `{ns}`; an HTTPRoute reaches another namespace only with a ReferenceGrant, which is not rendered", r.backend.name),
                            "keep the AIServiceBackend and its Backend in the route's namespace"));
                    }
                    let fallback = levels.first().is_some_and(|p| r.priority > *p);
                    let entry = uses.entry((ns.clone(), eg_name.clone())).or_default();
                    if fallback {
                        entry.1 = true;
                    } else {
                        entry.0 = true;
                    }
                    pending.push((r.backend.clone(), ns.clone(), eg_name.clone()));
                    // Named after the Backend for now; see `name_fallback_copies`.
                    refs.push(RefPlan {
                        backend: eg_name.clone(),
                        fallback,
                        weight: r.weight,
                        ref_key: r.ref_key.clone(),
                        ai_backend: r.backend.name.clone(),
                        tls: r.backend.tls.is_some(),
                    });
                }
                let fqdn: Vec<bool> = rule
                    .backend_refs
                    .iter()
                    .flat_map(|r| r.backend.endpoints.iter())
                    .map(|e| e.host.parse::<std::net::IpAddr>().is_err())
                    .collect();
                if fqdn.iter().any(|f| *f) && fqdn.iter().any(|f| !*f) {
                    // Envoy Gateway splits such a rule into one cluster per backend
                    // (`HasMixedEndpoints`, internal/ir/xds.go): no failover between them.
                    return Err(unsupported(what, &format!("spec.rules[{i}].backendRefs"),
                        "mixes hostname (fqdn) and IP endpoints; Envoy Gateway would give each its own cluster, and priorities would not fail over".into(),
                        "use hostnames for all of the rule's Backends, or IPs for all"));
                }
                let backend_request_timeout = rule.backend_request_timeout;
                let binding_backend = rule
                    .router_resolved
                    .then(|| rule.backend_refs.first().map(|r| r.backend.name.clone()))
                    .flatten();
                let matches = header_matches(raw, binding_backend.as_deref());
                rules.push(RulePlan {
                    name,
                    cluster,
                    matches,
                    refs,
                    binding_backend,
                    request_timeout: rule.request_timeout,
                    backend_request_timeout,
                    num_retries: levels.len().max(2) - 1,
                    retry_429: has_alternative_host(rule),
                    fqdn: fqdn.first().copied().unwrap_or(true),
                    all_tls: rule.backend_refs.iter().all(|r| r.backend.tls.is_some()),
                });
            }
            check_http_route_limits(&rules, &what)?;
            plan.routes.push(RoutePlan {
                namespace: doc.namespace().to_string(),
                name: doc.meta.name.clone(),
                hostnames: doc.spec.hostnames.clone(),
                rules,
            });
        }
        // Only now are all uses of each Backend known.
        for route in &mut plan.routes {
            for r in route.rules.iter_mut().flat_map(|rule| rule.refs.iter_mut()) {
                r.backend = rendered_name(&uses, &route.namespace, &r.backend, r.fallback);
            }
        }
        check_hostnames(&plan.routes)?;
        check_precedence(&plan.routes)?;
        for (backend, ns, eg_name) in pending {
            let (primary, fallback) = uses[&(ns.clone(), eg_name.clone())];
            let doc = res
                .envoy_backends
                .iter()
                .find(|d| d.namespace() == ns && d.meta.name == eg_name);
            let endpoints = doc.map(backend_endpoints).unwrap_or_default();
            for (is_fallback, used) in [(false, primary), (true, fallback)] {
                if !used {
                    continue;
                }
                let name = rendered_name(&uses, &ns, &eg_name, is_fallback);
                if name != eg_name
                    && res
                        .envoy_backends
                        .iter()
                        .any(|d| d.namespace() == ns && d.meta.name == name)
                {
                    return Err(unsupported(format!("Backend {ns}/{eg_name}"), "metadata.name",
                        format!("serves as a primary and as a fallback, which needs a second Backend `{name}`, and that name is taken"),
                        "rename the Backend"));
                }
                plan.backends
                    .entry((ns.clone(), name.clone()))
                    .or_insert(BackendPlan {
                        name,
                        source: eg_name.clone(),
                        namespace: ns.clone(),
                        endpoints: endpoints.clone(),
                        tls: backend.tls.clone(),
                        fallback: is_fallback,
                    });
            }
        }
        let rendered: Vec<(&str, &str, &str)> = plan
            .backends
            .values()
            .map(|b| (b.namespace.as_str(), b.source.as_str(), b.name.as_str()))
            .collect();
        check_rendered_names(&plan.routes, &rendered)?;
        Ok(plan)
    }

    /// The Backend of the sidecar's unix socket.
    pub fn sidecar_backend(&self) -> String {
        format!("{}-llm-extproc", self.gateway)
    }

    /// The EnvoyExtensionPolicy (and the prefix of the other policies' names).
    pub fn extension_policy(&self) -> String {
        format!("{}-llm-extproc", self.gateway)
    }

    pub fn envoy_proxy(&self) -> String {
        format!("{}-llm-extproc", self.gateway)
    }

    /// The Gateway listener's name.
    pub fn listener(&self) -> &'static str {
        "http"
    }

    /// Namespaces of the HTTPRoutes, which the Gateway's listener admits.
    pub fn route_namespaces(&self) -> BTreeSet<String> {
        self.routes.iter().map(|r| r.namespace.clone()).collect()
    }

    /// Room above the sidecar's body limit, so that the sidecar's JSON 413 (naming the
    /// limit) decides, not Envoy's buffer (as in `run`).
    pub fn buffer_limit(&self) -> u64 {
        self.options
            .max_body_bytes
            .saturating_add(1 << 20)
            .min(u32::MAX as u64)
    }
}

/// A Backend's endpoints as the CRD writes them (resolving refused any other kind).
fn backend_endpoints(doc: &Document<crate::config::resources::BackendSpec>) -> Vec<Value> {
    doc.spec
        .endpoints
        .iter()
        .filter_map(|e| match (&e.fqdn, &e.ip) {
            (Some(f), _) => Some(json!({"fqdn": {"hostname": f.hostname, "port": f.port}})),
            (None, Some(ip)) => Some(json!({"ip": {"address": ip.address, "port": ip.port}})),
            (None, None) => None,
        })
        .collect()
}

/// The Backend a reference renders to: a Backend used both as a primary and as a
/// fallback is rendered twice, the fallback copy named `<name>-fallback`.
fn rendered_name(
    uses: &BTreeMap<(String, String), (bool, bool)>,
    ns: &str,
    name: &str,
    fallback: bool,
) -> String {
    let both = uses
        .get(&(ns.to_string(), name.to_string()))
        .is_some_and(|(p, f)| *p && *f);
    if fallback && both {
        format!("{name}-fallback")
    } else {
        name.to_string()
    }
}

/// The rule's header matches as Gateway API writes them; a router-resolved rule also
/// requires the binding header the sidecar sets (as the standalone routes do).
fn header_matches(
    rule: &crate::config::resources::RouteRule,
    binding_backend: Option<&str>,
) -> Vec<Vec<Value>> {
    let mut matches: Vec<Vec<Value>> = rule
        .matches
        .iter()
        .map(|m| {
            m.headers
                .iter()
                .map(|h| {
                    let kind = match h.match_type {
                        HeaderMatchType::Exact => "Exact",
                        HeaderMatchType::RegularExpression => "RegularExpression",
                    };
                    json!({"name": h.name.to_ascii_lowercase(), "type": kind, "value": h.value})
                })
                .collect()
        })
        .collect();
    if matches.is_empty() {
        matches.push(Vec::new());
    }
    if let Some(backend) = binding_backend {
        for m in &mut matches {
            m.push(json!({"name": BACKEND_BINDING_HEADER, "type": "Exact", "value": backend}));
        }
    }
    matches
}

/// (namespace, Backend name) of each AIServiceBackend, by its `name.namespace`.
fn eg_backend_of(res: &Resources) -> BTreeMap<String, (String, String)> {
    res.backends
        .iter()
        .map(|doc| {
            let ns = doc
                .spec
                .backend_ref
                .namespace
                .clone()
                .unwrap_or_else(|| doc.namespace().to_string());
            (
                format!("{}.{}", doc.meta.name, doc.namespace()),
                (ns, doc.spec.backend_ref.name.clone()),
            )
        })
        .collect()
}

/// A Gateway API duration (`60s`, `1500ms`).
pub fn gateway_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
