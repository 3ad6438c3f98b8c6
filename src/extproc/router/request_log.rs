//! One log event per answered request, under the `llm_extproc::request` target: with
//! `--log-format json` a structured line a log pipeline can index. It names the request,
//! never its content or credentials: the model, backend and provider come from the
//! configuration or the provider's answer, the rest are numbers.

use std::time::Duration;

use crate::metrics::Completed;

/// The target operators filter on (`RUST_LOG=llm_extproc::request=off` silences it).
pub const TARGET: &str = "llm_extproc::request";

/// What the request log says beyond the metrics' attributes.
pub(super) struct Answered<'a> {
    pub(super) request_id: &'a str,
    /// The model the client asked for (bounded like the metrics' label).
    pub(super) model: &'a str,
    /// Empty when no backend was chosen.
    pub(super) backend: &'a str,
    pub(super) status: u16,
}

pub(super) fn log(answered: &Answered<'_>, c: &Completed) {
    // Checked first: at `warn` (the benchmark's level) the fields are never built.
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let ttft_ms = c.time_to_first_token.map(millis);
    tracing::info!(
        target: TARGET,
        request_id = answered.request_id,
        operation = c.operation,
        model = answered.model,
        response_model = c.response_model.as_str(),
        backend = answered.backend,
        provider = c.provider.as_str(),
        status = answered.status,
        error_type = c.error_type.as_str(),
        input_tokens = c.usage.input,
        cached_input_tokens = c.usage.cached_input,
        output_tokens = c.usage.output,
        reasoning_tokens = c.usage.reasoning,
        total_tokens = c.usage.total,
        latency_ms = millis(c.duration),
        time_to_first_token_ms = ttft_ms,
        "request"
    );
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
