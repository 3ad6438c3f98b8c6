//! OpenTelemetry traces: off unless the standard `OTEL_*` variables ask for an OTLP
//! export, and then one span per request (see [`span`]).

pub mod span;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
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
    #[error("OTEL_TRACES_EXPORTER={0}: only `otlp` and `none` are supported")]
    Exporter(String),
    #[error("{name}={value}: only `http/protobuf` is supported")]
    Protocol { name: &'static str, value: String },
    #[error("cannot build the OTLP trace exporter: {0}")]
    Build(String),
}

/// Whether the environment asks for traces over OTLP: `OTEL_TRACES_EXPORTER=otlp`, or an
/// OTLP endpoint with no exporter named. `OTEL_SDK_DISABLED=true` and
/// `OTEL_TRACES_EXPORTER=none` turn them off.
fn traces_wanted(var: impl Fn(&str) -> Option<String>) -> Result<bool, TelemetryError> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    let wanted = match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        Some("otlp") => true,
        Some("none") => false,
        Some(other) if !other.is_empty() => return Err(TelemetryError::Exporter(other.into())),
        _ => {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    };
    if wanted {
        // The exporter would otherwise fall back to another protocol without a word.
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            match var(name) {
                Some(value) if value.trim() != "http/protobuf" => {
                    return Err(TelemetryError::Protocol { name, value })
                }
                _ => {}
            }
        }
    }
    Ok(wanted)
}

/// Starts the trace export when the environment asks for it. Called before the async
/// runtime starts: the exporter's blocking HTTP client cannot be built inside it.
pub fn init() -> Result<bool, TelemetryError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if !traces_wanted(var)? {
        return Ok(false);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError::Build(e.to_string()))?;
    let mut resource = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(env!("CARGO_PKG_NAME"));
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    let _ = TRACER.set(tracer);
    let _ = PROVIDER.set(provider);
    Ok(true)
}

/// Sends the spans still queued. Called after the runtime has stopped.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!("flushing traces: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(vars: &[(&str, &str)]) -> Result<bool, TelemetryError> {
        traces_wanted(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
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
            Err(TelemetryError::Exporter(_))
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
