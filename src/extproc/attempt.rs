//! Building the provider request of one attempt: path, credential and body for the
//! backend reference Envoy chose. Both placements use it: the upstream level once per
//! attempt, and the router level for a rule with a single backend, whose cluster then
//! needs no upstream filter (one gRPC stream fewer per request).

use super::messages::{header, Mutations};
use super::store::{Attempt, RequestState};
use crate::api::ApiError;
use crate::auth::{AttemptContext, CLIENT_CREDENTIAL_HEADERS};
use crate::config::BackendRefTarget;

/// The edits that turn the client's request into this attempt's provider request.
pub struct Prepared {
    pub headers: Mutations,
    /// The body to send, when it differs from the one Envoy holds.
    pub body: Option<Vec<u8>>,
}

/// Prepares the attempt for `target` and records it in the request state. Header edits
/// are computed against the client's original headers (`state.client_headers`).
pub fn prepare(state: &RequestState, target: BackendRefTarget) -> Result<Prepared, ApiError> {
    let backend = target.backend.clone();
    let named = |error: ApiError| match error {
        ApiError::BackendUnavailable { backend: b, reason } if b.is_empty() => {
            ApiError::BackendUnavailable {
                backend: backend.name.clone(),
                reason,
            }
        }
        other => other,
    };
    let mut upstream = backend
        .schema
        .upstream_request(&state.request, target.model_name_override.as_deref())
        .map_err(named)?;
    for (name, value) in &target.header_mutation.set {
        upstream.headers.push((name.clone(), value.clone()));
    }
    if !target.body_mutation.is_empty() {
        // On the final provider body, whatever the schema made of the client's, and before
        // the credential (a signature covers the body as sent).
        let body = upstream.body.as_deref().unwrap_or(&state.request.body);
        let edited = target.body_mutation.apply(body).map_err(|e| {
            ApiError::Internal(format!("bodyMutation of backend `{}`: {e}", backend.name))
        })?;
        upstream.body = Some(edited);
    }

    let mut attempt = match state.attempt.lock() {
        Ok(a) => a,
        Err(poisoned) => poisoned.into_inner(),
    };
    // Replaced only once this attempt is ready: a failed attempt (answered with a local
    // 503 that Envoy may retry) leaves the record of the one before in place.
    let previous = attempt.clone();
    let set_before: &[String] = previous.as_ref().map_or(&[], |a| &a.set_headers);
    // What the client sent, not what an earlier attempt set: those mutations persist
    // into the next attempt (seen on Envoy 1.40).
    let original = Some(&state.client_headers);
    let client_header = |name: &str| header(original, name).map(str::to_string);
    let host = backend.authority();
    let context = AttemptContext {
        client_header: &client_header,
        client_body: &state.request.body,
        host: &host,
    };
    backend
        .credential
        .apply(&mut upstream, &context)
        .map_err(|e| ApiError::BackendUnavailable {
            backend: backend.name.clone(),
            reason: e.to_string(),
        })?;

    let number = previous.as_ref().map_or(1, |a| a.number + 1);
    if number > 1 {
        tracing::info!(request_id = %state.request_id, backend = %backend.name, attempt = number, "retrying");
    }
    let mut edits = Mutations::default();
    edits.set(":path", upstream.path.clone());
    // Client credentials and headers the configuration removes go; headers an earlier
    // attempt set get the client's value back (or go); unless this attempt sets them.
    let sets = |name: &str| upstream.headers.iter().any(|(n, _)| n == name);
    for name in CLIENT_CREDENTIAL_HEADERS
        .iter()
        .copied()
        .chain(target.header_mutation.remove.iter().map(String::as_str))
    {
        if !sets(name) {
            edits.remove(name);
        }
    }
    for name in set_before.iter().map(String::as_str) {
        if sets(name)
            || CLIENT_CREDENTIAL_HEADERS.contains(&name)
            || target.header_mutation.remove.contains(name)
        {
            continue;
        }
        match header(original, name) {
            Some(value) => edits.set(name, value.to_string()),
            None => edits.remove(name),
        };
    }
    for (name, value) in &upstream.headers {
        edits.set(name, value.clone());
    }
    // A retry may see the body an earlier attempt put in place: send this attempt's body
    // explicitly then, even when it is the client's.
    let body = match upstream.body.take() {
        None if number > 1 => Some(state.request.body.to_vec()),
        other => other,
    };
    *attempt = Some(Attempt {
        target,
        usage_injected: upstream.usage_injected,
        number,
        set_headers: {
            let mut names: Vec<String> = set_before.to_vec();
            names.extend(upstream.headers.into_iter().map(|(name, _)| name));
            names.sort();
            names.dedup();
            names
        },
    });
    Ok(Prepared {
        headers: edits,
        body,
    })
}
