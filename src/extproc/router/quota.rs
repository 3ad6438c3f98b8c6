//! Quota buckets at the router level: which buckets a request is checked against (set
//! in the request-body answer, read by Envoy's rate-limit filter before the request goes
//! upstream) and what the answer costs each (set in the last response answer, charged by
//! the filter when the stream is done). See [`crate::quota`].

use envoy_types::pb::envoy::config::core::v3::Metadata;

use super::*;
use crate::quota::Selected;

/// The largest `hits_addend` Envoy 1.40 accepts from a format.
const MAX_HITS: u64 = 1_000_000_000;

/// Whether an answer is the rate-limit filter's own 429 (a spent quota), which Envoy
/// marks with `x-envoy-ratelimited` and its local-reply mappers already wrote in the
/// client's API shape, rather than a provider's answer.
pub(super) fn is_quota_refusal(head: &ResponseHead, headers: Option<&HeaderMap>) -> bool {
    head.status == 429 && header(headers, "x-envoy-ratelimited").is_some()
}

/// What the router level keeps for quotas between the request and its answer.
#[derive(Default)]
pub(super) struct QuotaState {
    /// Metadata Envoy forwarded with the request headers (`jwt_authn`'s claims).
    pub(super) forwarded: Option<Metadata>,
    /// The cost keys of the buckets the request was checked against.
    checked: Vec<String>,
    /// The consumer, when it is a metric attribute.
    consumer: Option<String>,
}

impl QuotaState {
    pub(super) fn metric_consumer(&self) -> Option<String> {
        self.consumer.clone()
    }
}

impl RouterStream {
    /// Notes the consumer for the metrics, when it is a metric attribute, and on the span.
    pub(super) fn note_consumer(&mut self, state: &RequestState) {
        let identity = &self.shared.identity;
        let span = self.span.get_mut();
        if identity.metric_attribute || span.is_some() {
            let headers = Some(&state.client_headers);
            let consumer =
                identity.consumer(|name| header(headers, name), self.quota.forwarded.as_ref());
            if let (Some(span), Some(consumer)) = (span.as_mut(), consumer) {
                span.set_consumer(consumer);
            }
            if identity.metric_attribute {
                self.quota.consumer = consumer.map(str::to_string);
            }
        }
    }

    /// The buckets `target` (the backend that serves the request, as far as the router
    /// level knows it) puts the request in.
    pub(super) fn quota_checks(
        &mut self,
        state: &RequestState,
        target: Option<&BackendRefTarget>,
    ) -> Vec<(String, Kind)> {
        if state.config.quotas.is_empty() {
            return Vec::new();
        }
        let Some(target) = target.or_else(|| self.primary_target(state)) else {
            return Vec::new();
        };
        let selected = self.select(state, target);
        let quotas = &state.config.quotas;
        let mut entries = Vec::with_capacity(selected.len());
        for s in selected {
            let bucket = &quotas.buckets[s.index];
            self.quota.checked.push(bucket.cost_key.clone());
            entries.push((bucket.client_key.clone(), Kind::StringValue(s.client)));
        }
        entries
    }

    /// The charges of an answer from `target` with `usage`: its buckets' costs, and 0 for
    /// buckets the request was checked against that another backend's answer spares.
    pub(super) fn quota_charges(
        &self,
        state: &RequestState,
        target: &BackendRefTarget,
        usage: &Usage,
    ) -> Vec<(String, Kind)> {
        let quotas = &state.config.quotas;
        if quotas.is_empty() {
            return Vec::new();
        }
        let model = target
            .model_name_override
            .as_deref()
            .unwrap_or(&state.request.model);
        let mut entries = Vec::new();
        let mut charged = Vec::new();
        for s in self.select(state, target) {
            let bucket = &quotas.buckets[s.index];
            let cost = bucket
                .cost
                .evaluate(usage, model, &target.backend.name)
                .unwrap_or_else(|e| {
                    // Logged, and the answer's total charged rather than nothing.
                    tracing::warn!(request_id = %self.request_id, bucket = %bucket.id, "{e}; charged total_tokens");
                    usage.total
                });
            charged.push(bucket.cost_key.as_str());
            // Envoy 1.40 reads a number's text (`762`) as hits; a string would do too.
            // Above 10^9 it drops the descriptor (charging nothing): charge the most it takes.
            let cost = cost.min(MAX_HITS);
            entries.push((bucket.cost_key.clone(), Kind::NumberValue(cost as f64)));
            entries.push((bucket.client_key.clone(), Kind::StringValue(s.client)));
        }
        for key in &self.quota.checked {
            if !charged.contains(&key.as_str()) {
                entries.push((key.clone(), Kind::NumberValue(0.0)));
            }
        }
        entries
    }

    /// The backend reference of Envoy's first attempt, foreseen from the rules (the model
    /// header is not set yet: it is the request's model).
    fn primary_target<'s>(&self, state: &'s RequestState) -> Option<&'s BackendRefTarget> {
        let headers = Some(&state.client_headers);
        let model = state.request.model.as_str();
        let key = state.config.quotas.primary_ref(|name| {
            if name == MODEL_HEADER {
                Some(model)
            } else {
                header(headers, name)
            }
        })?;
        state.config.backend_refs.get(key)
    }

    fn select(&self, state: &RequestState, target: &BackendRefTarget) -> Vec<Selected> {
        let identity = &self.shared.identity;
        let headers = Some(&state.client_headers);
        let forwarded = self.quota.forwarded.as_ref();
        let consumer = identity.consumer(|name| header(headers, name), forwarded);
        let model = target
            .model_name_override
            .as_deref()
            .unwrap_or(&state.request.model);
        state
            .config
            .quotas
            .select(&target.backend.name, model, |name| {
                if identity.header.as_deref() == Some(name) {
                    consumer
                } else {
                    header(headers, name)
                }
            })
    }
}
