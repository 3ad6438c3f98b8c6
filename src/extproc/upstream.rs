//! The upstream-level stream: one per upstream attempt, after Envoy picked the endpoint.
//!
//! Envoy hands over the endpoint's metadata (`request_attributes`), which names the
//! backend reference this attempt serves. From the request state the router level left,
//! this builds the provider request for that backend: path, body, credential. Everything
//! is answered in the request-headers phase; the body is replaced there when the schema
//! changes it (`CONTINUE_AND_REPLACE`), and Envoy is told the new length through dynamic
//! metadata that the `header_mutation` filter after this one turns into `content-length`.

use envoy_types::pb::envoy::service::ext_proc::v3::{HttpHeaders, ProcessingResponse};
use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};

use super::messages::{self, attribute, header, immediate_error, metadata_string, Reply};
use super::store::{Attempt, REQUEST_KEY_METADATA};
use super::Shared;
use crate::api::ApiError;
use crate::auth::CLIENT_CREDENTIAL_HEADERS;

/// Endpoint metadata attribute naming the backend reference (Envoy AI Gateway's key).
pub const BACKEND_ATTRIBUTE: &str = "xds.upstream_host_metadata.filter_metadata['aigateway.envoy.io']['per_route_rule_backend_name']";
/// The same key on the cluster, when an endpoint carries none.
pub const CLUSTER_BACKEND_ATTRIBUTE: &str =
    "xds.cluster_metadata.filter_metadata['aigateway.envoy.io']['per_route_rule_backend_name']";

/// Answers an attempt's request headers. `attributes` are the `request_attributes` Envoy
/// sent (on the `ProcessingRequest`, not the deprecated field on the headers), and
/// `metadata` the forwarded `io.envoy.ai_gateway` dynamic metadata, which carries the key
/// of the request's state. (A header cannot carry it: what an upstream filter does to
/// the request headers is still there on the next attempt, so a removed header would be
/// gone on the retry. Verified on Envoy 1.40.)
pub fn request_headers(
    shared: &Shared,
    h: &HttpHeaders,
    attributes: &HashMap<String, Struct>,
    metadata: Option<&Metadata>,
) -> ProcessingResponse {
    let map = h.headers.as_ref();
    let key = metadata
        .and_then(|m| metadata_string(m, REQUEST_KEY_METADATA))
        .and_then(|k| k.parse::<u64>().ok());
    let Some(state) = key.and_then(|k| shared.store.get(k)) else {
        // Without the router-level state the request was never validated: refuse it.
        return immediate_error(&ApiError::Internal(
            "no gateway state for this upstream attempt".into(),
        ));
    };
    let ref_key = attribute(attributes, BACKEND_ATTRIBUTE)
        .or_else(|| attribute(attributes, CLUSTER_BACKEND_ATTRIBUTE));
    // The request's own configuration first; a reference added by a reload since the
    // request started is only in the current one.
    let target = ref_key.and_then(|k| {
        state
            .config
            .backend_refs
            .get(k)
            .cloned()
            .or_else(|| shared.config.load().backend_refs.get(k).cloned())
    });
    let Some(target) = target else {
        tracing::error!(request_id = %state.request_id, ref_key = ref_key.unwrap_or("<none>"), "endpoint metadata names no configured backend");
        return immediate_error(&ApiError::Internal(
            "the chosen endpoint names no configured backend".into(),
        ));
    };
    let backend = target.backend.clone();
    let fail = |error: ApiError| {
        let error = match error {
            ApiError::BackendUnavailable { backend: b, reason } if b.is_empty() => {
                ApiError::BackendUnavailable {
                    backend: backend.name.clone(),
                    reason,
                }
            }
            other => other,
        };
        tracing::warn!(request_id = %state.request_id, backend = %backend.name, status = error.status(), "{error}");
        immediate_error(&error)
    };
    let mut upstream = match backend
        .schema
        .upstream_request(&state.request, target.model_name_override.as_deref())
    {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    for (name, value) in &target.header_mutation.set {
        upstream.headers.push((name.clone(), value.clone()));
    }
    // What the client sent, not what an earlier attempt set (those mutations persist).
    let set_before: Vec<String> = state
        .attempt
        .lock()
        .map(|a| {
            a.as_ref()
                .map(|a| a.set_headers.clone())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let client_header = |name: &str| {
        if set_before.iter().any(|n| n == name) {
            None
        } else {
            header(map, name).map(str::to_string)
        }
    };
    if let Err(e) = backend.credential.apply(&mut upstream, &client_header) {
        return fail(ApiError::BackendUnavailable {
            backend: backend.name.clone(),
            reason: e.to_string(),
        });
    }

    let mut attempt = match state.attempt.lock() {
        Ok(a) => a,
        Err(poisoned) => poisoned.into_inner(),
    };
    let previous = attempt.take();
    let number = previous.as_ref().map_or(1, |a| a.number + 1);
    if number > 1 {
        tracing::info!(request_id = %state.request_id, backend = %backend.name, attempt = number, "retrying");
    }

    let mut reply = Reply::default();
    reply.headers.set(":path", upstream.path.clone());
    // Client credentials, headers the configuration removes, and headers an earlier
    // attempt set for another backend: all go unless this attempt sets them.
    let earlier = previous
        .iter()
        .flat_map(|a| a.set_headers.iter().map(String::as_str));
    for name in CLIENT_CREDENTIAL_HEADERS
        .iter()
        .copied()
        .chain(target.header_mutation.remove.iter().map(String::as_str))
        .chain(earlier)
    {
        if !upstream.headers.iter().any(|(n, _)| n == name) {
            reply.headers.remove(name);
        }
    }
    for (name, value) in &upstream.headers {
        reply.headers.set(name, value.clone());
    }
    // A retry may see the body an earlier attempt put in place: send this attempt's body
    // explicitly then, even when it is the client's.
    if upstream.body.is_none() && number > 1 {
        upstream.body = Some(state.request.body.to_vec());
    }
    if let Some(body) = upstream.body.take() {
        reply.metadata = messages::metadata([(
            "content_length".to_string(),
            Kind::StringValue(body.len().to_string()),
        )]);
        reply.headers.remove("content-length");
        reply.body = Some(body);
        reply.replace_in_header_phase = true;
    }
    *attempt = Some(Attempt {
        target,
        usage_injected: upstream.usage_injected,
        number,
        set_headers: upstream.headers.into_iter().map(|(name, _)| name).collect(),
    });
    reply.request_headers()
}
