//! QuotaPolicies: their budgets, per backend and model, as quota buckets. Everything
//! the gateway cannot enforce is refused by name; a budget another policy overrides is
//! named as not enforced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::load::{Document, Resources};
use super::super::model::{Backend, GatewayConfig};
use super::super::problem::Problem;
use super::super::resources::{
    BucketRule, ClientSelector, QuotaPolicySpec, QuotaValue, SelectorMatchType,
};
use super::{full_name, what};
use crate::quota::cost::Cost;
use crate::quota::{metadata_keys, Bucket, HeaderSelector, HeaderTest, Quotas, RuleChoice, Window};

pub(super) fn resolve_quotas(
    res: &Resources,
    backends: &BTreeMap<String, Arc<Backend>>,
    problems: &mut Vec<Problem>,
    notices: &mut Vec<Problem>,
) -> Quotas {
    // The CRD: where policies overlap, the one whose namespace/name sorts first wins.
    let mut docs: Vec<&Document<QuotaPolicySpec>> = res.quota_policies.iter().collect();
    docs.sort_by(|a, b| (a.namespace(), &a.meta.name).cmp(&(b.namespace(), &b.meta.name)));
    let mut taken: BTreeMap<(String, Option<String>), String> = BTreeMap::new();
    let mut buckets = Vec::new();
    for doc in docs {
        let mut policy = PolicyDoc {
            doc,
            what: what("QuotaPolicy", doc),
            problems: &mut *problems,
        };
        let targets = policy.targets(backends);
        let name = format!("{}/{}", doc.namespace(), doc.meta.name);
        for (mi, m) in doc.spec.per_model_quotas.iter().enumerate() {
            let at = format!("spec.perModelQuotas[{mi}].quota");
            let Some(cost) = policy.cost(&at, m.quota.cost_expression.as_deref()) else {
                continue;
            };
            if let Some(mode) = m.quota.mode.as_deref().filter(|m| *m != "Shared") {
                let fix = "remove it, or write Shared (the only mode)";
                policy.problem(&format!("{at}.mode"), format!("unknown mode `{mode}`"), fix);
                continue;
            }
            if m.quota.default_bucket.is_none() && m.quota.bucket_rules.is_empty() {
                let fix = "add a defaultBucket or bucketRules, or remove the entry";
                policy.problem(
                    &at,
                    "has no defaultBucket and no bucketRules: it limits nothing".into(),
                    fix,
                );
                continue;
            }
            let mut parts = Vec::new();
            if let Some(q) = &m.quota.default_bucket {
                if let Some(limit) = policy.limit(&format!("{at}.defaultBucket"), q) {
                    parts.push(("default".to_string(), limit, false, Vec::new()));
                }
            }
            // The CRD: rules selecting the same clients combine, the first limit winning.
            let mut seen: Vec<(String, usize)> = Vec::new();
            for (ri, rule) in m.quota.bucket_rules.iter().enumerate() {
                let field = format!("{at}.bucketRules[{ri}]");
                let Some(part) = policy.bucket_rule(&field, ri, rule) else {
                    continue;
                };
                let clients = signature(&part.3);
                if let Some((_, first)) = seen.iter().find(|(s, _)| *s == clients) {
                    notices.push(Problem::new(
                        &doc.file,
                        &what("QuotaPolicy", doc),
                        &field,
                        format!("not enforced: it selects the same clients as bucketRules[{first}], whose limit takes precedence"),
                        "merge the two rules".into(),
                    ));
                    continue;
                }
                seen.push((clients, ri));
                parts.push(part);
            }
            for backend in &targets {
                let key = (backend.clone(), Some(m.model_name.clone()));
                if let Some(first) = taken.get(&key) {
                    notices.push(overridden(
                        doc,
                        &format!("spec.perModelQuotas[{mi}]"),
                        first,
                        backend,
                    ));
                    continue;
                }
                taken.insert(key, name.clone());
                for (label, (limit, window), shadow, selectors) in &parts {
                    buckets.push(bucket(
                        format!("{name}/{backend}/{}/{label}", m.model_name),
                        backend,
                        Some(m.model_name.clone()),
                        (*limit, *window, *shadow),
                        selectors.clone(),
                        cost.clone(),
                    ));
                }
            }
        }
        if let Some(service) = &doc.spec.service_quota {
            let at = "spec.serviceQuota";
            let cost = policy.cost(at, service.cost_expression.as_deref());
            let limit = policy.limit(&format!("{at}.quota"), &service.quota);
            if let (Some(cost), Some((limit, window))) = (cost, limit) {
                for backend in &targets {
                    let key = (backend.clone(), None);
                    if let Some(first) = taken.get(&key) {
                        notices.push(overridden(doc, at, first, backend));
                        continue;
                    }
                    taken.insert(key, name.clone());
                    buckets.push(bucket(
                        format!("{name}/{backend}/*/service"),
                        backend,
                        None,
                        (limit, window, false),
                        Vec::new(),
                        cost.clone(),
                    ));
                }
            }
        }
    }
    Quotas::new(buckets)
}

/// The rules in Envoy's order, for the sidecar to foresee which backend a request goes
/// to first, and so which buckets it is checked against.
pub(super) fn rule_choices(config: &GatewayConfig, notices: &mut Vec<Problem>) -> Vec<RuleChoice> {
    let mut rules = Vec::new();
    for route in &config.routes {
        for (ri, rule) in route.rules.iter().enumerate() {
            let Some(primary) = rule.backend_refs.iter().min_by_key(|r| r.priority) else {
                continue;
            };
            let mut alternatives = Vec::new();
            for conds in &rule.matches {
                let mut tests = Vec::new();
                for c in conds {
                    let test = if c.regex {
                        match regex::Regex::new(&format!("^(?:{})$", c.value)) {
                            Ok(re) => HeaderTest::Regex(re),
                            Err(_) => {
                                notices.push(Problem {
                                    file: String::new(),
                                    resource: format!("AIGatewayRoute {}", route.name),
                                    field: format!("spec.rules[{ri}].matches"),
                                    message: format!("quotas are charged but not checked before the request for this rule: the sidecar cannot read the pattern `{}` as Envoy does", c.value),
                                    fix: "write the pattern in the RE2 syntax both understand".into(),
                                });
                                break;
                            }
                        }
                    } else {
                        HeaderTest::Exact(c.value.clone())
                    };
                    tests.push((c.name.clone(), test));
                }
                // A condition the sidecar cannot read: it never foresees this alternative.
                if tests.len() == conds.len() {
                    alternatives.push(tests);
                }
            }
            rules.push(RuleChoice {
                alternatives,
                primary_ref: primary.ref_key.clone(),
            });
        }
    }
    rules
}

type Part = (String, (u64, Window), bool, Vec<HeaderSelector>);

/// Which clients selectors select, comparable: conditions in a stable order.
fn signature(selectors: &[HeaderSelector]) -> String {
    let mut conditions: Vec<String> = selectors
        .iter()
        .map(|s| {
            let test = match &s.test {
                HeaderTest::Exact(v) => format!("= {v}"),
                HeaderTest::Regex(re) => format!("~ {}", re.as_str()),
                HeaderTest::Distinct => "distinct".to_string(),
            };
            format!("{} {}{test}", s.name, if s.invert { "!" } else { "" })
        })
        .collect();
    conditions.sort();
    conditions.dedup();
    conditions.join("\n")
}

fn bucket(
    id: String,
    backend: &str,
    model: Option<String>,
    (limit, window, shadow): (u64, Window, bool),
    selectors: Vec<HeaderSelector>,
    cost: Arc<Cost>,
) -> Bucket {
    let (client_key, cost_key) = metadata_keys(&id);
    Bucket {
        id,
        client_key,
        cost_key,
        backend: backend.to_string(),
        model,
        limit,
        window,
        shadow,
        selectors,
        cost,
    }
}

fn overridden(doc: &Document<QuotaPolicySpec>, field: &str, first: &str, backend: &str) -> Problem {
    Problem::new(
        &doc.file,
        &what("QuotaPolicy", doc),
        field,
        format!("not enforced for AIServiceBackend `{backend}`: QuotaPolicy `{first}` sorts first and sets this quota"),
        "give each backend and model one policy".into(),
    )
}

struct PolicyDoc<'a> {
    doc: &'a Document<QuotaPolicySpec>,
    what: String,
    problems: &'a mut Vec<Problem>,
}

impl PolicyDoc<'_> {
    fn problem(&mut self, field: &str, message: String, fix: &str) {
        let p = Problem::new(&self.doc.file, &self.what, field, message, fix.into());
        self.problems.push(p);
    }

    /// The backends (`name.namespace`) the policy targets.
    fn targets(&mut self, backends: &BTreeMap<String, Arc<Backend>>) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        if self.doc.spec.target_refs.is_empty() {
            let fix = "name the AIServiceBackends it limits in targetRefs";
            self.problem(
                "spec.targetRefs",
                "is empty: the policy would limit nothing".into(),
                fix,
            );
        }
        for (ti, t) in self.doc.spec.target_refs.iter().enumerate() {
            let field = format!("spec.targetRefs[{ti}]");
            if let Some(kind) = t.kind.as_deref().filter(|k| *k != "AIServiceBackend") {
                let fix = "target an AIServiceBackend";
                self.problem(
                    &format!("{field}.kind"),
                    format!("kind `{kind}` cannot have a QuotaPolicy"),
                    fix,
                );
                continue;
            }
            let namespace = t
                .namespace
                .as_deref()
                .unwrap_or(self.doc.namespace())
                .to_string();
            let full = full_name(&t.name, &namespace);
            if backends.contains_key(&full) {
                found.insert(full);
            } else {
                let fix = format!("define an AIServiceBackend named `{}`", t.name);
                let message = format!(
                    "AIServiceBackend `{namespace}/{}` does not exist (or is invalid, see above)",
                    t.name
                );
                self.problem(&format!("{field}.name"), message, &fix);
            }
        }
        found
    }

    fn cost(&mut self, at: &str, expression: Option<&str>) -> Option<Arc<Cost>> {
        match expression {
            None => Some(Arc::new(Cost::total_tokens())),
            Some(text) => match Cost::compile(text) {
                Ok(cost) => Some(Arc::new(cost)),
                Err(e) => {
                    let fix = "write CEL over input_tokens, cached_input_tokens, cache_creation_input_tokens, output_tokens, reasoning_tokens, total_tokens, model and backend";
                    self.problem(
                        &format!("{at}.costExpression"),
                        format!("`{text}`: {e}"),
                        fix,
                    );
                    None
                }
            },
        }
    }

    fn limit(&mut self, at: &str, q: &QuotaValue) -> Option<(u64, Window)> {
        let Some(window) = Window::parse(&q.duration) else {
            let fix = "use 1s, 1m, 1h or 1d";
            self.problem(
                &format!("{at}.duration"),
                format!("`{}` is not a quota window", q.duration),
                fix,
            );
            return None;
        };
        if q.limit > u64::from(u32::MAX) {
            let fix = "use a longer window with a smaller limit";
            self.problem(
                &format!("{at}.limit"),
                format!("{} is above the rate-limit service's 4294967295", q.limit),
                fix,
            );
            return None;
        }
        Some((q.limit, window))
    }

    fn bucket_rule(&mut self, at: &str, ri: usize, rule: &BucketRule) -> Option<Part> {
        let limit = self.limit(&format!("{at}.quota"), &rule.quota)?;
        let mut selectors = Vec::new();
        for (si, s) in rule.client_selectors.iter().enumerate() {
            selectors.extend(self.selector(&format!("{at}.clientSelectors[{si}]"), s)?);
        }
        Some((format!("rule-{ri}"), limit, rule.shadow_mode, selectors))
    }

    fn selector(&mut self, at: &str, s: &ClientSelector) -> Option<Vec<HeaderSelector>> {
        let unserved = [
            ("methods", s.methods.is_some()),
            ("path", s.path.is_some()),
            ("sourceCIDR", s.source_cidr.is_some()),
            ("queryParams", s.query_params.is_some()),
        ];
        if let Some((field, _)) = unserved.iter().find(|(_, set)| *set) {
            // Refused, never ignored: ignoring it would widen the rule to every client.
            let fix = "select clients by headers (the only selector QuotaPolicy honours)";
            self.problem(&format!("{at}.{field}"), "is not served".into(), fix);
            return None;
        }
        if s.headers.is_empty() {
            self.problem(
                &format!("{at}.headers"),
                "is empty".into(),
                "add a header condition, or remove the selector",
            );
            return None;
        }
        let mut out = Vec::new();
        for (hi, h) in s.headers.iter().enumerate() {
            let field = format!("{at}.headers[{hi}]");
            if crate::auth::CLIENT_CREDENTIAL_HEADERS
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&h.name))
            {
                // Its values would become bucket names: in metadata, access logs and the
                // rate-limit service's logs.
                self.problem(
                    &format!("{field}.name"),
                    format!(
                        "`{}` carries the client's credential, which never becomes a quota client",
                        h.name
                    ),
                    "select clients by a consumer header (--consumer-header) or a JWT claim",
                );
                return None;
            }
            let test = match (h.match_type, h.value.as_deref()) {
                (SelectorMatchType::Distinct, None) if !h.invert => HeaderTest::Distinct,
                (SelectorMatchType::Distinct, _) => {
                    let fix = "remove `value` and `invert`: Distinct counts every value apart";
                    self.problem(
                        &field,
                        "a Distinct header takes no value and no invert".into(),
                        fix,
                    );
                    return None;
                }
                (_, None) => {
                    self.problem(
                        &format!("{field}.value"),
                        "missing".into(),
                        "add the value to match",
                    );
                    return None;
                }
                (SelectorMatchType::Exact, Some(v)) => HeaderTest::Exact(v.to_string()),
                (SelectorMatchType::RegularExpression, Some(v)) => {
                    match regex::Regex::new(&format!("^(?:{v})$")) {
                        Ok(re) => HeaderTest::Regex(re),
                        Err(e) => {
                            self.problem(
                                &format!("{field}.value"),
                                format!("not a regular expression: {e}"),
                                "fix the pattern",
                            );
                            return None;
                        }
                    }
                }
            };
            out.push(HeaderSelector {
                name: h.name.to_ascii_lowercase(),
                test,
                invert: h.invert,
            });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::load::{parse_text, Resources};
    use super::super::resolve;
    use crate::config::GatewayConfig;

    const BASE: &str = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: [{ip: {address: 127.0.0.1, port: 1}}]}\n---\n\
        apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\nspec: {schema: {name: OpenAI}, backendRef: {name: b}}\n---\n\
        apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n\
        spec: {rules: [{matches: [{headers: [{name: x-ai-eg-model, value: m}]}], backendRefs: [{name: b}]}]}\n---\n";

    fn policy(name: &str, spec: &str) -> String {
        format!("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: QuotaPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}}]\n{spec}---\n")
    }

    fn resolved(yaml: &str) -> Result<GatewayConfig, Vec<String>> {
        let mut res = Resources::default();
        let mut problems = Vec::new();
        parse_text(yaml, Path::new("t.yaml"), &mut res, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        resolve(&res, None).map_err(|p| p.iter().map(|p| p.to_string()).collect())
    }

    const PER_MODEL: &str = "  perModelQuotas:\n  - modelName: m\n    quota:\n      costExpression: input_tokens + output_tokens * 4\n      defaultBucket: {limit: 5000, duration: 1h}\n      bucketRules:\n      - clientSelectors: [{headers: [{name: x-user, type: Distinct}, {name: x-tier, type: RegularExpression, value: \"gold|silver\"}]}]\n        quota: {limit: 1000, duration: 1m}\n      - clientSelectors: [{headers: [{name: x-tier, value: trial}]}]\n        quota: {limit: 10, duration: 1s}\n        shadowMode: true\n";
    const SERVICE: &str = "  serviceQuota:\n    quota: {limit: 100000, duration: 1d}\n";

    #[test]
    fn render_ratelimit_config_golden() {
        let config = resolved(&format!(
            "{BASE}{}",
            policy("budget", &format!("{PER_MODEL}{SERVICE}"))
        ))
        .expect("valid");
        let text = crate::quota::ratelimit_config::render(&config.quotas);
        let mut settings = insta::Settings::clone_current();
        settings
            .set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/quota/snapshots"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_snapshot!("ratelimit-config", text));
    }

    #[test]
    fn a_per_model_quota_overrides_the_service_quota_and_the_first_policy_wins() {
        let yaml = format!(
            "{BASE}{}{}",
            policy("b-second", SERVICE),
            policy("a-first", &format!("{PER_MODEL}{SERVICE}"))
        );
        let config = resolved(&yaml).expect("valid");
        let ids: Vec<&str> = config
            .quotas
            .buckets
            .iter()
            .map(|b| b.id.as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "default/a-first/b.default/m/default",
                "default/a-first/b.default/m/rule-0",
                "default/a-first/b.default/m/rule-1",
                "default/a-first/b.default/*/service"
            ]
        );
        let notices: Vec<String> = config.not_enforced.iter().map(|n| n.to_string()).collect();
        assert!(
            notices.iter().any(|n| n
                .contains("QuotaPolicy default/b-second: spec.serviceQuota: not enforced")
                && n.contains("`default/a-first` sorts first")),
            "{notices:?}"
        );
        let none = |_: &str| None;
        // Model m: its own buckets (only the default one without headers), not the service's.
        let m: Vec<usize> = config
            .quotas
            .select("b.default", "m", none)
            .iter()
            .map(|s| s.index)
            .collect();
        assert_eq!(m, [0]);
        let other: Vec<usize> = config
            .quotas
            .select("b.default", "other", none)
            .iter()
            .map(|s| s.index)
            .collect();
        assert_eq!(other, [3]);
        let gold = |n: &str| match n {
            "x-user" => Some("u1"),
            "x-tier" => Some("gold"),
            _ => None,
        };
        let clients: Vec<String> = config
            .quotas
            .select("b.default", "m", gold)
            .into_iter()
            .map(|s| s.client)
            .collect();
        assert_eq!(clients, ["all", "u1"]);
    }

    #[test]
    fn rules_selecting_the_same_clients_combine_with_the_first_limit() {
        let spec = "  perModelQuotas:\n  - modelName: m\n    quota:\n      bucketRules:\n\
                    \x20     - {clientSelectors: [{headers: [{name: X-User, type: Distinct}]}], quota: {limit: 10, duration: 1m}}\n\
                    \x20     - {clientSelectors: [{headers: [{name: x-tier, value: gold}]}], quota: {limit: 20, duration: 1m}}\n\
                    \x20     - {clientSelectors: [{headers: [{name: x-user, type: Distinct}]}], quota: {limit: 99, duration: 1h}}\n";
        let config = resolved(&format!("{BASE}{}", policy("p", spec))).expect("valid");
        let limits: Vec<u64> = config.quotas.buckets.iter().map(|b| b.limit).collect();
        assert_eq!(limits, [10, 20]);
        let notices: Vec<String> = config.not_enforced.iter().map(|n| n.to_string()).collect();
        assert!(
            notices.iter().any(|n| n.contains(
                "bucketRules[2]: not enforced: it selects the same clients as bucketRules[0]"
            )),
            "{notices:?}"
        );
    }

    #[test]
    fn what_cannot_be_enforced_is_refused_by_name() {
        let cases = [
            ("  perModelQuotas:\n  - modelName: m\n    quota: {costExpression: \"prompt_tokens\", defaultBucket: {limit: 1, duration: 1m}}\n", "costExpression: `prompt_tokens`: reads `prompt_tokens`"),
            ("  perModelQuotas:\n  - modelName: m\n    quota: {defaultBucket: {limit: 1, duration: 5m}}\n", "defaultBucket.duration: `5m` is not a quota window"),
            ("  perModelQuotas:\n  - modelName: m\n    quota: {mode: Exclusive, defaultBucket: {limit: 1, duration: 1m}}\n", "unknown mode `Exclusive`"),
            ("  perModelQuotas:\n  - modelName: m\n    quota: {}\n", "it limits nothing"),
            ("  perModelQuotas:\n  - modelName: m\n    quota: {bucketRules: [{clientSelectors: [{sourceCIDR: {value: 10.0.0.0/8}}], quota: {limit: 1, duration: 1m}}]}\n", "clientSelectors[0].sourceCIDR: is not served"),
            ("  perModelQuotas:\n  - modelName: m\n    quota: {bucketRules: [{clientSelectors: [{headers: [{name: x, type: RegularExpression, value: \"(\"}]}], quota: {limit: 1, duration: 1m}}]}\n", "not a regular expression"),
            ("  serviceQuota: {quota: {limit: 5000000000, duration: 1d}}\n", "above the rate-limit service's 4294967295"),
            ("  perModelQuotas:\n  - modelName: m\n    quota: {bucketRules: [{clientSelectors: [{headers: [{name: Authorization, type: Distinct}]}], quota: {limit: 1, duration: 1m}}]}\n", "`Authorization` carries the client's credential"),
        ];
        for (spec, expected) in cases {
            let problems = resolved(&format!("{BASE}{}", policy("p", spec))).expect_err(expected);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
        let untargeted = policy("p", SERVICE).replace("name: b}]", "name: nope}]");
        let problems = resolved(&format!("{BASE}{untargeted}")).expect_err("dangling");
        assert!(
            problems[0].contains("AIServiceBackend `default/nope` does not exist"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_cel_llm_request_cost_is_compiled_and_checked() {
        let route = |cel: &str| {
            BASE.replace(
                "spec: {rules:",
                &format!("spec: {{llmRequestCosts: [{{metadataKey: k, type: CEL, cel: \"{cel}\"}}], rules:"),
            )
        };
        let config = resolved(&route("input_tokens + output_tokens * 2")).expect("valid");
        assert!(matches!(
            config.routes[0].costs[0].kind,
            crate::config::CostKind::Cel(_)
        ));
        let problems = resolved(&route("input_tokens +")).expect_err("syntax");
        assert!(
            problems[0].contains("spec.llmRequestCosts[0].cel"),
            "{problems:?}"
        );
    }
}
