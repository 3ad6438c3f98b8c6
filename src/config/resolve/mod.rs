//! Resolves resource documents into the runtime [`GatewayConfig`], checking every
//! reference. Each problem names the resource, the field and the fix; nothing that is
//! wrong is silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod backends;
mod notices;
mod policies;
mod quotas;
mod routes;

use backends::resolve_backends;
use policies::resolve_policies;
use routes::resolve_route;

use super::load::{Document, Resources};
use super::model::*;
use super::problem::Problem;

/// Default route timeout, as in Envoy AI Gateway.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn resolve(res: &Resources, secrets_dir: Option<&Path>) -> Result<GatewayConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    check_duplicates(res, &mut problems);
    let credentials = resolve_policies(res, secrets_dir, &mut problems);
    let backends = resolve_backends(res, &credentials, &mut problems);
    let mut config = GatewayConfig {
        backends: backends.clone(),
        ..Default::default()
    };
    for doc in &res.routes {
        resolve_route(doc, &backends, &mut config, &mut problems);
    }
    mark_router_resolved(&mut config);
    name_clusters(&mut config);
    let mut notices = res.not_enforced.clone();
    let mut quotas = quotas::resolve_quotas(res, &backends, &mut problems, &mut notices);
    if !quotas.is_empty() {
        quotas.set_rules(quotas::rule_choices(&config, &mut notices));
    }
    config.quotas = Arc::new(quotas);
    notices::route_fields(res, &mut notices);
    notices::unserved_backends(res, &backends, &mut notices);
    config.not_enforced = notices;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Finds the rules whose selection depends on the model alone (Envoy's route order: the
/// first rule whose conditions all hold wins). Such a rule with one backend can be served
/// from the router level. A rule that also looks at other client headers, or at the model
/// through a regular expression, leaves the choice to Envoy for every model it might take.
fn mark_router_resolved(config: &mut GatewayConfig) {
    let mut decided: BTreeMap<String, Option<(usize, usize)>> = BTreeMap::new();
    let mut open_ended = false; // a rule earlier in order may take any model
    for (ri, route) in config.routes.iter().enumerate() {
        for (ui, rule) in route.rules.iter().enumerate() {
            for conds in &rule.matches {
                let exact_model = conds
                    .iter()
                    .find(|c| c.name == MODEL_HEADER && !c.regex)
                    .map(|c| c.value.clone());
                let model_only = conds.len() == 1 && exact_model.is_some();
                match exact_model {
                    Some(model) if !open_ended => {
                        // The first rule to mention a model decides it, if the model alone decides.
                        decided
                            .entry(model)
                            .or_insert(model_only.then_some((ri, ui)));
                    }
                    Some(_) => {}
                    None => open_ended = true,
                }
            }
        }
    }
    let mut targets = BTreeMap::new();
    for (ri, route) in config.routes.iter_mut().enumerate() {
        for (ui, rule) in route.rules.iter_mut().enumerate() {
            let mut models = rule.matches.iter().map(|conds| match conds.as_slice() {
                [c] if c.name == MODEL_HEADER && !c.regex => Some(c.value.as_str()),
                _ => None,
            });
            let all_decided =
                models.all(|m| m.is_some_and(|m| decided.get(m) == Some(&Some((ri, ui)))));
            rule.router_resolved = all_decided && rule.backend_refs.len() == 1;
            if rule.router_resolved {
                for conds in &rule.matches {
                    if let (Some(c), Some(r)) = (conds.first(), rule.backend_refs.first()) {
                        targets.insert(c.value.clone(), r.ref_key.clone());
                    }
                }
            }
        }
    }
    config.router_targets = targets;
}

/// Names each rule's cluster after what it contains (backends, endpoints, TLS, whether it
/// has the upstream filter). When a reload changes a rule, its cluster gets a new name:
/// Envoy keeps serving a changed cluster's old version until the new one has warmed up
/// (DNS included) while new routes apply at once, so with a reused name a new route could
/// send a new backend's credential to an old backend's host. A new name makes that window
/// answer 503 instead.
fn name_clusters(config: &mut GatewayConfig) {
    use std::hash::{Hash, Hasher};
    for route in &mut config.routes {
        for rule in &mut route.rules {
            let mut hasher = std::hash::DefaultHasher::new();
            rule.router_resolved.hash(&mut hasher);
            for r in &rule.backend_refs {
                (&r.ref_key, &r.backend.name, r.priority, r.weight).hash(&mut hasher);
                for e in &r.backend.endpoints {
                    (&e.host, e.port).hash(&mut hasher);
                }
                if let Some(tls) = &r.backend.tls {
                    (&tls.sni, tls.insecure_skip_verify).hash(&mut hasher);
                }
            }
            rule.cluster = format!("{}/{:016x}", rule.cluster, hasher.finish());
        }
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

fn what<T>(kind: &str, doc: &Document<T>) -> String {
    format!("{kind} {}/{}", doc.namespace(), doc.meta.name)
}

fn check_duplicates(res: &Resources, problems: &mut Vec<Problem>) {
    fn check<T>(kind: &str, docs: &[Document<T>], problems: &mut Vec<Problem>) {
        let mut seen = BTreeSet::new();
        for d in docs {
            if !seen.insert((d.namespace().to_string(), d.meta.name.clone())) {
                problems.push(Problem::new(
                    &d.file,
                    &what(kind, d),
                    "metadata.name",
                    "defined more than once".into(),
                    "give each resource of a kind a unique name in its namespace".into(),
                ));
            }
        }
    }
    check("AIGatewayRoute", &res.routes, problems);
    check("AIServiceBackend", &res.backends, problems);
    check("BackendSecurityPolicy", &res.policies, problems);
    check("Backend", &res.envoy_backends, problems);
    check("Secret", &res.secrets, problems);
}

/// Parses a Gateway API duration: `1h`, `5m`, `30s`, `500ms`, or combinations (`1m30s`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        total += unit.checked_mul(u32::try_from(n).ok()?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// Seconds since the epoch of an RFC 3339 timestamp.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let at = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339);
    at.ok().map(time::OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let mut res = Resources::default();
        let mut problems = Vec::new();
        super::super::load::parse_text(yaml, Path::new("t.yaml"), &mut res, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        match resolve(&res, None) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    const BASE: &str = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: [{ip: {address: 127.0.0.1, port: 1}}]}\n---\n\
        apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\nspec: {schema: {name: OpenAI}, backendRef: {name: b}}\n---\n";

    fn policy(name: &str, secret: &str) -> String {
        format!("apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}}}\n\
                 spec: {{type: APIKey, targetRefs: [{{name: b}}], apiKey: {{secretRef: {{name: {secret}}}}}}}\n---\n")
    }

    #[test]
    fn a_secret_value_with_a_line_break_is_refused() {
        let p = problems(&format!("{BASE}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{apiKey: \"sk-1\\r\\nx-evil: 1\"}}\n", policy("p", "s")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("line break") && !p[0].contains("sk-1"),
            "{p:?}"
        );
    }

    #[test]
    fn an_aws_credentials_file_without_the_profile_is_named_without_its_keys() {
        let aws = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {name: p}\n\
                   spec: {type: AWSCredentials, targetRefs: [{name: b}], awsCredentials: {region: us-east-1, credentialsFile: {secretRef: {name: s}, profile: prod}}}\n---\n";
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {credentials: \"[default]\\naws_access_key_id = AKIDX\\naws_secret_access_key = SECRETX\\n\"}\n";
        let p = problems(&format!("{BASE}{aws}{secret}"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("has no `[prod]` profile"), "{p:?}");
        assert!(
            !p[0].contains("SECRETX") && !p[0].contains("AKIDX"),
            "{p:?}"
        );
        let ok = secret.replace("[default]", "[prod]");
        assert!(problems(&format!("{BASE}{aws}{ok}")).is_empty());
    }

    #[test]
    fn two_policies_for_one_backend_are_refused() {
        let p = problems(&format!("{BASE}{}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{apiKey: k}}\n", policy("p1", "s"), policy("p2", "s")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("already authenticated by policy `p1`"),
            "{p:?}"
        );
    }

    #[test]
    fn weight_zero_refs_and_bad_header_mutations() {
        let route = |refs: &str, extra: &str| {
            format!("{BASE}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
            spec: {{rules: [{{matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}], backendRefs: [{refs}]{extra}}}]}}\n")
        };
        assert!(problems(&route("{name: b, weight: 0}, {name: b, priority: 1}", "")).is_empty());
        let p = problems(&route("{name: b, weight: 0}", ""));
        assert!(p[0].contains("weight 0"), "{p:?}");
        let p = problems(&route(
            "{name: b, headerMutation: {set: [{name: \":path\", value: /x}]}}",
            "",
        ));
        assert!(p[0].contains("not a valid header name"), "{p:?}");
        let p = problems(&route("{name: b}", ", timeouts: {backendRequest: soon}"));
        assert!(p[0].contains("timeouts.backendRequest"), "{p:?}");
    }

    fn cluster_names(yaml: &str) -> Vec<String> {
        let mut res = Resources::default();
        let mut problems = Vec::new();
        super::super::load::parse_text(yaml, Path::new("t.yaml"), &mut res, &mut problems);
        let config = resolve(&res, None).expect("resolves");
        config
            .routes
            .iter()
            .flat_map(|r| r.rules.iter().map(|rule| rule.cluster.clone()))
            .collect()
    }

    #[test]
    fn a_changed_rule_gets_a_new_cluster_name() {
        let route = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n\
            spec: {rules: [{matches: [{headers: [{name: x-ai-eg-model, value: m}]}], backendRefs: [{name: b}]}]}\n";
        let before = cluster_names(&format!("{BASE}{route}"));
        assert_eq!(
            before,
            cluster_names(&format!("{BASE}{route}")),
            "stable for the same config"
        );
        let moved = BASE.replace("port: 1", "port: 2");
        let after = cluster_names(&format!("{moved}{route}"));
        assert_ne!(before, after);
        assert!(before[0].starts_with("default/r/rule/0/"));
    }

    fn gcp_policy(gcp: &str, secret: Option<&str>) -> String {
        let mut yaml = format!("{BASE}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: gp}}\n\
             spec: {{type: GCPCredentials, targetRefs: [{{name: b}}], gcpCredentials: {gcp}}}\n");
        if let Some(data) = secret {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: sa}}\nstringData: {{{data}}}\n"
            ));
        }
        yaml
    }

    const GCP: &str =
        "{projectName: my-project, region: us-central1, credentialsFile: {secretRef: {name: sa}}}";

    fn key_entry(text: &str) -> String {
        format!(
            "service_account.json: {}",
            serde_json::to_string(text).unwrap()
        )
    }

    #[test]
    fn gcp_service_account_key_is_checked() {
        let good =
            crate::auth::google_token::tests::key_file("https://oauth2.googleapis.com/token");
        assert!(problems(&gcp_policy(GCP, Some(&key_entry(&good)))).is_empty());

        let p = problems(&gcp_policy(GCP, Some("key.json: x")));
        assert!(
            p[0].contains("Secret `default/sa` has no `service_account.json` key"),
            "{p:?}"
        );
        let p = problems(&gcp_policy(GCP, Some(&key_entry("not json"))));
        assert!(
            p[0].contains("Secret `default/sa`: `service_account.json` is not JSON"),
            "{p:?}"
        );
        let mut missing: serde_json::Value = serde_json::from_str(&good).unwrap();
        missing.as_object_mut().unwrap().remove("token_uri");
        let p = problems(&gcp_policy(GCP, Some(&key_entry(&missing.to_string()))));
        assert!(p[0].contains("lacks `token_uri`"), "{p:?}");
        assert!(p.iter().all(|p| !p.contains("PRIVATE KEY")), "{p:?}");

        let p = problems(&gcp_policy(
            "{projectName: \"a/b\", region: us-central1, credentialsFile: {secretRef: {name: sa}}}",
            Some(&key_entry(&good)),
        ));
        assert!(p[0].contains("projectName"), "{p:?}");
        let p = problems(&gcp_policy("{projectName: p, region: r}", None));
        assert!(
            p[0].contains("credentialsFile") && p[0].contains("missing"),
            "{p:?}"
        );
        let p = problems(&gcp_policy(
            "{projectName: p, region: r, workloadIdentityFederationConfig: {projectID: x}}",
            None,
        ));
        let p = p.join("\n");
        assert!(
            p.contains("workloadIdentityFederationConfig.workloadIdentityPoolName")
                && p.contains("workloadIdentityFederationConfig.oidcExchangeToken"),
            "{p}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00.5+01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }
}
