//! AIGatewayRoutes: rules, their header matches, backend references, timeouts and the
//! token costs the route reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::super::body_edits;
use super::super::hostnames;
use super::super::load::Document;
use super::super::model::*;
use super::super::problem::{did_you_mean, Problem};
use super::super::resources::{self, AIGatewayRouteSpec, RouteRule};
use super::backends::header_edits;
use super::{full_name, parse_duration, parse_rfc3339, what, DEFAULT_REQUEST_TIMEOUT};
use crate::api::request::validate_model;

pub(super) fn resolve_route(
    doc: &Document<AIGatewayRouteSpec>,
    backends: &BTreeMap<String, Arc<Backend>>,
    config: &mut GatewayConfig,
    problems: &mut Vec<Problem>,
) {
    let mut route = RouteDoc {
        doc,
        what: what("AIGatewayRoute", doc),
        name: format!("{}/{}", doc.namespace(), doc.meta.name),
        problems,
    };
    let hosts = route.hostnames();
    let mut rules = Vec::new();
    for (ri, rule) in doc.spec.rules.iter().enumerate() {
        let mut matches = route.matches(ri, rule, hosts.as_ref(), config);
        if let Some(hosts) = &hosts {
            // Envoy matches the route's hosts; the model alone no longer decides the rule.
            for conds in &mut matches {
                conds.push(HeaderCondition {
                    name: ":authority".into(),
                    value: hostnames::authority_regex(hosts),
                    regex: true,
                });
            }
        }
        if matches
            .iter()
            .any(|conds| !conds.iter().any(|c| c.name == MODEL_HEADER && !c.regex))
        {
            config.routes_any_model = true;
        }
        let Some((refs, targets)) = route.backend_refs(ri, rule, backends) else {
            continue;
        };
        let at = format!("spec.rules[{ri}].timeouts");
        let timeouts = rule.timeouts.as_ref();
        let request_timeout = timeouts
            .and_then(|t| t.request.as_deref())
            .and_then(|text| route.duration(&format!("{at}.request"), text, "60s, 5m or 500ms"))
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let backend_request_timeout = timeouts
            .and_then(|t| t.backend_request.as_deref())
            .and_then(|text| {
                route.duration(&format!("{at}.backendRequest"), text, "30s, 2m or 500ms")
            });
        let stream_idle_timeout = rule.stream_idle_timeout.as_deref().and_then(|text| {
            let field = format!("spec.rules[{ri}].streamIdleTimeout");
            route.duration(&field, text, "30s, 2m or 500ms")
        });
        config.backend_refs.extend(targets);
        rules.push(Rule {
            cluster: format!("{}/rule/{ri}", route.name),
            matches,
            backend_refs: refs,
            request_timeout,
            request_timeout_set: timeouts.is_some_and(|t| t.request.is_some()),
            backend_request_timeout,
            stream_idle_timeout,
            router_resolved: false,
        });
    }
    let costs = route.costs();
    config.routes.push(Route {
        name: route.name,
        rules,
        costs,
    });
}

/// What upstream attempts need of each backend reference, by its endpoint metadata key.
type Targets = Vec<(String, BackendRefTarget)>;

/// One AIGatewayRoute being resolved, and where its problems go.
struct RouteDoc<'a> {
    doc: &'a Document<AIGatewayRouteSpec>,
    what: String,
    /// `namespace/name`.
    name: String,
    problems: &'a mut Vec<Problem>,
}

impl RouteDoc<'_> {
    fn problem(&mut self, field: &str, message: String, fix: &str) {
        let problem = Problem::new(&self.doc.file, &self.what, field, message, fix.into());
        self.problems.push(problem);
    }

    /// The rule's alternatives (OR) of header conditions (AND); an exact model becomes a
    /// known model. A rule without matches takes every request that reaches it.
    fn matches(
        &mut self,
        ri: usize,
        rule: &RouteRule,
        hosts: Option<&Vec<String>>,
        config: &mut GatewayConfig,
    ) -> Vec<Vec<HeaderCondition>> {
        let mut matches = Vec::new();
        for (mi, m) in rule.matches.iter().enumerate() {
            let mut conds = Vec::new();
            for (hi, h) in m.headers.iter().enumerate() {
                let field = format!("spec.rules[{ri}].matches[{mi}].headers[{hi}].value");
                let name = h.name.to_ascii_lowercase();
                let regex = h.match_type == resources::HeaderMatchType::RegularExpression;
                if name == MODEL_HEADER && !regex {
                    if let Err(e) = validate_model(&h.value) {
                        self.problem(&field, e.to_string(), "use the model name clients send");
                        continue;
                    }
                    let info = self.model_info(ri, rule, hosts);
                    match config.models.get_mut(&h.value) {
                        // Served on the hosts of every route that lists it.
                        Some(known) => match (&mut known.hosts, hosts) {
                            (Some(all), Some(more)) => all.extend(more.iter().cloned()),
                            (all, None) => *all = None,
                            (None, Some(_)) => {}
                        },
                        None => {
                            config.models.insert(h.value.clone(), info);
                        }
                    }
                }
                if h.value.bytes().any(|b| b.is_ascii_control()) {
                    self.problem(&field, "contains control characters".into(), "remove them");
                    continue;
                }
                conds.push(HeaderCondition {
                    name,
                    value: h.value.clone(),
                    regex,
                });
            }
            matches.push(conds);
        }
        if matches.is_empty() {
            matches.push(Vec::new());
        }
        matches
    }

    /// `spec.hostnames`, checked; None when the route serves every host.
    fn hostnames(&mut self) -> Option<Vec<String>> {
        let value = self.doc.spec.hostnames.as_ref()?;
        let names: Vec<String> = match value {
            serde_json::Value::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let field = format!("spec.hostnames[{i}]");
                    let Some(name) = item.as_str() else {
                        self.problem(&field, "is not a string".into(), "write a host name");
                        return None;
                    };
                    match hostnames::invalid(name) {
                        Some(why) => {
                            self.problem(
                                &field,
                                why,
                                "write a name like api.example.com or *.example.com",
                            );
                            None
                        }
                        None => Some(name.to_string()),
                    }
                })
                .collect(),
            serde_json::Value::Array(_) | serde_json::Value::Null => return None,
            _ => {
                self.problem(
                    "spec.hostnames",
                    "is not a list".into(),
                    "write a list of host names",
                );
                return None;
            }
        };
        (!names.is_empty()).then_some(names)
    }

    fn model_info(
        &mut self,
        ri: usize,
        rule: &RouteRule,
        hosts: Option<&Vec<String>>,
    ) -> ModelInfo {
        let created = match rule.models_created_at.as_deref() {
            None => 0,
            Some(at) => parse_rfc3339(at).unwrap_or_else(|| {
                self.problem(
                    &format!("spec.rules[{ri}].modelsCreatedAt"),
                    format!("`{at}` is not an RFC 3339 date-time"),
                    "write it as 2024-01-01T00:00:00Z",
                );
                0
            }),
        };
        let owned_by = rule
            .models_owned_by
            .clone()
            .unwrap_or_else(|| "Envoy AI Gateway".into());
        ModelInfo {
            owned_by,
            created,
            hosts: hosts.cloned(),
        }
    }

    /// The rule's backend references that can take traffic, with what an upstream attempt
    /// needs of each; None (and a problem) when there are none.
    fn backend_refs(
        &mut self,
        ri: usize,
        rule: &RouteRule,
        backends: &BTreeMap<String, Arc<Backend>>,
    ) -> Option<(Vec<RuleBackendRef>, Targets)> {
        let at = format!("spec.rules[{ri}].backendRefs");
        if rule.backend_refs.is_empty() {
            self.problem(
                &at,
                "is empty".into(),
                "add at least one AIServiceBackend reference",
            );
            return None;
        }
        let mut refs = Vec::new();
        let mut targets = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let field = format!("{at}[{bi}]");
            let Some(backend) = self.backend_of(&field, b, backends) else {
                continue;
            };
            if b.weight == Some(0) {
                continue; // Gateway API: weight 0 takes no traffic
            }
            let ref_key = format!("{}/rule/{ri}/ref/{bi}", self.name);
            // The reference's edits over the backend's, for headers and body alike.
            let own = header_edits(
                b.header_mutation.as_ref(),
                &self.doc.file,
                &self.what,
                &format!("{field}.headerMutation"),
                self.problems,
            );
            let header_mutation = backend.header_mutation.overridden_by(own);
            let own_body = body_edits::from_resource(
                b.body_mutation.as_ref(),
                &self.doc.file,
                &self.what,
                &format!("{field}.bodyMutation"),
                self.problems,
            );
            let body_mutation = backend.body_mutation.overridden_by(own_body);
            targets.push((
                ref_key.clone(),
                BackendRefTarget {
                    backend: backend.clone(),
                    model_name_override: b.model_name_override.clone(),
                    route: self.name.clone(),
                    rule_index: ri,
                    header_mutation,
                    body_mutation,
                },
            ));
            refs.push(RuleBackendRef {
                ref_key,
                backend,
                priority: b.priority.unwrap_or(0),
                weight: b.weight.unwrap_or(1),
            });
        }
        if refs.is_empty() {
            self.problem(
                &at,
                "no backend reference can take traffic (all are invalid or have weight 0)".into(),
                "give at least one backendRef a positive weight",
            );
            return None;
        }
        Some((refs, targets))
    }

    /// The AIServiceBackend a reference names, with its model override checked.
    fn backend_of(
        &mut self,
        field: &str,
        b: &resources::RouteBackendRef,
        backends: &BTreeMap<String, Arc<Backend>>,
    ) -> Option<Arc<Backend>> {
        if let Some(kind) = b.kind.as_deref().filter(|k| *k != "AIServiceBackend") {
            self.problem(
                &format!("{field}.kind"),
                format!("kind `{kind}` is not supported standalone"),
                "reference an AIServiceBackend",
            );
            return None;
        }
        let ns = b.namespace.as_deref().unwrap_or(self.doc.namespace());
        let Some(backend) = backends.get(&full_name(&b.name, ns)) else {
            let known = backends.keys().map(|k| k.split('.').next().unwrap_or(k));
            let fix = did_you_mean(&b.name, known)
                .unwrap_or_else(|| format!("define an AIServiceBackend named `{}`", b.name));
            self.problem(
                &format!("{field}.name"),
                format!(
                    "AIServiceBackend `{ns}/{}` does not exist (or is invalid, see above)",
                    b.name
                ),
                &fix,
            );
            return None;
        };
        if let Some(Err(e)) = b.model_name_override.as_deref().map(validate_model) {
            self.problem(
                &format!("{field}.modelNameOverride"),
                e.to_string(),
                "use the provider's model name",
            );
            return None;
        }
        Some(backend.clone())
    }

    /// A duration field, or a problem showing how to write one.
    fn duration(&mut self, field: &str, text: &str, examples: &str) -> Option<Duration> {
        let parsed = parse_duration(text);
        if parsed.is_none() {
            self.problem(
                field,
                "is not a duration".into(),
                &format!("write e.g. {examples}"),
            );
        }
        parsed
    }

    /// The token costs the route reports as dynamic metadata.
    fn costs(&mut self) -> Vec<RequestCost> {
        let mut costs = Vec::new();
        for (ci, c) in self.doc.spec.llm_request_costs.iter().enumerate() {
            if c.cel.is_some() && c.cost_type != "CEL" {
                self.problem(
                    &format!("spec.llmRequestCosts[{ci}].cel"),
                    format!("is only read with `type: CEL`, not with `{}`", c.cost_type),
                    "remove `cel`, or use type CEL",
                );
                continue;
            }
            let kind = match c.cost_type.as_str() {
                "InputToken" => CostKind::Input,
                "CachedInputToken" => CostKind::CachedInput,
                "CacheCreationInputToken" => CostKind::CacheCreationInput,
                "OutputToken" => CostKind::Output,
                "TotalToken" => CostKind::Total,
                "ReasoningToken" => CostKind::Reasoning,
                "CEL" => {
                    let field = format!("spec.llmRequestCosts[{ci}].cel");
                    let Some(text) = c.cel.as_deref() else {
                        self.problem(
                            &field,
                            "missing".into(),
                            "write the cost in CEL, e.g. input_tokens + output_tokens * 4",
                        );
                        continue;
                    };
                    match crate::quota::cost::Cost::compile(text) {
                        Ok(cost) => CostKind::Cel(Arc::new(cost)),
                        Err(e) => {
                            self.problem(&field, format!("`{text}`: {e}"), "write CEL over input_tokens, cached_input_tokens, cache_creation_input_tokens, output_tokens, reasoning_tokens, total_tokens, model and backend");
                            continue;
                        }
                    }
                }
                other => {
                    self.problem(
                        &format!("spec.llmRequestCosts[{ci}].type"),
                        format!("cost type `{other}` is not supported by this build"),
                        "use InputToken, CachedInputToken, CacheCreationInputToken, OutputToken, TotalToken, ReasoningToken or CEL",
                    );
                    continue;
                }
            };
            costs.push(RequestCost {
                metadata_key: c.metadata_key.clone(),
                kind,
            });
        }
        costs
    }
}
