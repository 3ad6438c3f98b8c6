//! Token quotas (`QuotaPolicy`), enforced through Envoy's rate-limit filter.
//!
//! Each quota bucket is one rate-limit descriptor `(quota_bucket = <bucket id>,
//! quota_client = <client>)`. The sidecar decides which buckets a request falls in (it
//! has the headers, the consumer and the backend) and says so in dynamic metadata: Envoy
//! checks the request against those descriptors before it goes upstream (a spent budget
//! answers 429), and charges the answer's cost, also from metadata, when the stream is
//! done (`hits_addend`, `apply_on_stream_done`). The counters live in the sidecar
//! ([`service`], the standalone default) or in an `envoyproxy/ratelimit` deployment
//! ([`ratelimit_config`]) that many replicas share.

pub mod cost;
pub mod envoy;
pub mod identity;
pub mod ratelimit_config;
pub mod service;

use std::collections::BTreeMap;
use std::sync::Arc;

use cost::Cost;

/// The rate-limit domain of every descriptor the gateway sends.
pub const DOMAIN: &str = "ai-gateway-quota";
/// Descriptor keys.
pub const BUCKET_KEY: &str = "quota_bucket";
pub const CLIENT_KEY: &str = "quota_client";
/// The client value of a bucket that does not tell clients apart.
pub const ALL_CLIENTS: &str = "all";

/// The `io.envoy.ai_gateway` keys of a bucket: its client value, and what the answer
/// costs it. Named after a hash of the bucket's id, which stays the same across reloads
/// (Envoy's routes and the sidecar's configuration change at slightly different
/// moments) and, unlike model names, never holds the `:` that a
/// `%DYNAMIC_METADATA(ns:key)%` would split on. SHA-256, not std's hasher: the keys are
/// also written into Envoy Gateway's resources and envoyproxy/ratelimit's configuration
/// by `render`, so they must not change with the Rust release that built the binary.
pub fn metadata_keys(id: &str) -> (String, String) {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    let h: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    (format!("quota_client_{h}"), format!("quota_cost_{h}"))
}

/// A QuotaPolicy window: exactly one of `1s`, `1m`, `1h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
}

impl Window {
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "1s" => Some(Window::Second),
            "1m" => Some(Window::Minute),
            "1h" => Some(Window::Hour),
            "1d" => Some(Window::Day),
            _ => None,
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86400,
        }
    }

    /// The unit's name in `envoyproxy/ratelimit`'s configuration.
    pub fn unit(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// How a header selects requests.
#[derive(Debug, Clone)]
pub enum HeaderTest {
    Exact(String),
    /// Anchored at both ends, as Envoy's `safe_regex` matches.
    Regex(regex::Regex),
    /// Present, and each distinct value has a counter of its own.
    Distinct,
}

#[derive(Debug, Clone)]
pub struct HeaderSelector {
    /// Lower case.
    pub name: String,
    pub test: HeaderTest,
    pub invert: bool,
}

/// One budget: a default bucket, a bucket rule or a service quota of one policy, for one
/// backend (and model).
#[derive(Debug)]
pub struct Bucket {
    /// The descriptor value: `<namespace>/<policy>/<backend>/<model or *>/<bucket>`.
    pub id: String,
    /// See [`metadata_keys`].
    pub client_key: String,
    pub cost_key: String,
    /// `name.namespace` of the AIServiceBackend.
    pub backend: String,
    /// The model the provider is asked for; None: a service quota (every model without a
    /// per-model quota of its own).
    pub model: Option<String>,
    pub limit: u64,
    pub window: Window,
    /// Counted, never refused.
    pub shadow: bool,
    /// All must hold.
    pub selectors: Vec<HeaderSelector>,
    pub cost: Arc<Cost>,
}

/// A bucket a request falls in, and its client value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub index: usize,
    pub client: String,
}

/// One AIGatewayRoute rule as the sidecar foresees Envoy's choice of it, before Envoy
/// routes: its alternatives (OR) of header conditions (AND), and the backend reference
/// of its first priority.
#[derive(Debug)]
pub struct RuleChoice {
    pub alternatives: Vec<Vec<(String, HeaderTest)>>,
    pub primary_ref: String,
}

/// Every bucket of the configuration.
#[derive(Debug, Default)]
pub struct Quotas {
    pub buckets: Vec<Bucket>,
    /// The rules in Envoy's order, when there are buckets.
    rules: Vec<RuleChoice>,
    /// Bucket indexes by backend.
    by_backend: BTreeMap<String, Vec<usize>>,
    /// `(backend, model)` pairs that have a per-model quota: their service quota is
    /// overridden.
    per_model: std::collections::BTreeSet<(String, String)>,
    by_id: BTreeMap<String, usize>,
}

impl Quotas {
    pub fn new(buckets: Vec<Bucket>) -> Quotas {
        let mut quotas = Quotas::default();
        for (index, bucket) in buckets.iter().enumerate() {
            quotas
                .by_backend
                .entry(bucket.backend.clone())
                .or_default()
                .push(index);
            if let Some(model) = &bucket.model {
                quotas
                    .per_model
                    .insert((bucket.backend.clone(), model.clone()));
            }
            quotas.by_id.insert(bucket.id.clone(), index);
        }
        quotas.buckets = buckets;
        quotas
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn set_rules(&mut self, rules: Vec<RuleChoice>) {
        self.rules = rules;
    }

    /// The backend reference Envoy's first attempt goes to: that of the first rule whose
    /// conditions hold (`header` reads the request headers, the model header included).
    pub fn primary_ref<'h>(&self, header: impl Fn(&str) -> Option<&'h str>) -> Option<&str> {
        let holds = |(name, test): &(String, HeaderTest)| match (test, header(name)) {
            (HeaderTest::Exact(want), Some(v)) => want == v,
            (HeaderTest::Regex(re), Some(v)) => re.is_match(v),
            _ => false,
        };
        self.rules
            .iter()
            .find(|rule| {
                rule.alternatives
                    .iter()
                    .any(|conds| conds.iter().all(holds))
            })
            .map(|rule| rule.primary_ref.as_str())
    }

    pub fn by_id(&self, id: &str) -> Option<&Bucket> {
        self.by_id.get(id).map(|&i| &self.buckets[i])
    }

    /// The buckets a request to `backend` for `model` falls in. `header` reads the
    /// client's request headers (the consumer header already replaced by the verified
    /// consumer, see [`identity`]).
    pub fn select<'h>(
        &self,
        backend: &str,
        model: &str,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Vec<Selected> {
        let Some(indexes) = self.by_backend.get(backend) else {
            return Vec::new();
        };
        let has_per_model = self
            .per_model
            .contains(&(backend.to_string(), model.to_string()));
        let mut selected = Vec::new();
        for &index in indexes {
            let bucket = &self.buckets[index];
            let applies = match &bucket.model {
                Some(m) => m == model,
                None => !has_per_model,
            };
            if !applies {
                continue;
            }
            if let Some(client) = client_of(bucket, &header) {
                selected.push(Selected { index, client });
            }
        }
        selected
    }
}

/// The client value of `bucket` for this request, or None when its selectors do not hold.
fn client_of<'h>(bucket: &Bucket, header: &impl Fn(&str) -> Option<&'h str>) -> Option<String> {
    let mut distinct: Vec<&str> = Vec::new();
    for s in &bucket.selectors {
        let value = header(&s.name);
        let holds = match (&s.test, value) {
            (HeaderTest::Distinct, Some(v)) => {
                distinct.push(v);
                true
            }
            (HeaderTest::Distinct, None) => false,
            (HeaderTest::Exact(want), Some(v)) => (want == v) != s.invert,
            (HeaderTest::Regex(re), Some(v)) => re.is_match(v) != s.invert,
            // An absent header matches no value; inverted, it holds.
            (_, None) => s.invert,
        };
        if !holds {
            return None;
        }
    }
    if distinct.is_empty() {
        return Some(ALL_CLIENTS.to_string());
    }
    // Escaped so that one client's value cannot spell another's pair of values.
    let parts: Vec<String> = distinct
        .iter()
        .map(|v| v.replace('%', "%25").replace('|', "%7C"))
        .collect();
    Some(parts.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys_are_the_same_whatever_built_the_binary() {
        // SHA-256 of the id, as `printf default/route/0 | sha256sum` gives it.
        assert_eq!(
            metadata_keys("default/route/0"),
            (
                "quota_client_57d7edf755630fb6".into(),
                "quota_cost_57d7edf755630fb6".into()
            )
        );
    }

    fn bucket(id: &str, model: Option<&str>, selectors: Vec<HeaderSelector>) -> Bucket {
        let (client_key, cost_key) = metadata_keys(id);
        Bucket {
            id: id.into(),
            client_key,
            cost_key,
            backend: "b.default".into(),
            model: model.map(str::to_string),
            limit: 10,
            window: Window::Minute,
            shadow: false,
            selectors,
            cost: Arc::new(Cost::total_tokens()),
        }
    }

    fn selector(name: &str, test: HeaderTest, invert: bool) -> HeaderSelector {
        HeaderSelector {
            name: name.into(),
            test,
            invert,
        }
    }

    #[test]
    fn selectors_exact_regex_distinct_and_inverted() {
        let quotas = Quotas::new(vec![
            bucket("default", Some("m"), vec![]),
            bucket(
                "gold",
                Some("m"),
                vec![selector("x-tier", HeaderTest::Exact("gold".into()), false)],
            ),
            bucket(
                "team",
                Some("m"),
                vec![
                    selector(
                        "x-team",
                        HeaderTest::Regex(regex::Regex::new("^(?:eng-.*)$").unwrap()),
                        false,
                    ),
                    selector("x-user", HeaderTest::Distinct, false),
                ],
            ),
            bucket(
                "not-free",
                Some("m"),
                vec![selector("x-tier", HeaderTest::Exact("free".into()), true)],
            ),
            bucket("service", None, vec![]),
        ]);
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        let ids = |sel: Vec<Selected>| -> Vec<(String, String)> {
            sel.into_iter()
                .map(|s| (quotas.buckets[s.index].id.clone(), s.client))
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            ids(quotas.select(
                "b.default",
                "m",
                headers(&[("x-tier", "gold"), ("x-team", "eng-a"), ("x-user", "a|b")])
            )),
            pairs(&[
                ("default", "all"),
                ("gold", "all"),
                ("team", "a%7Cb"),
                ("not-free", "all")
            ])
        );
        assert_eq!(
            ids(quotas.select(
                "b.default",
                "m",
                headers(&[("x-tier", "free"), ("x-team", "ops")])
            )),
            pairs(&[("default", "all")])
        );
        // Another model has no per-model quota: the service quota applies.
        assert_eq!(
            ids(quotas.select("b.default", "other", headers(&[]))),
            pairs(&[("service", "all")])
        );
        assert!(quotas.select("c.default", "m", headers(&[])).is_empty());
    }
}
