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

#[derive(Debug, Default)]
pub struct GatewayConfig {
    pub routes: Vec<Route>,
    /// By full name `name.namespace` (the form Envoy AI Gateway's CEL costs use).
    pub backends: BTreeMap<String, Arc<Backend>>,
    /// By the endpoint metadata value `per_route_rule_backend_name`.
    pub backend_refs: BTreeMap<String, BackendRefTarget>,
    /// Exact `x-ai-eg-model` values of every rule, for unknown-model answers and `/v1/models`.
    pub models: BTreeMap<String, ModelInfo>,
    /// True when some rule matches the model by regular expression: then only Envoy knows
    /// whether a model is routable, and the sidecar leaves unknown models to Envoy's catch-all.
    pub has_model_regex: bool,
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub owned_by: String,
    pub created: i64,
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
    pub request_timeout: Duration,
    pub backend_request_timeout: Option<Duration>,
}

impl Rule {
    /// A rule with one backend reference and only exact header matches: the sidecar can
    /// tell which backend serves a request from the router level, so the rule's cluster
    /// needs no upstream-level filter.
    pub fn is_simple(&self) -> bool {
        self.backend_refs.len() == 1 && !self.matches.iter().flatten().any(|c| c.regex)
    }
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
    pub header_mutation: HeaderEdits,
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

/// A token cost emitted as dynamic metadata under `io.envoy.ai_gateway`.
#[derive(Debug, Clone)]
pub struct RequestCost {
    pub metadata_key: String,
    pub kind: CostKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostKind {
    Input,
    CachedInput,
    CacheCreationInput,
    Output,
    Total,
    Reasoning,
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

    /// The rule Envoy will pick for a request, when the sidecar can be sure of it: rules in
    /// route order, the first whose conditions all hold. `header` looks up a request header;
    /// `model` is the routing header's value. None when a regular expression stands in the
    /// way (only Envoy evaluates those) or nothing matches.
    pub fn rule_for(&self, model: &str, header: &dyn Fn(&str) -> Option<String>) -> Option<&Rule> {
        for rule in self.routes.iter().flat_map(|r| &r.rules) {
            for conditions in &rule.matches {
                let mut undecidable = false;
                let holds = conditions.iter().all(|c| {
                    if c.regex {
                        undecidable = true;
                        return true;
                    }
                    let value = if c.name == MODEL_HEADER {
                        Some(model.to_string())
                    } else {
                        header(&c.name)
                    };
                    value.as_deref() == Some(c.value.as_str())
                });
                if holds {
                    return (!undecidable).then_some(rule);
                }
            }
        }
        None
    }

    /// Whether a request for `model` can be routed, as far as the sidecar can tell.
    pub fn knows_model(&self, model: &str) -> bool {
        self.has_model_regex || self.models.contains_key(model)
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
    fn rule_for_follows_route_order_and_header_conditions() {
        let c = config(&format!(
            "{BACKEND}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\nspec:\n  rules:\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}, {{name: x-tier, value: gold}}]}}]\n    backendRefs: [{{name: b}}, {{name: b, priority: 1}}]\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}]\n    backendRefs: [{{name: b}}]\n  \
             - matches: [{{headers: [{{name: x-ai-eg-model, value: r.*, type: RegularExpression}}]}}]\n    backendRefs: [{{name: b}}]\n"
        ));
        let gold = |n: &str| (n == "x-tier").then(|| "gold".to_string());
        let none = |_: &str| None;
        assert_eq!(
            c.rule_for("m", &gold).map(|r| r.cluster.as_str()),
            Some("default/r/rule/0")
        );
        assert!(!c.rule_for("m", &gold).unwrap().is_simple());
        assert_eq!(
            c.rule_for("m", &none).map(|r| r.cluster.as_str()),
            Some("default/r/rule/1")
        );
        assert!(c.rule_for("m", &none).unwrap().is_simple());
        // Only Envoy evaluates regular expressions.
        assert!(c.rule_for("regex-model", &none).is_none());
    }
}
