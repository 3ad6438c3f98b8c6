//! OpenTelemetry exports: off unless the standard `OTEL_*` variables ask for OTLP. Traces
//! are then one span per request (see [`span`]); metrics are pushed besides the pull on
//! /metrics (see [`crate::metrics`]).

mod answer;
pub mod content;
pub mod span;

use std::sync::{Mutex, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// The tracer, set once at start when traces are exported. Unset, a request pays one
/// load of this cell.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{name}={value}: only `otlp` and `none` are supported (and `prometheus` for metrics, always served on /metrics)")]
    Exporter { name: String, value: String },
    #[error("{name}={value}: only `http/protobuf` is supported")]
    Protocol { name: String, value: String },
    #[error("cannot build the OTLP trace exporter: {0}")]
    Build(String),
}

/// A signal OpenTelemetry's variables name.
#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }
}

/// Whether the environment asks for `signal` over OTLP: `OTEL_{SIGNAL}_EXPORTER=otlp`, or
/// an OTLP endpoint with no exporter named. `OTEL_SDK_DISABLED=true` and `none` turn it
/// off; for metrics, `prometheus` names the pull on /metrics, which is always served.
fn export_wanted(
    var: impl Fn(&str) -> Option<String>,
    signal: Signal,
) -> Result<bool, TelemetryError> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    let exporter_var = format!("OTEL_{}_EXPORTER", signal.upper());
    let wanted = match var(&exporter_var) {
        Some(list) => {
            let mut otlp = false;
            for name in list.split(',').map(str::trim) {
                match (name, signal) {
                    ("otlp", _) => otlp = true,
                    ("none", _) | ("prometheus", Signal::Metrics) => {}
                    _ => {
                        return Err(TelemetryError::Exporter {
                            name: exporter_var,
                            value: list.clone(),
                        })
                    }
                }
            }
            otlp
        }
        None => {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var(&format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.upper())).is_some()
        }
    };
    if wanted {
        // The exporter would otherwise fall back to another protocol without a word.
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
            format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.upper()),
        ] {
            match var(&name) {
                Some(value) if value.trim() != "http/protobuf" => {
                    return Err(TelemetryError::Protocol { name, value })
                }
                _ => {}
            }
        }
    }
    Ok(wanted)
}

/// The reader pushing the metrics over OTLP.
pub type PushReader = PeriodicReader<opentelemetry_otlp::MetricExporter>;

/// Built by [`init`], taken by the metrics when the server makes them.
static METRIC_READER: Mutex<Option<PushReader>> = Mutex::new(None);
static METER_PROVIDER: OnceLock<SdkMeterProvider> = OnceLock::new();

pub fn take_metric_reader() -> Option<PushReader> {
    crate::sync::lock(&METRIC_READER).take()
}

/// Notes the meter provider that pushes, for [`shutdown`] to flush.
pub fn flush_at_exit(provider: SdkMeterProvider) {
    let _ = METER_PROVIDER.set(provider);
}

/// `service.name` is `llm-extproc` unless `OTEL_SERVICE_NAME` (or
/// `OTEL_RESOURCE_ATTRIBUTES`) names it.
pub fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
    }
    resource.build()
}

/// What [`init`] started.
pub struct Exports {
    pub traces: bool,
    pub metrics: bool,
}

/// Starts the OTLP exports the environment asks for. Called before the async runtime
/// starts: the exporters' blocking HTTP client cannot be built inside it.
pub fn init() -> Result<Exports, TelemetryError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let traces = export_wanted(var, Signal::Traces)?;
    let metrics = export_wanted(var, Signal::Metrics)?;
    if traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TelemetryError::Build(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        let _ = TRACER.set(provider.tracer(env!("CARGO_PKG_NAME")));
        let _ = PROVIDER.set(provider);
    }
    if metrics {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TelemetryError::Build(e.to_string()))?;
        // The interval is OTEL_METRIC_EXPORT_INTERVAL's (60 s by default).
        *crate::sync::lock(&METRIC_READER) = Some(PeriodicReader::builder(exporter).build());
    }
    Ok(Exports { traces, metrics })
}

/// Sends what is still queued. Called after the runtime has stopped.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!("flushing traces: {e}");
        }
    }
    if let Some(provider) = METER_PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!("flushing metrics: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn wanted(vars: &[(&str, &str)]) -> Result<bool, TelemetryError> {
        export_wanted(lookup(vars), Signal::Traces)
    }

    fn metrics_wanted(vars: &[(&str, &str)]) -> Result<bool, TelemetryError> {
        export_wanted(lookup(vars), Signal::Metrics)
    }

    #[test]
    fn metrics_are_pushed_when_asked_and_prometheus_is_the_pull() {
        assert!(!metrics_wanted(&[]).unwrap());
        assert!(!metrics_wanted(&[("OTEL_METRICS_EXPORTER", "prometheus")]).unwrap());
        assert!(metrics_wanted(&[("OTEL_METRICS_EXPORTER", "prometheus, otlp")]).unwrap());
        assert!(metrics_wanted(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c")]).unwrap());
        // The traces' endpoint does not push metrics.
        assert!(!metrics_wanted(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c")]).unwrap());
        assert!(matches!(
            wanted(&[("OTEL_TRACES_EXPORTER", "prometheus")]),
            Err(TelemetryError::Exporter { .. })
        ));
    }

    #[test]
    fn traces_are_off_unless_asked_for() {
        assert!(!wanted(&[]).unwrap());
        assert!(wanted(&[("OTEL_TRACES_EXPORTER", "otlp")]).unwrap());
        assert!(wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap());
        assert!(wanted(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )])
        .unwrap());
        assert!(!wanted(&[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
        ])
        .unwrap());
        assert!(!wanted(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "otlp")
        ])
        .unwrap());
    }

    #[test]
    fn what_cannot_be_exported_is_refused() {
        assert!(matches!(
            wanted(&[("OTEL_TRACES_EXPORTER", "zipkin")]),
            Err(TelemetryError::Exporter { .. })
        ));
        assert!(matches!(
            wanted(&[
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ]),
            Err(TelemetryError::Protocol { .. })
        ));
        assert!(wanted(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        ])
        .unwrap());
    }
}
