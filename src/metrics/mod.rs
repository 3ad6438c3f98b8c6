//! GenAI metrics with the OpenTelemetry semantic-convention names, recorded through the
//! OpenTelemetry metrics API. They are read two ways: pulled in the Prometheus text format
//! on the admin port (by OpenTelemetry's Prometheus exporter: dots become underscores,
//! seconds get `_seconds`, counters `_total`), and pushed over OTLP when the `OTEL_*`
//! variables ask (see [`crate::telemetry`]).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::metrics::{Gauge, Histogram, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder as _, TextEncoder};

use crate::usage::Usage;

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
    /// Held: dropped, it shuts down and the readers see nothing.
    _provider: SdkMeterProvider,
    registry: prometheus::Registry,
    token_usage: Histogram<u64>,
    request_duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
    time_per_output_token: Histogram<f64>,
    in_flight: Gauge<i64>,
    response_models: BoundedValues,
    consumers: BoundedValues,
}

/// Most distinct `gen_ai.response.model` values reported; later ones are `other`. The
/// provider chooses them (a dated version per model, or an echo of any name a regular
/// expression let through), so only a cap keeps the series bounded.
pub const MAX_RESPONSE_MODELS: usize = 100;

/// Most distinct consumers reported (OpenTelemetry's `user.id`); later ones are `other`.
pub const MAX_CONSUMERS: usize = 1000;
/// `user_id` in the Prometheus exposition.
const CONSUMER_ATTRIBUTE: &str = "user.id";

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

fn token_buckets() -> Vec<f64> {
    // 1, 4, 16, ... 4^13.
    (0..14).map(|i| 4f64.powi(i)).collect()
}

const SECONDS_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

const PER_TOKEN_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(crate::telemetry::take_metric_reader())
    }
}

impl Metrics {
    /// The metrics, pulled by the admin port's /metrics and, given `push`, pushed too.
    fn new(push: Option<crate::telemetry::PushReader>) -> Self {
        let registry = prometheus::Registry::new();
        // The exposition keeps the names and labels it had before OpenTelemetry: no
        // `otel_scope_*` labels and no `target_info` series.
        let pull = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build();
        let mut builder = SdkMeterProvider::builder();
        match pull {
            Ok(reader) => builder = builder.with_reader(reader),
            Err(e) => tracing::error!("metrics are not served on /metrics: {e}"),
        }
        let pushed = push.is_some();
        if let Some(reader) = push {
            builder = builder
                .with_reader(reader)
                .with_resource(crate::telemetry::resource());
        }
        let provider = builder.build();
        if pushed {
            // Shut down at exit, which pushes the last interval's points.
            crate::telemetry::flush_at_exit(provider.clone());
        }
        let meter = provider.meter(env!("CARGO_PKG_NAME"));
        let token_usage = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of tokens used per request (gen_ai.client.token.usage)")
            .with_boundaries(token_buckets())
            .build();
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let request_duration = seconds(
            "gen_ai.server.request.duration",
            "Time to last byte of the LLM response (gen_ai.server.request.duration)",
            &SECONDS_BUCKETS,
        );
        let time_to_first_token = seconds(
            "gen_ai.server.time_to_first_token",
            "Time to the first output chunk of a stream (gen_ai.server.time_to_first_token)",
            &SECONDS_BUCKETS,
        );
        let time_per_output_token = seconds(
            "gen_ai.server.time_per_output_token",
            "Time per output token after the first (gen_ai.server.time_per_output_token)",
            &PER_TOKEN_BUCKETS,
        );
        let in_flight = meter
            .i64_gauge("llm_extproc.requests_in_flight")
            .with_description("Client requests whose per-request state is held by the sidecar")
            .build();
        // Read when the metrics are collected: the token tasks count, the meter reports.
        meter
            .u64_observable_counter("llm_extproc.credential_refresh_failures")
            .with_description(
                "Failed fetches of a policy's short-lived provider credential (the token is kept while valid)",
            )
            .with_callback(|observer| {
                let failures = crate::sync::lock(crate::auth::token_cache::refresh_failures());
                for (labels, count) in failures.iter() {
                    observer.observe(
                        *count,
                        &[
                            KeyValue::new("policy", labels.policy.clone()),
                            KeyValue::new("policy_type", labels.policy_type.clone()),
                        ],
                    );
                }
            })
            .build();
        Metrics {
            _provider: provider,
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

    /// Records one answered request. The model names must already be bounded by the
    /// configuration (see `GatewayConfig::model_label`), except the response model, which
    /// is capped here.
    pub fn record(&self, c: &Completed) {
        let response_model = self.response_models.label(&c.response_model);
        // The token usage's attributes, then the request's (`error.type` for `gen_ai.token.type`).
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", c.operation),
            KeyValue::new("gen_ai.provider.name", c.provider.clone()),
            KeyValue::new("gen_ai.request.model", c.request_model.clone()),
            KeyValue::new("gen_ai.response.model", response_model),
            KeyValue::new("gen_ai.original.model", c.original_model.clone()),
        ];
        if let Some(consumer) = c.consumer.as_deref() {
            attributes.push(KeyValue::new(
                CONSUMER_ATTRIBUTE,
                self.consumers.label(consumer),
            ));
        }
        attributes.push(KeyValue::new("error.type", c.error_type.clone()));
        self.request_duration
            .record(c.duration.as_secs_f64(), &attributes);
        if !c.error_type.is_empty() {
            return;
        }
        if let Some(ttft) = c.time_to_first_token {
            self.time_to_first_token
                .record(ttft.as_secs_f64(), &attributes);
            if c.usage.output > 1 {
                let rest = c.duration.saturating_sub(ttft).as_secs_f64();
                self.time_per_output_token
                    .record(rest / (c.usage.output - 1) as f64, &attributes);
            }
        }
        let tokens = [
            ("input", c.usage.input),
            ("cached_input", c.usage.cached_input),
            ("cache_creation_input", c.usage.cache_creation_input),
            ("output", c.usage.output),
            ("reasoning", c.usage.reasoning),
        ];
        let last = attributes.len() - 1;
        for (kind, count) in tokens {
            // Input and output are always reported; the detail kinds only when present.
            if count == 0 && !matches!(kind, "input" | "output") {
                continue;
            }
            attributes[last] = KeyValue::new("gen_ai.token.type", kind);
            self.token_usage.record(count, &attributes);
        }
    }

    /// The Prometheus text exposition, with the in-flight count read now.
    pub fn encode(&self, in_flight: usize) -> String {
        self.in_flight
            .record(i64::try_from(in_flight).unwrap_or(i64::MAX), &[]);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("failed to encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
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

#[cfg(test)]
mod exposition_tests {
    use super::*;

    #[test]
    fn the_exposition_keeps_its_names_and_labels() {
        let metrics = Metrics::default();
        metrics.record(&Completed {
            operation: "chat",
            provider: "openai".into(),
            request_model: "m".into(),
            response_model: "m-2025".into(),
            original_model: "m".into(),
            usage: Usage {
                input: 7,
                output: 3,
                total: 10,
                ..Usage::default()
            },
            duration: Duration::from_millis(30),
            time_to_first_token: Some(Duration::from_millis(10)),
            error_type: String::new(),
            consumer: None,
        });
        let labels = "gen_ai_operation_name=\"chat\",gen_ai_original_model=\"m\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"m\",gen_ai_response_model=\"m-2025\"";
        let text = metrics.encode(3);
        for line in [
            "# TYPE gen_ai_client_token_usage histogram".to_string(),
            format!("gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"input\"}} 7"),
            format!("gen_ai_client_token_usage_bucket{{{labels},gen_ai_token_type=\"output\",le=\"4\"}} 1"),
            "# TYPE gen_ai_server_request_duration_seconds histogram".to_string(),
            format!("gen_ai_server_request_duration_seconds_count{{error_type=\"\",{labels}}} 1"),
            format!("gen_ai_server_time_to_first_token_seconds_count{{error_type=\"\",{labels}}} 1"),
            format!("gen_ai_server_time_per_output_token_seconds_count{{error_type=\"\",{labels}}} 1"),
            "llm_extproc_requests_in_flight 3".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        assert!(
            !text.contains("otel_scope") && !text.contains("target_info"),
            "{text}"
        );
    }
}
