//! The validated runtime configuration that the data path reads.
//!
//! It is built once per (re)load from the resource documents and shared behind an
//! `ArcSwap`: a request keeps the snapshot it started with until it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Credential;
use crate::schema::BackendSchema;

/// Where the routing header comes from; also the header Envoy routes on.
pub const MODEL_HEADER: &str = "x-ai-eg-model";

/// Set by the router level when it built the provider request itself, naming the backend
/// whose credential it used. The route of a router-resolved rule requires it to match the
/// rule's backend, so Envoy never sends one backend's credential to another backend's host,
/// even while a reload reaches the sidecar and Envoy at different moments. Envoy removes
/// it before the request leaves.
pub const BACKEND_BINDING_HEADER: &str = "x-llm-extproc-backend";
/// Set by the router level on requests whose answer is streamed, for Envoy to pick the
/// route that gives streams their timeouts; removed before the request leaves Envoy.
pub const STREAM_ROUTE_HEADER: &str = "x-llm-extproc-stream";

/// The metric label value for what no bounded label names.
pub const OTHER_LABEL: &str = "other";

#[derive(Debug, Default)]
pub struct GatewayConfig {
    pub routes: Vec<Route>,
    /// By full name `name.namespace` (the form Envoy AI Gateway's CEL costs use).
    pub backends: BTreeMap<String, Arc<Backend>>,
    /// By the endpoint metadata value `per_route_rule_backend_name`.
    pub backend_refs: BTreeMap<String, BackendRefTarget>,
    /// Exact `x-ai-eg-model` values of every rule, for unknown-model answers and `/v1/models`.
    pub models: BTreeMap<String, ModelInfo>,
    /// True when some rule can match a request whatever its model (a regular expression,
    /// or no model condition): then only Envoy knows whether a model is routable, and the
    /// sidecar leaves unknown models to Envoy's catch-all.
    pub routes_any_model: bool,
    /// Models whose rule is `router_resolved`, with that rule's backend reference key.
    pub router_targets: BTreeMap<String, String>,
    /// The QuotaPolicies' buckets.
    pub quotas: Arc<crate::quota::Quotas>,
    /// What the configuration holds that the gateway reads but does not enforce: `check`
    /// lists it and `serve` and `run` log it at start.
    pub not_enforced: Vec<super::Problem>,
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub owned_by: String,
    pub created: i64,
    /// The `hostnames` of the routes that serve the model; None when one of them
    /// serves every host.
    pub hosts: Option<Vec<String>>,
}

impl ModelInfo {
    /// Whether a request with this `authority` reaches the model.
    pub fn served_at(&self, authority: &str) -> bool {
        self.hosts.as_ref().is_none_or(|hosts| {
            hosts
                .iter()
                .any(|h| super::hostnames::matches(h, authority))
        })
    }
}

#[derive(Debug)]
pub struct Route {
    /// `namespace/name`.
    pub name: String,
    pub rules: Vec<Rule>,
    pub costs: Vec<RequestCost>,
}

#[derive(Debug)]
pub struct Rule {
    /// The Envoy cluster that serves this rule.
    pub cluster: String,
    /// Alternatives (OR) of header conditions (AND).
    pub matches: Vec<Vec<HeaderCondition>>,
    pub backend_refs: Vec<RuleBackendRef>,
    /// `timeouts.request`, or the 60 s default for unary answers.
    pub request_timeout: Duration,
    /// Whether `timeouts.request` was written: then it bounds streamed answers too, as
    /// the CRD says; else a stream has no overall deadline, only idle bounds.
    pub request_timeout_set: bool,
    pub backend_request_timeout: Option<Duration>,
    /// `streamIdleTimeout`: the longest silence of the provider within one attempt.
    pub stream_idle_timeout: Option<Duration>,
    /// The model alone decides that this rule serves a request, and the rule has one
    /// backend: the router level builds the provider request and the cluster needs no
    /// upstream-level filter. See [`GatewayConfig::router_targets`].
    pub router_resolved: bool,
}

#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub name: String,
    pub value: String,
    pub regex: bool,
}

#[derive(Debug, Clone)]
pub struct RuleBackendRef {
    /// The value Envoy hands back in the endpoint metadata for this reference.
    pub ref_key: String,
    pub backend: Arc<Backend>,
    pub priority: u32,
    pub weight: u32,
}

/// What an upstream attempt needs to know about the reference it is serving.
#[derive(Debug, Clone)]
pub struct BackendRefTarget {
    pub backend: Arc<Backend>,
    pub model_name_override: Option<String>,
    pub route: String,
    /// The index of the rule in `route` that lists this reference.
    pub rule_index: usize,
    pub header_mutation: HeaderEdits,
    /// The backend's `bodyMutation` with the reference's over it.
    pub body_mutation: BodyEdits,
}

#[derive(Debug)]
pub struct Backend {
    /// `name.namespace`.
    pub name: String,
    pub schema: Arc<dyn BackendSchema>,
    pub endpoints: Vec<Endpoint>,
    /// Some when the backend is reached over TLS, with the SNI to send.
    pub tls: Option<TlsSettings>,
    pub credential: Arc<dyn Credential>,
    pub header_mutation: HeaderEdits,
    pub body_mutation: BodyEdits,
}

impl Backend {
    /// The host (and port, when not the scheme default) to send as `:authority`.
    pub fn authority(&self) -> String {
        match self.endpoints.first() {
            Some(e)
                if (self.tls.is_some() && e.port == 443)
                    || (self.tls.is_none() && e.port == 80) =>
            {
                e.host.clone()
            }
            Some(e) => format!("{}:{}", e.host, e.port),
            None => String::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub sni: String,
    pub insecure_skip_verify: bool,
}

/// Header edits from `headerMutation` on a backend or a backend reference.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub remove: BTreeSet<String>,
}

impl HeaderEdits {
    /// These edits (a backend's) with `own` (a backendRef's) over them: where both name a
    /// header (names are lower-cased), the reference's set or remove wins.
    pub fn overridden_by(&self, own: HeaderEdits) -> HeaderEdits {
        let mut merged = self.clone();
        for (name, value) in own.set {
            merged.remove.remove(&name);
            merged.set.retain(|(n, _)| *n != name);
            merged.set.push((name, value));
        }
        for name in own.remove {
            merged.set.retain(|(n, _)| *n != name);
            merged.remove.insert(name);
        }
        merged
    }
}

pub use super::body_edits::BodyEdits;

/// A token cost emitted as dynamic metadata under `io.envoy.ai_gateway`.
#[derive(Debug, Clone)]
pub struct RequestCost {
    pub metadata_key: String,
    pub kind: CostKind,
}

#[derive(Debug, Clone)]
pub enum CostKind {
    Input,
    CachedInput,
    CacheCreationInput,
    Output,
    Total,
    Reasoning,
    /// `type: CEL`, over the same variables as a QuotaPolicy's `costExpression`.
    Cel(Arc<crate::quota::cost::Cost>),
}

impl GatewayConfig {
    /// The route (namespace/name) that lists `model` in an exact match, if any.
    pub fn route_for_model(&self, model: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.rules.iter().any(|rule| {
                rule.matches.iter().any(|conds| {
                    conds
                        .iter()
                        .any(|c| !c.regex && c.name == MODEL_HEADER && c.value == model)
                })
            })
        })
    }

    /// A metric label for the client's `model` that the configuration bounds: the model
    /// itself when a rule names it exactly, else the pattern of the rule that served it
    /// (a regular expression matches any number of client-chosen names), else `other`.
    pub fn model_label(&self, model: &str, served_by: Option<&BackendRefTarget>) -> String {
        if self.models.contains_key(model) {
            return model.to_string();
        }
        served_by
            .and_then(|t| {
                let route = self.routes.iter().find(|r| r.name == t.route)?;
                let rule = route.rules.get(t.rule_index)?;
                rule.matches
                    .iter()
                    .flatten()
                    .find(|c| c.regex && c.name == MODEL_HEADER)
                    .map(|c| c.value.clone())
            })
            .unwrap_or_else(|| OTHER_LABEL.to_string())
    }

    /// Whether a request for `model` to `authority` can be routed, as far as the sidecar
    /// can tell: a model whose routes all name other `hostnames` is not known here.
    pub fn knows_model_at(&self, model: &str, authority: &str) -> bool {
        self.routes_any_model
            || self
                .models
                .get(model)
                .is_some_and(|m| m.served_at(authority))
    }

    /// The models a request to `authority` can reach, for `/v1/models`.
    pub fn models_at<'a>(
        &'a self,
        authority: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ModelInfo)> + 'a {
        self.models
            .iter()
            .filter(move |(_, m)| m.served_at(authority))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolve;

    fn config(yaml: &str) -> GatewayConfig {
        let mut res = crate::config::load::Resources::default();
        let mut problems = Vec::new();
        crate::config::load::parse_text(
            yaml,
            std::path::Path::new("t.yaml"),
            &mut res,
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        resolve::resolve(&res, None).expect("resolves")
    }

    const BACKEND: &str = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: [{ip: {address: 127.0.0.1, port: 1}}]}\n---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend\nmetadata: {name: b}\nspec: {schema: {name: OpenAI}, backendRef: {name: b}}\n---\n";

    #[test]
    fn only_rules_the_model_alone_decides_are_router_resolved() {
        let c = config(&format!(
            "{BACKEND}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\nspec:\n  rules:\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}, {{name: x-tier, value: gold}}]}}]\n    backendRefs: [{{name: b}}]\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}]\n    backendRefs: [{{name: b}}]\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: n}}]}}]\n    backendRefs: [{{name: b}}]\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: f}}]}}]\n    backendRefs: [{{name: b}}, {{name: b, priority: 1}}]\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: r.*, type: RegularExpression}}]}}]\n    backendRefs: [{{name: b}}]\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: late}}]}}]\n    backendRefs: [{{name: b}}]\n"
        ));
        let resolved: Vec<bool> = c.routes[0]
            .rules
            .iter()
            .map(|r| r.router_resolved)
            .collect();
        // m depends on x-tier (a client header) in rule 0; f has two backends; after the
        // regex rule nothing is decided by the model alone.
        assert_eq!(resolved, [false, false, true, false, false, false]);
        assert_eq!(c.router_targets.keys().collect::<Vec<_>>(), ["n"]);
        assert!(c.routes_any_model);
    }

    #[test]
    fn a_references_header_edits_win_over_its_backends() {
        let backend = HeaderEdits {
            set: vec![
                ("x-a".into(), "backend".into()),
                ("x-b".into(), "backend".into()),
            ],
            remove: ["x-c".to_string()].into(),
        };
        let own = HeaderEdits {
            set: vec![("x-a".into(), "ref".into()), ("x-c".into(), "ref".into())],
            remove: ["x-b".to_string()].into(),
        };
        let merged = backend.overridden_by(own);
        assert_eq!(
            merged.set,
            [
                ("x-a".to_string(), "ref".to_string()),
                ("x-c".to_string(), "ref".to_string())
            ]
        );
        assert_eq!(merged.remove, ["x-b".to_string()].into());
    }
}
