//! A client for the admin interface of the Envoy that `run` started: whether it is live
//! (and is that run's Envoy), and what its circuit breakers refused.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::bootstrap::{EnvoyAdmin, RUN_TOKEN_METADATA};

/// One admin call should take microseconds; a wedged Envoy must not hold up a scrape.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct EnvoyAdminClient {
    client: reqwest::Client,
    base: String,
}

/// An Envoy counter of requests or connections a cluster's circuit breaker refused.
#[derive(Debug, PartialEq)]
pub struct Overflow {
    pub cluster: String,
    /// Envoy's counter name, e.g. `upstream_rq_pending_overflow`.
    pub counter: String,
    pub value: u64,
}

#[derive(Deserialize)]
struct Stats {
    stats: Vec<Stat>,
}

#[derive(Deserialize)]
struct Stat {
    name: String,
    #[serde(default)]
    value: Option<u64>,
}

impl EnvoyAdminClient {
    pub fn new(admin: &EnvoyAdmin) -> reqwest::Result<Self> {
        let (builder, base) = match admin {
            EnvoyAdmin::Socket(path) => (
                reqwest::Client::builder().unix_socket(path.clone()),
                "http://envoy-admin".to_string(),
            ),
            EnvoyAdmin::Port(port) => (
                reqwest::Client::builder(),
                format!("http://127.0.0.1:{port}"),
            ),
        };
        Ok(EnvoyAdminClient {
            client: builder.timeout(ADMIN_TIMEOUT).build()?,
            base,
        })
    }

    async fn get_json(&self, path_and_query: &str) -> Option<Value> {
        let answer = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&answer.bytes().await.ok()?).ok()
    }

    /// Whether the Envoy answering is live and carries `token` in its node metadata.
    pub async fn is_live_with_token(&self, token: &str) -> bool {
        self.get_json("/server_info").await.is_some_and(|info| {
            info["state"] == "LIVE" && info["node"]["metadata"][RUN_TOKEN_METADATA] == token
        })
    }

    /// Envoy's `cluster.<name>.upstream_*_overflow` counters; None when Envoy does not answer.
    pub async fn overflows(&self) -> Option<Vec<Overflow>> {
        let stats = self
            .get_json(r"/stats?format=json&filter=^cluster\..*\.upstream_[a-z_]*overflow$")
            .await?;
        let stats: Stats = serde_json::from_value(stats).ok()?;
        Some(stats.stats.into_iter().filter_map(overflow).collect())
    }
}

/// `cluster.<cluster>.<counter>`: a cluster name may hold dots, a counter name does not.
fn overflow(stat: Stat) -> Option<Overflow> {
    let rest = stat.name.strip_prefix("cluster.")?;
    let (cluster, counter) = rest.rsplit_once('.')?;
    Some(Overflow {
        cluster: cluster.to_string(),
        counter: counter.to_string(),
        value: stat.value?,
    })
}

/// The overflow counters as a Prometheus text-format counter family (named as its
/// samples), labelled by cluster and by Envoy's counter name.
pub fn encode_overflows(overflows: &[Overflow]) -> String {
    let mut out = String::from(
        "# HELP llm_extproc_envoy_overflow_total Requests and connections Envoy's circuit breakers refused, per cluster (Envoy's upstream_*_overflow counters).\n\
# TYPE llm_extproc_envoy_overflow_total counter\n",
    );
    for o in overflows {
        out.push_str(&format!(
            "llm_extproc_envoy_overflow_total{{cluster=\"{}\",counter=\"{}\"}} {}\n",
            escape(&o.cluster),
            escape(&o.counter),
            o.value
        ));
    }
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_split_at_the_last_dot() {
        let stat = Stat {
            name: "cluster.ns/my.route/rule/0/ab.upstream_rq_pending_overflow".into(),
            value: Some(3),
        };
        assert_eq!(
            overflow(stat),
            Some(Overflow {
                cluster: "ns/my.route/rule/0/ab".into(),
                counter: "upstream_rq_pending_overflow".into(),
                value: 3
            })
        );
        let text = encode_overflows(&[Overflow {
            cluster: "a\"b".into(),
            counter: "upstream_cx_overflow".into(),
            value: 1,
        }]);
        assert!(text.ends_with(
            "llm_extproc_envoy_overflow_total{cluster=\"a\\\"b\",counter=\"upstream_cx_overflow\"} 1\n"
        ));
    }
}
