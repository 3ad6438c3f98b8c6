//! The upstream-level stream: one per upstream attempt, after Envoy picked the endpoint.
//!
//! Envoy hands over the endpoint's metadata (`request_attributes`), which names the
//! backend reference this attempt serves. From the request state the router level left,
//! this builds the provider request for that backend: path, body, credential. Everything
//! is answered in the request-headers phase; the body is replaced there when the schema
//! changes it (`CONTINUE_AND_REPLACE`), and Envoy is told the new length through dynamic
//! metadata that the `header_mutation` filter after this one turns into `content-length`.

use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse;
use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};

use super::attempt;
use super::messages::{
    self, attribute, immediate_error, immediate_error_for, metadata_string, Reply,
};
use super::store::REQUEST_KEY_METADATA;
use super::Shared;
use crate::api::ApiError;
use crate::config::{BackendRefTarget, GatewayConfig};

/// Endpoint metadata attribute naming the backend reference (Envoy AI Gateway's key).
pub const BACKEND_REF_ATTRIBUTE: &str =
    "xds.upstream_host_metadata.filter_metadata['aigateway.envoy.io']['per_route_rule_backend_name']";
/// Endpoint metadata attribute naming the backend (`name.namespace`) whose host this is.
pub const BACKEND_NAME_ATTRIBUTE: &str =
    "xds.upstream_host_metadata.filter_metadata['aigateway.envoy.io']['backend_name']";

/// Answers an attempt's request headers. `attributes` are the `request_attributes` Envoy
/// sent (on the `ProcessingRequest`, not the deprecated field on the headers), and
/// `metadata` the forwarded `io.envoy.ai_gateway` dynamic metadata, which carries the key
/// of the request's state. (A header cannot carry it: what an upstream filter does to
/// the request headers is still there on the next attempt, so a removed header would be
/// gone on the retry. Verified on Envoy 1.40.)
pub fn request_headers(
    shared: &Shared,
    attributes: &HashMap<String, Struct>,
    metadata: Option<&Metadata>,
) -> ProcessingResponse {
    let key = metadata
        .and_then(|m| metadata_string(m, REQUEST_KEY_METADATA))
        .and_then(|k| k.parse::<u64>().ok());
    let Some(state) = key.and_then(|k| shared.store.get(k)) else {
        // Without the router-level state the request was never validated: refuse it.
        return immediate_error(&ApiError::Internal(
            "no gateway state for this upstream attempt".into(),
        ));
    };
    let ref_key = attribute(attributes, BACKEND_REF_ATTRIBUTE);
    let host_backend = attribute(attributes, BACKEND_NAME_ATTRIBUTE);
    let Some(target) = target_for(shared, &state.config, ref_key, host_backend) else {
        tracing::error!(request_id = %state.request_id, ref_key = ref_key.unwrap_or("<none>"),
            backend = host_backend.unwrap_or("<none>"), "endpoint metadata names no configured backend");
        return immediate_error(&ApiError::Internal(
            "the chosen endpoint names no configured backend".into(),
        ));
    };
    let backend_name = target.backend.name.clone();
    let prepared = match attempt::prepare(&state, target) {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(request_id = %state.request_id, backend = %backend_name, status = error.status(), "{error}");
            return immediate_error_for(&error, Some(state.request.api));
        }
    };
    let mut reply = Reply {
        headers: prepared.headers,
        ..Default::default()
    };
    if let Some(body) = prepared.body {
        reply.metadata = messages::metadata([(
            "content_length".to_string(),
            Kind::StringValue(body.len().to_string()),
        )]);
        reply.headers.remove("content-length");
        reply.body = Some(body);
        reply.replace_in_header_phase = true;
    }
    reply.request_headers()
}

/// The backend reference this attempt serves. The reference key is positional, so while a
/// reload reaches the sidecar and Envoy at different moments it may name another backend:
/// the credential must always be the one of the backend whose host Envoy picked, so the
/// reference is only used when its backend is that host's.
fn target_for(
    shared: &Shared,
    request_config: &GatewayConfig,
    ref_key: Option<&str>,
    host_backend: Option<&str>,
) -> Option<BackendRefTarget> {
    let current = shared.config.load();
    let by_ref = ref_key.and_then(|k| {
        [
            request_config.backend_refs.get(k),
            current.backend_refs.get(k),
        ]
        .into_iter()
        .flatten()
        .find(|t| host_backend.is_none_or(|b| t.backend.name == b))
        .cloned()
    });
    by_ref.or_else(|| {
        // The reference changed meaning: serve the host's backend without reference settings.
        let name = host_backend?;
        let backend = request_config
            .backends
            .get(name)
            .or_else(|| current.backends.get(name))?
            .clone();
        tracing::warn!(backend = name, "the endpoint's backend reference changed in a reload; serving its backend without the reference's settings");
        Some(BackendRefTarget {
            header_mutation: backend.header_mutation.clone(),
            body_mutation: backend.body_mutation.clone(),
            backend,
            model_name_override: None,
            route: String::new(),
            rule_index: 0,
        })
    })
}
