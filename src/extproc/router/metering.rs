//! Metering and refusals: every answer is recorded once (metrics and the token-cost
//! dynamic metadata), the gateway's own refusals included.

use super::*;

impl RouterStream {
    /// Records metrics and returns the token-cost metadata for a finished response.
    pub(super) fn finish(&mut self) -> Option<envoy_types::pb::google::protobuf::Struct> {
        self.record(None)
    }

    /// `cut`: the error type of a response that ended before its end was seen.
    pub(super) fn record(
        &mut self,
        cut: Option<&str>,
    ) -> Option<envoy_types::pb::google::protobuf::Struct> {
        self.finished = true;
        let (state, resp) = (self.state.as_ref()?, self.response.as_ref()?);
        let usage = resp
            .translator
            .as_ref()
            .map(|t| t.usage())
            .unwrap_or_default();
        let attempt = lock(&state.attempt).clone();
        let target = attempt.as_ref().map(|a| &a.target);
        let override_model = target.and_then(|t| t.model_name_override.clone());
        // Labels come from the configuration, not the client: a rule matching a regular
        // expression would otherwise let random model names grow /metrics without bound.
        let original_model = state.config.model_label(&state.request.model, target);
        let succeeded = (200..300).contains(&resp.head.status);
        let request_model = override_model
            .clone()
            .unwrap_or_else(|| original_model.clone());
        // The provider's own name, capped by the metrics; without one, the request's label.
        // The metadata keeps the exact value.
        let provider_model = resp
            .translator
            .as_ref()
            .and_then(|t| t.response_model().map(str::to_string));
        let response_label = provider_model
            .clone()
            .unwrap_or_else(|| request_model.clone());
        let response_model = provider_model
            .or(override_model)
            .unwrap_or_else(|| state.request.model.clone());
        let error_type = match cut {
            Some(kind) => kind.to_string(),
            None if succeeded => String::new(),
            None => resp.head.status.to_string(),
        };
        let completed = Completed {
            operation: state.request.api.operation(),
            provider: resp.provider.clone(),
            request_model: request_model.clone(),
            response_model: response_label,
            original_model,
            usage,
            duration: self.started.elapsed(),
            time_to_first_token: resp.first_output.map(|t| t - self.started),
            error_type,
            consumer: self.quota.metric_consumer(),
        };
        self.shared.metrics.record(&completed);
        let answered = request_log::Answered {
            request_id: &self.request_id,
            model: &completed.original_model,
            backend: target.map_or("", |t| t.backend.name.as_str()),
            status: resp.head.status,
        };
        request_log::log(&answered, &completed);
        if let Some(mut span) = self.span.take() {
            let asked = target
                .and_then(|t| t.model_name_override.as_deref())
                .unwrap_or(&state.request.model);
            span.name_models(asked, succeeded.then_some(response_model.as_str()));
            span.end(&completed, answered.status);
        }
        let mut entries: Vec<(String, Kind)> = Vec::new();
        if let Some(a) = &attempt {
            entries.push((
                "backend_name".into(),
                Kind::StringValue(a.target.backend.name.clone()),
            ));
            if let Some(o) = &a.target.model_name_override {
                entries.push(("model_name_override".into(), Kind::StringValue(o.clone())));
            }
            if let Some(route) = state
                .config
                .routes
                .iter()
                .find(|r| r.name == a.target.route)
            {
                let model = a
                    .target
                    .model_name_override
                    .as_deref()
                    .unwrap_or(&state.request.model);
                for cost in &route.costs {
                    let value = cost_value(&cost.kind, &usage, model, &a.target.backend.name)
                        .unwrap_or_else(|e| {
                            tracing::warn!(request_id = %self.request_id, key = %cost.metadata_key, "{e}; reported as 0");
                            0
                        });
                    entries.push((cost.metadata_key.clone(), Kind::NumberValue(value as f64)));
                }
                entries.extend(self.quota_charges(state, &a.target, &usage));
            }
        }
        entries.push(("response_model".into(), Kind::StringValue(response_model)));
        messages::metadata(entries)
    }

    /// Answers the client with `error` before its model is known.
    pub(super) fn reject(&self, error: ApiError) -> ProcessingResponse {
        self.refuse(error, None)
    }

    /// Answers the client with `error`, metered like every answer: once, with its
    /// `error.type`, whether or not a backend was chosen.
    pub(super) fn refuse(
        &self,
        error: ApiError,
        request: Option<Refused<'_>>,
    ) -> ProcessingResponse {
        match error.status() {
            500.. => {
                tracing::error!(request_id = %self.request_id, status = error.status(), "{error}")
            }
            _ => tracing::debug!(request_id = %self.request_id, status = error.status(), "{error}"),
        }
        let (original_model, request_model, provider) = match &request {
            Some(r) => {
                let label = r.config.model_label(r.model, r.target);
                let requested = r
                    .target
                    .and_then(|t| t.model_name_override.clone())
                    .unwrap_or_else(|| label.clone());
                let provider = r.target.map_or("", |t| t.backend.schema.provider_name());
                (label, requested, provider)
            }
            None => (String::new(), String::new(), ""),
        };
        let completed = Completed {
            operation: self.api.map_or(UNKNOWN_OPERATION, ApiKind::operation),
            provider: provider.to_string(),
            response_model: request_model.clone(),
            request_model,
            original_model,
            usage: Usage::default(),
            duration: self.started.elapsed(),
            time_to_first_token: None,
            error_type: error.status().to_string(),
            consumer: self.quota.metric_consumer(),
        };
        self.shared.metrics.record(&completed);
        let answered = request_log::Answered {
            request_id: &self.request_id,
            model: &completed.original_model,
            backend: request
                .as_ref()
                .and_then(|r| r.target)
                .map_or("", |t| t.backend.name.as_str()),
            status: error.status(),
        };
        request_log::log(&answered, &completed);
        if let Some(mut span) = self.span.take() {
            if let Some(r) = &request {
                let asked = r.target.and_then(|t| t.model_name_override.as_deref());
                span.name_models(asked.unwrap_or(r.model), None);
            }
            span.end(&completed, answered.status);
        }
        immediate_error_for(&error, self.api.or(self.error_shape))
    }
}

/// `gen_ai.operation.name` of a request refused before its API was known (an unknown
/// path, a wrong method).
const UNKNOWN_OPERATION: &str = "unknown";

/// What is known of a request the gateway refuses after reading its model.
pub(super) struct Refused<'a> {
    pub(super) config: &'a GatewayConfig,
    pub(super) model: &'a str,
    /// The backend reference the router level chose, when it chose one.
    pub(super) target: Option<&'a BackendRefTarget>,
}

fn cost_value(
    kind: &CostKind,
    u: &Usage,
    model: &str,
    backend: &str,
) -> Result<u64, crate::quota::cost::CostError> {
    Ok(match kind {
        CostKind::Input => u.input,
        CostKind::CachedInput => u.cached_input,
        CostKind::CacheCreationInput => u.cache_creation_input,
        CostKind::Output => u.output,
        CostKind::Total => u.total,
        CostKind::Reasoning => u.reasoning,
        CostKind::Cel(cost) => return cost.evaluate(u, model, backend),
    })
}
