//! Building the provider request of one attempt: path, credential and body for the
//! backend reference Envoy chose. Both placements use it: the upstream level once per
//! attempt, and the router level for a rule with a single backend, whose cluster then
//! needs no upstream filter (one gRPC stream fewer per request).

use super::messages::{header, Mutations};
use super::store::{Attempt, RequestState};
use crate::api::ApiError;
use crate::auth::{AttemptContext, CLIENT_CREDENTIAL_HEADERS};
use crate::config::BackendRefTarget;
use crate::sync::lock;
use crate::wire::UpstreamRequest;

/// The edits that turn the client's request into this attempt's provider request.
pub struct Prepared {
    pub headers: Mutations,
    /// The body to send, when it differs from the one Envoy holds.
    pub body: Option<Vec<u8>>,
}

/// Prepares the attempt for `target` and records it in the request state.
pub fn prepare(state: &RequestState, target: BackendRefTarget) -> Result<Prepared, ApiError> {
    let mut upstream = provider_request(state, &target)?;
    let mut attempt = lock(&state.attempt);
    // Replaced only once this attempt is ready: a failed attempt (answered with a local
    // 503 that Envoy may retry) leaves the record of the one before in place.
    let previous = attempt.clone();
    let set_before: &[String] = previous.as_ref().map_or(&[], |a| &a.set_headers);
    let number = previous.as_ref().map_or(1, |a| a.number + 1);
    if number > 1 {
        tracing::info!(request_id = %state.request_id, backend = %target.backend.name, attempt = number, "retrying");
    }
    let headers = header_edits(state, &target, &upstream, set_before);
    // A retry may see the body an earlier attempt put in place: send this attempt's body
    // explicitly then, even when it is the client's.
    let body = match upstream.body.take() {
        None if number > 1 => Some(state.request.body.to_vec()),
        other => other,
    };
    let mut set_headers: Vec<String> = set_before.to_vec();
    set_headers.extend(upstream.headers.into_iter().map(|(name, _)| name));
    set_headers.sort();
    set_headers.dedup();
    *attempt = Some(Attempt {
        target,
        usage_injected: upstream.usage_injected,
        number,
        set_headers,
    });
    Ok(Prepared { headers, body })
}

/// The provider request for `target`: the schema's path, body and headers, the
/// reference's header and body mutations, then the credential over the final request.
fn provider_request(
    state: &RequestState,
    target: &BackendRefTarget,
) -> Result<UpstreamRequest, ApiError> {
    let backend = &target.backend;
    let unavailable = |reason: String| ApiError::BackendUnavailable {
        backend: backend.name.clone(),
        reason,
    };
    let mut upstream = backend
        .schema
        .upstream_request(&state.request, target.model_name_override.as_deref())
        .map_err(|error| match error {
            // Schemas do not know the backend's name: it is filled in here.
            ApiError::BackendUnavailable { backend, reason } if backend.is_empty() => {
                unavailable(reason)
            }
            other => other,
        })?;
    for (name, value) in &target.header_mutation.set {
        upstream.headers.push((name.clone(), value.clone()));
    }
    if let Some(traceparent) = &state.traceparent {
        // Before the credential, which may sign the headers.
        upstream
            .headers
            .push(("traceparent".into(), traceparent.clone()));
    }
    if !target.body_mutation.is_empty() {
        // On the final provider body, whatever the schema made of the client's, and before
        // the credential (a signature covers the body as sent).
        let body = upstream.body.as_deref().unwrap_or(&state.request.body);
        let edited = if state.request.api.is_form() {
            // Its boundary was read from this header when the form was parsed.
            let content_type = header(Some(&state.client_headers), "content-type").unwrap_or("");
            let boundary = crate::api::multipart::boundary(content_type)?;
            target.body_mutation.apply_form(body, boundary)?
        } else {
            target.body_mutation.apply(body).map_err(|e| {
                ApiError::Internal(format!("bodyMutation of backend `{}`: {e}", backend.name))
            })?
        };
        upstream.body = Some(edited);
    }
    let host = backend.authority();
    let context = AttemptContext {
        client_body: &state.request.body,
        host: &host,
    };
    backend
        .credential
        .apply(&mut upstream, &context)
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(upstream)
}

/// The header edits of this attempt. Client credentials and headers the configuration
/// removes go; headers an earlier attempt set get the client's value back (or go),
/// unless this attempt sets them. Edits are computed against what the client sent, not
/// what an earlier attempt set: those mutations persist into the next attempt (seen on
/// Envoy 1.40).
fn header_edits(
    state: &RequestState,
    target: &BackendRefTarget,
    upstream: &UpstreamRequest,
    set_before: &[String],
) -> Mutations {
    let mut edits = Mutations::default();
    edits.set(":path", upstream.path.clone());
    let sets = |name: &str| upstream.headers.iter().any(|(n, _)| n == name);
    let removed = &target.header_mutation.remove;
    for name in CLIENT_CREDENTIAL_HEADERS
        .iter()
        .copied()
        .chain(removed.iter().map(String::as_str))
    {
        if !sets(name) {
            edits.remove(name);
        }
    }
    for name in set_before.iter().map(String::as_str) {
        if sets(name) || CLIENT_CREDENTIAL_HEADERS.contains(&name) || removed.contains(name) {
            continue;
        }
        match header(Some(&state.client_headers), name) {
            Some(value) => edits.set(name, value.to_string()),
            None => edits.remove(name),
        };
    }
    for (name, value) in &upstream.headers {
        edits.set(name, value.clone());
    }
    edits
}
