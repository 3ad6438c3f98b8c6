//! What the rendered resources cannot express, or an API server would reject: each
//! refused by name, with the fix.

use std::collections::BTreeSet;

use serde_json::Value;

use super::error::{unsupported, RenderError};
use super::plan::{RoutePlan, RulePlan};
use super::RenderOptions;
use crate::config::load::{Document, Resources};
use crate::config::resources::AIGatewayRouteSpec;

/// Longest unix socket path: `sun_path` holds 108 bytes with the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

pub(super) fn check_options(o: &RenderOptions) -> Result<(), RenderError> {
    if !o.socket_path.starts_with('/') || o.socket_path.len() > MAX_SOCKET_PATH {
        return Err(RenderError::Option(format!(
            "--socket-path `{}` must be an absolute path of at most {MAX_SOCKET_PATH} bytes (a unix socket's limit)",
            o.socket_path
        )));
    }
    if std::path::Path::new(&o.socket_path).parent() == Some(std::path::Path::new("/")) {
        return Err(RenderError::Option(format!(
            "--socket-path `{}` must be in a directory of its own (the shared emptyDir is mounted there)",
            o.socket_path
        )));
    }
    check_ports(o)?;
    for (flag, value) in [
        ("--gateway-namespace", &o.gateway_namespace),
        ("--config-map", &o.config_map),
    ] {
        if !is_dns_label(value) {
            return Err(RenderError::Option(format!(
                "{flag} `{value}` is not a Kubernetes name (lower-case letters, digits and `-`, at most 63)"
            )));
        }
    }
    Ok(())
}

/// The sidecar runs in the Envoy pod's network namespace, beside the ports Envoy
/// Gateway's containers bind: Envoy's admin, stats and readiness listeners
/// (internal/xds/bootstrap/bootstrap.go), the shutdown manager
/// (internal/cmd/envoy/shutdown_manager.go) and the Gateway listener, which binds its
/// port plus 10000 under 1024 (internal/gatewayapi/listener.go).
fn check_ports(o: &RenderOptions) -> Result<(), RenderError> {
    if o.port == 0 {
        return Err(RenderError::Option(
            "--port 0: a Gateway listener's port is 1 to 65535".into(),
        ));
    }
    let listener = if o.port < 1024 {
        o.port + 10000
    } else {
        o.port
    };
    let taken = [
        (19000, "Envoy's admin port"),
        (19001, "Envoy's stats port"),
        (19002, "the shutdown manager's port"),
        (19003, "Envoy's readiness port"),
        (listener, "the port the Gateway listener binds in the pod"),
    ];
    if o.admin_port == 0 {
        return Err(RenderError::Option(
            "--admin-port 0: a container port is 1 to 65535".into(),
        ));
    }
    if let Some((_, what)) = taken.iter().find(|(p, _)| *p == o.admin_port) {
        return Err(RenderError::Option(format!(
            "--admin-port {} is {what} in the Envoy pod, which the sidecar shares: choose another",
            o.admin_port
        )));
    }
    Ok(())
}

/// `--rate-limit-service` is where the QuotaPolicies are counted: a bad value, or one that
/// no QuotaPolicy would use, is refused rather than dropped.
pub(super) fn check_rate_limit_service(
    o: &RenderOptions,
    config: &crate::config::GatewayConfig,
) -> Result<(), RenderError> {
    let Some(service) = &o.rate_limit_service else {
        return Ok(());
    };
    crate::quota::envoy::RateLimitService::parse(service).map_err(RenderError::Option)?;
    if config.quotas.is_empty() {
        return Err(RenderError::Option(format!(
            "--rate-limit-service `{service}`: the configuration has no QuotaPolicy to count there; leave the flag out"
        )));
    }
    Ok(())
}

/// Gateway API's SectionName: DNS subdomain labels joined by dots.
pub(super) fn is_section_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `--gateway`, or the one Gateway the routes' parentRefs name. A route attached to
/// another Gateway is refused: it would be rendered onto one it does not name.
pub(super) fn gateway_name(res: &Resources, o: &RenderOptions) -> Result<String, RenderError> {
    let mut named = BTreeSet::new();
    for doc in &res.routes {
        for parent in parent_refs(doc) {
            named.insert(parent);
        }
    }
    let gateway = match (&o.gateway_name, named.len()) {
        (Some(g), _) => g.clone(),
        (None, 1) => named
            .iter()
            .next()
            .map(|(n, _)| n.clone())
            .unwrap_or_default(),
        (None, 0) => {
            return Err(RenderError::Option(
                "no AIGatewayRoute names a Gateway in parentRefs: pass --gateway".into(),
            ))
        }
        (None, _) => {
            return Err(RenderError::Option(format!(
            "the AIGatewayRoutes name several Gateways ({}): render one at a time with --gateway",
            named
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
        }
    };
    if !is_dns_label(&gateway) {
        return Err(RenderError::Option(format!(
            "the Gateway name `{gateway}` is not a Kubernetes name"
        )));
    }
    for doc in &res.routes {
        for (name, namespace) in parent_refs(doc) {
            let elsewhere = namespace
                .as_deref()
                .is_some_and(|ns| ns != o.gateway_namespace);
            if name != gateway || elsewhere {
                return Err(unsupported(
                    format!("AIGatewayRoute {}/{}", doc.namespace(), doc.meta.name),
                    "spec.parentRefs",
                    format!(
                        "names Gateway `{}{name}`, not the rendered `{}/{gateway}`",
                        namespace.map(|n| format!("{n}/")).unwrap_or_default(),
                        o.gateway_namespace
                    ),
                    "render with --gateway and --gateway-namespace of that Gateway, or fix parentRefs",
                ));
            }
        }
    }
    Ok(gateway)
}

/// (name, namespace) of each Gateway parentRef. Without a namespace, the rendered
/// HTTPRoute attaches to the rendered Gateway's namespace.
pub(super) fn parent_refs(doc: &Document<AIGatewayRouteSpec>) -> Vec<(String, Option<String>)> {
    let Some(Value::Array(refs)) = &doc.spec.parent_refs else {
        return Vec::new();
    };
    refs.iter()
        .filter(|r| r.get("kind").and_then(Value::as_str).unwrap_or("Gateway") == "Gateway")
        .filter_map(|r| {
            let name = r.get("name")?.as_str()?.to_string();
            let ns = r.get("namespace").and_then(Value::as_str).map(String::from);
            Some((name, ns))
        })
        .collect()
}

pub(super) fn check_route_fields(
    doc: &Document<AIGatewayRouteSpec>,
    what: &str,
) -> Result<(), RenderError> {
    if doc.spec.target_refs.is_some() {
        return Err(unsupported(
            what.to_string(),
            "spec.targetRefs",
            "is deprecated and not rendered".into(),
            "attach the route with parentRefs",
        ));
    }
    if doc.spec.filter_config.is_some() {
        return Err(unsupported(
            what.to_string(),
            "spec.filterConfig",
            "is not rendered: the sidecar's own flags configure it".into(),
            "remove it",
        ));
    }
    if let Some(Value::Array(parents)) = &doc.spec.parent_refs {
        for (i, p) in parents.iter().enumerate() {
            let kind = p.get("kind").and_then(Value::as_str).unwrap_or("Gateway");
            let section = p.get("sectionName").or_else(|| p.get("port"));
            if kind != "Gateway" || section.is_some() {
                return Err(unsupported(
                    what.to_string(),
                    &format!("spec.parentRefs[{i}]"),
                    "only a whole Gateway can be a parent here (no other kind, sectionName or port)".into(),
                    "name the Gateway only",
                ));
            }
        }
    }
    Ok(())
}

/// The HTTPRoute CRD's limits (Gateway API v1): 16 rules (one is the unknown-model
/// rule), 64 matches and 16 backendRefs a rule, 128 matches in all, 16 headers a match
/// (a router-resolved rule adds the binding header). An AIGatewayRoute allows more.
pub(super) fn check_http_route_limits(rules: &[RulePlan], what: &str) -> Result<(), RenderError> {
    const MAX_RULES: usize = 16;
    // The CEL rule on `rules` is `<= 128` (its message says "less than 128").
    const MAX_MATCHES: usize = 128;
    const MAX_RULE_MATCHES: usize = 64;
    const MAX_RULE_BACKENDS: usize = 16;
    const MAX_HEADERS: usize = 16;
    if rules.len() + 1 > MAX_RULES {
        return Err(unsupported(
            what.to_string(),
            "spec.rules",
            format!(
                "has {} rules; an HTTPRoute holds {MAX_RULES}, one of them the unknown-model rule",
                rules.len()
            ),
            "split the rules over several AIGatewayRoutes of at most 15 rules",
        ));
    }
    let matches: usize = rules.iter().map(|r| r.matches.len()).sum::<usize>() + 1;
    if matches > MAX_MATCHES {
        return Err(unsupported(
            what.to_string(),
            "spec.rules[].matches",
            format!("has {matches} matches with the unknown-model rule's; an HTTPRoute holds {MAX_MATCHES}"),
            "split the rules over several AIGatewayRoutes",
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.matches.len() > MAX_RULE_MATCHES {
            return Err(unsupported(
                what.to_string(),
                &format!("spec.rules[{i}].matches"),
                format!(
                    "has {} matches; an HTTPRoute rule holds {MAX_RULE_MATCHES}",
                    rule.matches.len()
                ),
                "split the rule into rules of at most 64 matches",
            ));
        }
        if rule.refs.len() > MAX_RULE_BACKENDS {
            return Err(unsupported(
                what.to_string(),
                &format!("spec.rules[{i}].backendRefs"),
                format!("has {} backendRefs that take traffic; an HTTPRoute rule holds {MAX_RULE_BACKENDS}", rule.refs.len()),
                "use at most 16 backends in a rule",
            ));
        }
        if rule.matches.iter().any(|m| m.len() > MAX_HEADERS) {
            return Err(unsupported(
                what.to_string(),
                &format!("spec.rules[{i}].matches[].headers"),
                format!("a match has more than {MAX_HEADERS} header conditions with the sidecar's binding header (x-llm-extproc-backend), which an HTTPRoute refuses"),
                "use fewer header conditions",
            ));
        }
    }
    Ok(())
}

/// Envoy Gateway gives each hostname its own virtual host, so a request for a host that
/// one route names never reaches the rules of a route that names other hosts (or none),
/// where the standalone routes would fall through to them.
pub(super) fn check_hostnames(routes: &[RoutePlan]) -> Result<(), RenderError> {
    let Some(first) = routes.first() else {
        return Ok(());
    };
    for route in routes {
        if route.hostnames != first.hostnames {
            return Err(unsupported(
                format!("AIGatewayRoute {}/{}", route.namespace, route.name),
                "spec.hostnames",
                format!("differ from those of AIGatewayRoute {}/{}; Envoy Gateway would route each hostname apart, and a model of one route would not be found through the other's hosts", first.namespace, first.name),
                "give the routes rendered onto one Gateway the same hostnames (or none), or render them onto separate Gateways",
            ));
        }
    }
    Ok(())
}

/// The sidecar, like the standalone routes, takes the first rule (in the order of the
/// files) whose conditions hold. Envoy Gateway orders a virtual host's routes by how many
/// header matches they have, then how many are exact (internal/gatewayapi/sort.go), and
/// ties across HTTPRoutes by creation time. Refused: a rule that could take a request an
/// earlier rule takes, and that Envoy Gateway would put first (more specific) or in an
/// order the files do not decide (as specific, in another route).
pub(super) fn check_precedence(routes: &[RoutePlan]) -> Result<(), RenderError> {
    let mut seen: Vec<(usize, &str, &Vec<Value>)> = Vec::new();
    for (ri, route) in routes.iter().enumerate() {
        for rule in &route.rules {
            for alternative in &rule.matches {
                for (earlier_route, earlier_rule, earlier) in &seen {
                    let later = specificity(alternative);
                    let before = specificity(earlier);
                    let reordered = later > before || (later == before && *earlier_route != ri);
                    if reordered && may_overlap(earlier, alternative) {
                        let earlier_name = &routes[*earlier_route];
                        return Err(unsupported(
                            format!("AIGatewayRoute {}/{}", route.namespace, route.name),
                            &format!("rule `{}`", rule.name),
                            format!("can take requests that rule `{earlier_rule}` of AIGatewayRoute {}/{} takes first, and Envoy Gateway would try this one first, or in an order the files do not decide (it sorts routes by their number of header matches, and ties between HTTPRoutes by age)", earlier_name.namespace, earlier_name.name),
                            "make the rules exclusive (e.g. different exact models), or give the earlier rule at least as many header matches",
                        ));
                    }
                }
            }
            for alternative in &rule.matches {
                seen.push((ri, &rule.name, alternative));
            }
        }
    }
    check_catch_alls(routes)
}

/// A rule with no header condition at all is as specific as the unknown-model rule that
/// ends every HTTPRoute. Within one HTTPRoute its rules keep their order (Envoy Gateway's
/// sort is stable), but between HTTPRoutes the older one's come first: another route's
/// 404 could take the requests the catch-all should, depending on creation times.
fn check_catch_alls(routes: &[RoutePlan]) -> Result<(), RenderError> {
    if routes.len() < 2 {
        return Ok(());
    }
    for route in routes {
        for rule in &route.rules {
            if rule.matches.iter().any(|m| m.is_empty()) {
                let others: Vec<String> = routes
                    .iter()
                    .filter(|r| !std::ptr::eq(*r, route))
                    .map(|r| format!("{}/{}", r.namespace, r.name))
                    .collect();
                return Err(unsupported(
                    format!("AIGatewayRoute {}/{}", route.namespace, route.name),
                    &format!("rule `{}`", rule.name),
                    format!("matches any request, as does the `{}` rule (404) that ends the HTTPRoute of AIGatewayRoute {}; Envoy Gateway orders such ties between HTTPRoutes by age, so the other route's 404 can come first", super::httproute::UNKNOWN_MODEL_RULE, others.join(", ")),
                    "give the rule a header match (e.g. on x-ai-eg-model), or render the routes onto separate Gateways",
                ));
            }
        }
    }
    Ok(())
}

/// (header matches, exact header matches): Envoy Gateway's ordering key.
pub(super) fn specificity(headers: &[Value]) -> (usize, usize) {
    let exact = headers.iter().filter(|h| h["type"] == "Exact").count();
    (headers.len(), exact)
}

/// Whether one request could satisfy both: not when both want different exact values
/// of one header.
pub(super) fn may_overlap(a: &[Value], b: &[Value]) -> bool {
    !a.iter().any(|x| {
        x["type"] == "Exact"
            && b.iter()
                .any(|y| y["type"] == "Exact" && y["name"] == x["name"] && y["value"] != x["value"])
    })
}

/// The names rendered from the resources' own, with a suffix: each must still be a
/// Kubernetes name (a DNS subdomain of at most 253 characters), or the API server
/// refuses the object.
pub(super) fn check_rendered_names(
    routes: &[RoutePlan],
    backends: &[(&str, &str, &str)],
) -> Result<(), RenderError> {
    let mut names: Vec<(String, &str, String)> = Vec::new();
    for route in routes {
        let source = format!("AIGatewayRoute {}/{}", route.namespace, route.name);
        names.push((
            super::httproute::host_rewrite_name(route),
            "HTTPRouteFilter",
            source.clone(),
        ));
        names.push((
            super::httproute::unknown_model_name(route),
            "HTTPRouteFilter",
            source.clone(),
        ));
        for rule in &route.rules {
            names.push((
                super::traffic_policies::backend_policy_name(route, rule),
                "BackendTrafficPolicy",
                source.clone(),
            ));
        }
    }
    for (namespace, original, rendered) in backends {
        names.push((
            rendered.to_string(),
            "Backend",
            format!("Backend {namespace}/{original}"),
        ));
    }
    for (name, kind, source) in names {
        if !is_dns_subdomain(&name) {
            return Err(unsupported(
                source,
                "metadata.name",
                format!("gives the rendered {kind} `{name}`, which is not a Kubernetes name (at most 253 characters)"),
                "shorten the name (and the rule names of a route)",
            ));
        }
    }
    Ok(())
}

/// A Kubernetes object name: lower-case DNS labels joined by dots, at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}
