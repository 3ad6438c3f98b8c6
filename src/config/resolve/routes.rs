//! AIGatewayRoutes: rules, their header matches, backend references and timeouts.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::super::load::Document;
use super::super::model::*;
use super::super::problem::{did_you_mean, Problem};
use super::super::resources;
use super::backends::header_edits;
use super::{full_name, parse_duration, parse_rfc3339, what, DEFAULT_REQUEST_TIMEOUT};
use crate::api::request::validate_model;

pub(super) fn resolve_route(
    doc: &Document<resources::AIGatewayRouteSpec>,
    backends: &BTreeMap<String, Arc<Backend>>,
    config: &mut GatewayConfig,
    problems: &mut Vec<Problem>,
) {
    let w = what("AIGatewayRoute", doc);
    let ns = doc.namespace();
    let route_name = format!("{ns}/{}", doc.meta.name);
    let known_backends: Vec<&str> = backends
        .keys()
        .map(|k| k.split('.').next().unwrap_or(k))
        .collect();
    let mut rules = Vec::new();
    for (ri, rule) in doc.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let mut matches = Vec::new();
        for (mi, m) in rule.matches.iter().enumerate() {
            let mut conds = Vec::new();
            for (hi, h) in m.headers.iter().enumerate() {
                let field = format!("{at}.matches[{mi}].headers[{hi}]");
                let name = h.name.to_ascii_lowercase();
                let regex = h.match_type == resources::HeaderMatchType::RegularExpression;
                if name == MODEL_HEADER && !regex {
                    if let Err(e) = validate_model(&h.value) {
                        problems.push(Problem::new(
                            &doc.file,
                            &w,
                            &format!("{field}.value"),
                            e.to_string(),
                            "use the model name clients send".into(),
                        ));
                        continue;
                    }
                    let created = match rule.models_created_at.as_deref() {
                        None => 0,
                        Some(at) => match parse_rfc3339(at) {
                            Some(secs) => secs,
                            None => {
                                problems.push(Problem::new(
                                    &doc.file,
                                    &w,
                                    &format!("spec.rules[{ri}].modelsCreatedAt"),
                                    format!("`{at}` is not an RFC 3339 date-time"),
                                    "write it as 2024-01-01T00:00:00Z".into(),
                                ));
                                0
                            }
                        },
                    };
                    let owned_by = rule
                        .models_owned_by
                        .clone()
                        .unwrap_or_else(|| "Envoy AI Gateway".into());
                    config
                        .models
                        .entry(h.value.clone())
                        .or_insert(ModelInfo { owned_by, created });
                }

                if h.value.bytes().any(|b| b.is_ascii_control()) {
                    problems.push(Problem::new(
                        &doc.file,
                        &w,
                        &format!("{field}.value"),
                        "contains control characters".into(),
                        "remove them".into(),
                    ));
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
            // A rule without matches takes every request that reaches it.
            matches.push(Vec::new());
        }
        if matches
            .iter()
            .any(|conds| !conds.iter().any(|c| c.name == MODEL_HEADER && !c.regex))
        {
            config.routes_any_model = true;
        }
        if rule.backend_refs.is_empty() {
            problems.push(Problem::new(
                &doc.file,
                &w,
                &format!("{at}.backendRefs"),
                "is empty".into(),
                "add at least one AIServiceBackend reference".into(),
            ));
            continue;
        }
        let mut refs = Vec::new();
        let mut targets = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let field = format!("{at}.backendRefs[{bi}]");
            if let Some(kind) = b.kind.as_deref().filter(|k| *k != "AIServiceBackend") {
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("{field}.kind"),
                    format!("kind `{kind}` is not supported standalone"),
                    "reference an AIServiceBackend".into(),
                ));
                continue;
            }
            let bns = b.namespace.as_deref().unwrap_or(ns);
            let Some(backend) = backends.get(&full_name(&b.name, bns)) else {
                let fix = did_you_mean(&b.name, known_backends.iter().copied())
                    .unwrap_or_else(|| format!("define an AIServiceBackend named `{}`", b.name));
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("{field}.name"),
                    format!(
                        "AIServiceBackend `{bns}/{}` does not exist (or is invalid, see above)",
                        b.name
                    ),
                    fix,
                ));
                continue;
            };
            if let Some(o) = &b.model_name_override {
                if let Err(e) = validate_model(o) {
                    problems.push(Problem::new(
                        &doc.file,
                        &w,
                        &format!("{field}.modelNameOverride"),
                        e.to_string(),
                        "use the provider's model name".into(),
                    ));
                    continue;
                }
            }
            if b.weight == Some(0) {
                continue; // Gateway API: weight 0 takes no traffic
            }
            let ref_key = format!("{route_name}/rule/{ri}/ref/{bi}");
            let mut header_mutation = backend.header_mutation.clone();
            let own = header_edits(
                b.header_mutation.as_ref(),
                &doc.file,
                &w,
                &format!("{field}.headerMutation"),
                problems,
            );
            header_mutation.set.extend(own.set);
            header_mutation.remove.extend(own.remove);
            targets.push((
                ref_key.clone(),
                BackendRefTarget {
                    backend: backend.clone(),
                    model_name_override: b.model_name_override.clone(),
                    route: route_name.clone(),
                    header_mutation,
                },
            ));
            refs.push(RuleBackendRef {
                ref_key,
                backend: backend.clone(),
                priority: b.priority.unwrap_or(0),
                weight: b.weight.unwrap_or(1),
            });
        }
        if refs.is_empty() {
            problems.push(Problem::new(
                &doc.file,
                &w,
                &format!("{at}.backendRefs"),
                "no backend reference can take traffic (all are invalid or have weight 0)".into(),
                "give at least one backendRef a positive weight".into(),
            ));
            continue;
        }
        let timeouts = rule.timeouts.as_ref();
        let request_timeout = match timeouts
            .and_then(|t| t.request.as_deref())
            .map(parse_duration)
        {
            Some(Some(d)) => d,
            Some(None) => {
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("{at}.timeouts.request"),
                    "is not a duration".into(),
                    "write e.g. 60s, 5m or 500ms".into(),
                ));
                DEFAULT_REQUEST_TIMEOUT
            }
            None => DEFAULT_REQUEST_TIMEOUT,
        };
        let backend_request_timeout = match timeouts.and_then(|t| t.backend_request.as_deref()) {
            Some(text) => {
                let parsed = parse_duration(text);
                if parsed.is_none() {
                    problems.push(Problem::new(
                        &doc.file,
                        &w,
                        &format!("{at}.timeouts.backendRequest"),
                        "is not a duration".into(),
                        "write e.g. 30s, 2m or 500ms".into(),
                    ));
                }
                parsed
            }
            None => None,
        };
        config.backend_refs.extend(targets);
        rules.push(Rule {
            cluster: format!("{route_name}/rule/{ri}"),
            matches,
            backend_refs: refs,
            request_timeout,
            backend_request_timeout,
            router_resolved: false,
        });
    }
    let mut costs = Vec::new();
    for (ci, c) in doc.spec.llm_request_costs.iter().enumerate() {
        let kind = match c.cost_type.as_str() {
            "InputToken" => CostKind::Input,
            "CachedInputToken" => CostKind::CachedInput,
            "CacheCreationInputToken" => CostKind::CacheCreationInput,
            "OutputToken" => CostKind::Output,
            "TotalToken" => CostKind::Total,
            "ReasoningToken" => CostKind::Reasoning,
            other => {
                problems.push(Problem::new(&doc.file, &w, &format!("spec.llmRequestCosts[{ci}].type"),
                    format!("cost type `{other}` is not supported by this build"),
                    "use InputToken, CachedInputToken, CacheCreationInputToken, OutputToken, TotalToken or ReasoningToken".into()));
                continue;
            }
        };
        costs.push(RequestCost {
            metadata_key: c.metadata_key.clone(),
            kind,
        });
    }
    config.routes.push(Route {
        name: route_name,
        rules,
        costs,
    });
}
