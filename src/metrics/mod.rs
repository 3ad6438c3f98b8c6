//! GenAI metrics with the OpenTelemetry semantic-convention names, served in the
//! Prometheus text format on the admin port (dots become underscores there, as the
//! OpenTelemetry Prometheus exporter writes them).

use std::collections::HashSet;
use std::sync::atomic::AtomicI64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::usage::Usage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: String,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    pub gen_ai_original_model: String,
    pub gen_ai_token_type: &'static str,
    /// Empty unless the consumer is a metric attribute.
    #[prometheus(flatten)]
    pub consumer: Vec<(&'static str, String)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub gen_ai_operation_name: &'static str,
    pub gen_ai_provider_name: String,
    pub gen_ai_request_model: String,
    pub gen_ai_response_model: String,
    pub gen_ai_original_model: String,
    pub error_type: String,
    #[prometheus(flatten)]
    pub consumer: Vec<(&'static str, String)>,
}

/// What one finished request reports.
#[derive(Debug, Clone)]
pub struct Completed {
    pub operation: &'static str,
    pub provider: String,
    pub request_model: String,
    pub response_model: String,
    pub original_model: String,
    pub usage: Usage,
    pub duration: Duration,
    pub time_to_first_token: Option<Duration>,
    /// Empty when the request succeeded, else the error kind (e.g. the HTTP status).
    pub error_type: String,
    /// The consumer, when it is a metric attribute (`--consumer-metric-attribute`).
    pub consumer: Option<String>,
}

pub struct Metrics {
    registry: Registry,
    token_usage: Family<TokenLabels, Histogram>,
    request_duration: Family<RequestLabels, Histogram>,
    time_to_first_token: Family<RequestLabels, Histogram>,
    time_per_output_token: Family<RequestLabels, Histogram>,
    in_flight: Gauge<i64, AtomicI64>,
    response_models: BoundedValues,
    consumers: BoundedValues,
}

/// Most distinct `gen_ai.response.model` values reported; later ones are `other`. The
/// provider chooses them (a dated version per model, or an echo of any name a regular
/// expression let through), so only a cap keeps the series bounded.
pub const MAX_RESPONSE_MODELS: usize = 100;

/// Most distinct consumers reported (OpenTelemetry's `user.id`); later ones are `other`.
pub const MAX_CONSUMERS: usize = 1000;
const CONSUMER_LABEL: &str = "user_id";

/// A label whose values come from outside the configuration: the first `cap` distinct
/// values are kept, the rest reported as `other`.
struct BoundedValues {
    seen: Mutex<HashSet<String>>,
    cap: usize,
}

impl BoundedValues {
    fn new(cap: usize) -> Self {
        BoundedValues {
            seen: Mutex::new(HashSet::new()),
            cap,
        }
    }

    fn label(&self, value: &str) -> String {
        let mut seen = crate::sync::lock(&self.seen);
        if seen.contains(value) {
            return value.to_string();
        }
        if seen.len() < self.cap {
            seen.insert(value.to_string());
            return value.to_string();
        }
        crate::config::OTHER_LABEL.to_string()
    }
}

fn token_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 14))
}

fn seconds_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ])
}

fn per_token_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let token_usage = Family::<TokenLabels, Histogram>::new_with_constructor(
            token_buckets as fn() -> Histogram,
        );
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(
            seconds_buckets as fn() -> Histogram,
        );
        let time_to_first_token = Family::<RequestLabels, Histogram>::new_with_constructor(
            seconds_buckets as fn() -> Histogram,
        );
        let time_per_output_token = Family::<RequestLabels, Histogram>::new_with_constructor(
            per_token_buckets as fn() -> Histogram,
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "gen_ai_client_token_usage",
            "Number of tokens used per request (gen_ai.client.token.usage)",
            token_usage.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "Time to last byte of the LLM response (gen_ai.server.request.duration)",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to the first output chunk of a stream (gen_ai.server.time_to_first_token)",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first (gen_ai.server.time_per_output_token)",
            Unit::Seconds,
            time_per_output_token.clone(),
        );
        registry.register(
            "llm_extproc_requests_in_flight",
            "Client requests whose per-request state is held by the sidecar",
            in_flight.clone(),
        );
        registry.register(
            "llm_extproc_credential_refresh_failures",
            "Failed fetches of a policy's short-lived provider credential (the token is kept while valid)",
            crate::auth::token_cache::refresh_failures().clone(),
        );
        Metrics {
            registry,
            token_usage,
            request_duration,
            time_to_first_token,
            time_per_output_token,
            in_flight,
            response_models: BoundedValues::new(MAX_RESPONSE_MODELS),
            consumers: BoundedValues::new(MAX_CONSUMERS),
        }
    }
}

impl Metrics {
    /// Records one answered request. The model names must already be bounded by the
    /// configuration (see `GatewayConfig::model_label`), except the response model, which
    /// is capped here.
    pub fn record(&self, c: &Completed) {
        let response_model = self.response_models.label(&c.response_model);
        let consumer: Vec<(&'static str, String)> = c
            .consumer
            .as_deref()
            .map(|v| vec![(CONSUMER_LABEL, self.consumers.label(v))])
            .unwrap_or_default();
        let request = RequestLabels {
            gen_ai_operation_name: c.operation,
            gen_ai_provider_name: c.provider.clone(),
            gen_ai_request_model: c.request_model.clone(),
            gen_ai_response_model: response_model.clone(),
            gen_ai_original_model: c.original_model.clone(),
            error_type: c.error_type.clone(),
            consumer: consumer.clone(),
        };
        self.request_duration
            .get_or_create(&request)
            .observe(c.duration.as_secs_f64());
        if !c.error_type.is_empty() {
            return;
        }
        if let Some(ttft) = c.time_to_first_token {
            self.time_to_first_token
                .get_or_create(&request)
                .observe(ttft.as_secs_f64());
            if c.usage.output > 1 {
                let rest = c.duration.saturating_sub(ttft).as_secs_f64();
                self.time_per_output_token
                    .get_or_create(&request)
                    .observe(rest / (c.usage.output - 1) as f64);
            }
        }
        let tokens = [
            ("input", c.usage.input),
            ("cached_input", c.usage.cached_input),
            ("cache_creation_input", c.usage.cache_creation_input),
            ("output", c.usage.output),
            ("reasoning", c.usage.reasoning),
        ];
        for (kind, count) in tokens {
            // Input and output are always reported; the detail kinds only when present.
            if count == 0 && !matches!(kind, "input" | "output") {
                continue;
            }
            let labels = TokenLabels {
                gen_ai_operation_name: c.operation,
                gen_ai_provider_name: c.provider.clone(),
                gen_ai_request_model: c.request_model.clone(),
                gen_ai_response_model: response_model.clone(),
                gen_ai_original_model: c.original_model.clone(),
                gen_ai_token_type: kind,
                consumer: consumer.clone(),
            };
            self.token_usage
                .get_or_create(&labels)
                .observe(count as f64);
        }
    }

    /// The Prometheus text exposition, with the in-flight count read now.
    pub fn encode(&self, in_flight: usize) -> String {
        self.in_flight.set(in_flight as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("failed to encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(response_model: String) -> Completed {
        Completed {
            operation: "chat",
            provider: "openai".into(),
            request_model: "m".into(),
            response_model,
            original_model: "m".into(),
            usage: Usage::default(),
            duration: Duration::from_millis(5),
            time_to_first_token: None,
            error_type: String::new(),
            consumer: None,
        }
    }

    #[test]
    fn the_consumer_is_a_label_only_when_given() {
        let metrics = Metrics::default();
        metrics.record(&completed("r".into()));
        assert!(!metrics.encode(0).contains("user_id"));
        metrics.record(&Completed {
            consumer: Some("alice".into()),
            ..completed("r".into())
        });
        let text = metrics.encode(0);
        assert!(
            text.contains("gen_ai_token_type=\"input\",user_id=\"alice\"}"),
            "{text}"
        );
    }

    #[test]
    fn response_models_past_the_cap_are_other() {
        let metrics = Metrics::default();
        for i in 0..MAX_RESPONSE_MODELS * 3 {
            metrics.record(&completed(format!("model-{i}")));
        }
        let text = metrics.encode(0);
        let series = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}_count{{")))
                .count()
        };
        assert_eq!(
            series("gen_ai_server_request_duration_seconds"),
            MAX_RESPONSE_MODELS + 1
        );
        assert!(text.contains("gen_ai_response_model=\"other\""));
        assert!(text.contains("gen_ai_response_model=\"model-0\""));
        // A value seen before the cap keeps its own series.
        metrics.record(&completed("model-0".into()));
        assert_eq!(
            series("gen_ai_server_request_duration_seconds"),
            MAX_RESPONSE_MODELS + 1
        );
    }
}
