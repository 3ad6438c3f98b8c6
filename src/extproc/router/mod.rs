//! The router-level stream: one per client request, before a backend is chosen.
//!
//! Request: pick the API by path, parse the body once, answer what the gateway answers
//! itself (`/v1/models`, bad input, unknown models), else write `x-ai-eg-model` (and the
//! request-state key, as dynamic metadata) and clear the route cache so Envoy routes on
//! the model.
//! Response: translate back through the schema of the backend that served the last
//! attempt, read usage (unary: buffered; streams: chunk by chunk), and emit metrics and
//! token-cost metadata.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpHeaders, ProcessingResponse};
use envoy_types::pb::google::protobuf::value::Kind;

use super::attempt;
use super::budget::Reservation;
use super::decode::{self, BodyDecoder, DecodeError};
use super::messages::{self, header, immediate, immediate_error_for, Mutations, Reply};
use super::store::{RequestState, StoreGuard, REQUEST_KEY_METADATA};
use super::{Answers, Shared};
use crate::api::{self, error::error_body, ApiError, ApiKind, ClientRequest};
use crate::auth::CLIENT_CREDENTIAL_HEADERS;
use crate::config::{
    BackendRefTarget, CostKind, GatewayConfig, BACKEND_BINDING_HEADER, MODEL_HEADER,
    STREAM_ROUTE_HEADER,
};
use crate::metrics::Completed;
use crate::schema::{ResponseHead, ResponseTranslator, STREAM_CUT_MESSAGE};
use crate::sync::lock;
use crate::telemetry::span::RequestSpan;
use crate::usage::Usage;

mod answers;
mod metering;
mod quota;
mod request_log;
mod response;

use answers::*;
use metering::Refused;
use response::{BodyMode, ResponseState};

/// Dynamic metadata key naming the client's API: `messages` or `openai`.
pub const CLIENT_API_METADATA: &str = "client_api";
/// Dynamic metadata key holding the length of the body the request continues with, which
/// the header_mutation filter after the router-level ext_proc writes as content-length.
pub const REQUEST_LENGTH_METADATA: &str = "request_content_length";

/// Envoy's own error replies read this to answer in the client's API's shape: the path
/// no longer says it once the sidecar moved it to a provider's.
fn client_api_metadata(api: ApiKind) -> (String, Kind) {
    let name = match api.anthropic_shaped() {
        true => "messages",
        false => "openai",
    };
    (
        CLIENT_API_METADATA.to_string(),
        Kind::StringValue(name.into()),
    )
}

pub struct RouterStream {
    shared: Arc<Shared>,
    started: Instant,
    request_id: String,
    /// The client's request headers (moved out of the headers message, not copied).
    request_headers: Option<HeaderMap>,
    api: Option<ApiKind>,
    /// The error shape of a request no API serves (see [`api::error_shape`]).
    error_shape: Option<ApiKind>,
    /// The request body's `content-encoding`, when it is one the gateway decodes.
    request_encoding: Option<&'static str>,
    state: Option<Arc<RequestState>>,
    /// This request's share of the large-body budget, held until the stream ends.
    _body_reservation: Option<Reservation>,
    /// Frees the shared state when this stream ends, however it ends.
    _guard: Option<StoreGuard>,
    response: Option<ResponseState>,
    /// The response was metered (its end seen, or it was answered whole).
    finished: bool,
    /// The body of the phase being read whole (the request's, then a unary answer's),
    /// held until its end: the phase is answered once, then, at its headers.
    held_body: Vec<u8>,
    /// Header edits decided at the request headers, sent with the request's one answer.
    request_header_edits: Mutations,
    /// Header edits decided at a unary answer's headers, sent with its one answer.
    response_header_edits: Mutations,
    quota: quota::QuotaState,
    /// This request's span, when traces are exported. In a cell: a refusal (`&self`)
    /// ends it.
    span: std::cell::Cell<Option<RequestSpan>>,
}

impl RouterStream {
    pub fn new(shared: Arc<Shared>) -> Self {
        RouterStream {
            shared,
            started: Instant::now(),
            request_id: String::new(),
            request_headers: None,
            api: None,
            error_shape: None,
            request_encoding: None,
            state: None,
            _body_reservation: None,
            _guard: None,
            response: None,
            finished: false,
            quota: Default::default(),
            span: Default::default(),
            held_body: Vec::new(),
            request_header_edits: Mutations::default(),
            response_header_edits: Mutations::default(),
        }
    }

    /// The bytes of the body being read whole so far.
    pub fn held_body_len(&self) -> usize {
        self.held_body.len()
    }

    /// How much work a response piece is: a streamed piece is handled at once, a unary
    /// answer only at its end, whole.
    pub fn response_work_size(&self, piece: usize, end_of_stream: bool) -> usize {
        let streamed = self
            .response
            .as_ref()
            .is_some_and(|r| r.mode == BodyMode::Stream);
        if streamed || end_of_stream {
            self.held_body.len() + piece
        } else {
            0
        }
    }

    /// Adds a piece of the body being read whole; a request body over the limit is
    /// refused as soon as it is known to be.
    fn hold(&mut self, piece: Vec<u8>) {
        if self.held_body.is_empty() {
            self.held_body = piece; // moved: most bodies come in one piece
        } else {
            self.held_body.extend_from_slice(&piece);
        }
    }

    /// Whether the request body arrives compressed (then it is decoded off the runtime
    /// thread whatever its compressed size).
    pub fn decodes_request(&self) -> bool {
        self.request_encoding.is_some()
    }

    /// Metadata Envoy forwarded with the request headers, for the consumer's identity.
    pub fn forwarded_metadata(
        &mut self,
        metadata: Option<envoy_types::pb::envoy::config::core::v3::Metadata>,
    ) {
        self.quota.forwarded = metadata;
    }

    /// Request headers. They must be sent (not skipped) even though the body carries what
    /// matters: with headers skipped, Envoy hands them to the router, which picks the route
    /// before the body has set `x-ai-eg-model` (seen on Envoy 1.40).
    pub fn request_headers(&mut self, h: HttpHeaders) -> Answers {
        self.request_headers = h.headers;
        let map = self.request_headers.as_ref();
        self.request_id = header(map, "x-request-id").unwrap_or("").to_string();
        let method = header(map, ":method").unwrap_or("");
        let path = header(map, ":path").unwrap_or("");
        match api::route(method, path) {
            Ok(ApiKind::Models) => {
                let config = self.shared.config.load();
                let host = header(map, ":authority").unwrap_or("");
                return vec![immediate(
                    200,
                    api::models::list_body(&config, host),
                    "models",
                )];
            }
            Ok(ApiKind::AnthropicModels) => {
                let config = self.shared.config.load();
                let host = header(map, ":authority").unwrap_or("");
                let body = api::models::anthropic_list_body(&config, host);
                return vec![immediate(200, body, "models")];
            }
            Ok(api) => {
                self.api = Some(api);
                // Started here: the model listings above are not requests to trace.
                self.span.set(RequestSpan::start(
                    api,
                    header(map, "traceparent"),
                    header(map, "tracestate"),
                ));
            }
            Err(e) => {
                // No API serves it, but the client still reads its API's error shape.
                self.error_shape = Some(api::error_shape(path));
                return vec![self.reject(e)];
            }
        }
        let limit = self.shared.limits.max_body_bytes;
        if let Some(size) = header(map, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            if size > limit {
                return vec![self.reject(ApiError::BodyTooLarge { size, limit })];
            }
            // Refused before Envoy sends the body: the sidecar never holds it.
            match self.shared.body_budget.reserve(size) {
                Ok(reservation) => self._body_reservation = reservation,
                Err(e) => return vec![self.reject(e)],
            }
        }
        match header(map, "content-encoding").map(str::trim) {
            None | Some("") => {}
            Some(e) if e.eq_ignore_ascii_case("identity") => {}
            Some(e) => match decode::known_encoding(e) {
                Some(known) => self.request_encoding = Some(known),
                None => return vec![self.reject(ApiError::UnsupportedEncoding(api::printable(e)))],
            },
        }
        if h.end_of_stream {
            return vec![self.reject(ApiError::BadRequest(
                "request body is empty; send a JSON object".into(),
            ))];
        }
        // Until the body phase has decided, the request carries nothing that routes it or
        // authenticates it: the one answer, at the end of the body, removes these.
        for name in CLIENT_CREDENTIAL_HEADERS {
            self.request_header_edits.remove(name);
        }
        let routing = [MODEL_HEADER, BACKEND_BINDING_HEADER, STREAM_ROUTE_HEADER];
        if routing.iter().any(|name| header(map, name).is_some()) {
            // Envoy may already have matched a route on them; the answer clears the route
            // cache, so it matches again without them.
            for name in routing {
                self.request_header_edits.remove(name);
            }
        }
        // Answered when the body has ended (see `request_body`).
        Vec::new()
    }

    /// A piece of the request body (Envoy streams it without waiting for the headers'
    /// answer): held until the body ends, then the request is answered whole.
    pub fn request_body(&mut self, b: HttpBody) -> Answers {
        let limit = self.shared.limits.max_body_bytes;
        let size = (self.held_body.len() + b.body.len()) as u64;
        if size > limit {
            // Chunked, so no content-length refused it: refused as soon as it is too large
            // (compressed or not: the decoded body is held to the same limit).
            return vec![self.reject(ApiError::BodyTooLarge { size, limit })];
        }
        self.hold(b.body);
        if !b.end_of_stream {
            return Vec::new();
        }
        self.request_complete()
    }

    /// Request trailers (HTTP/2 and gRPC-web clients can send them): the body has ended.
    pub fn request_trailers(&mut self) -> Answers {
        if self.held_body.is_empty() {
            return vec![self.reject(ApiError::BadRequest(
                "request body is empty; send a JSON object".into(),
            ))];
        }
        self.request_complete()
    }

    /// The whole request, answered once, at its headers: routed on the model, its body
    /// replaced by the provider's (`CONTINUE_AND_REPLACE`) or passed as it came.
    fn request_complete(&mut self) -> Answers {
        vec![self.answer_request()]
    }

    fn answer_request(&mut self) -> ProcessingResponse {
        let Some(api) = self.api else {
            return self.reject(ApiError::Internal("request body before headers".into()));
        };
        let body = std::mem::take(&mut self.held_body);
        let request = match self.client_request(api, body) {
            Ok(r) => r,
            Err(e) => return self.reject(e),
        };
        if let Some(span) = self.span.get_mut() {
            span.read_request(&request.body);
        }
        let (state, guard) = match self.request_state(request) {
            Ok(stored) => stored,
            Err(answer) => return *answer,
        };
        let model = state.request.model.clone();
        let route_name = state.config.route_for_model(&model).map(|r| r.name.clone());
        let target = state
            .config
            .router_targets
            .get(&model)
            .and_then(|key| state.config.backend_refs.get(key).cloned());
        self.note_consumer(&state);
        let checks = self.quota_checks(&state, target.as_ref());
        let mut reply = match target {
            // One backend serves this rule: build its request now; its cluster has no
            // upstream-level filter.
            Some(target) => match self.single_backend(&state, target, &model) {
                Ok(reply) => reply,
                Err(answer) => return *answer,
            },
            None => {
                // The upstream level builds each attempt; client credentials go now
                // already, so none can slip through whatever happens later.
                let mut reply = Reply::default();
                for name in CLIENT_CREDENTIAL_HEADERS
                    .iter()
                    .chain([&BACKEND_BINDING_HEADER])
                {
                    reply.headers.remove(name);
                }
                reply
            }
        };
        if self.request_encoding.is_some() {
            // Providers get the decoded body, whatever the attempt does with it.
            reply.headers.remove("content-encoding");
        }
        // The answer replaces the body in the header phase, so it carries the body even
        // when it passes as it came; Envoy drops content-length, which the
        // header_mutation filter after this one restores from the metadata.
        let body = reply
            .body
            .take()
            .unwrap_or_else(|| state.request.body.to_vec());
        let length = body.len();
        reply.body = Some(body);
        reply.replace_in_header_phase = true;
        reply
            .headers
            .append(std::mem::take(&mut self.request_header_edits));
        reply.clear_route_cache = true;
        reply.headers.set(MODEL_HEADER, model.clone());
        if state.request.stream {
            reply.headers.set(STREAM_ROUTE_HEADER, "1");
        }
        let mut meta = vec![
            ("model_name".to_string(), Kind::StringValue(model)),
            (
                REQUEST_KEY_METADATA.to_string(),
                Kind::StringValue(guard.key().to_string()),
            ),
            (
                REQUEST_LENGTH_METADATA.to_string(),
                Kind::StringValue(length.to_string()),
            ),
            client_api_metadata(state.request.api),
        ];
        if let Some(route) = route_name {
            meta.push(("route_name".to_string(), Kind::StringValue(route)));
        }
        meta.extend(checks);
        reply.metadata = messages::metadata(meta);
        self.state = Some(state);
        self._guard = Some(guard);
        reply.request_headers()
    }

    /// The state both placements share for a request to a model the configuration
    /// serves, stored until this stream ends; `Err` is the refusal to answer with.
    fn request_state(
        &mut self,
        request: ClientRequest,
    ) -> Result<(Arc<RequestState>, StoreGuard), Box<ProcessingResponse>> {
        let config = self.shared.config.load_full();
        let host = header(self.request_headers.as_ref(), ":authority").unwrap_or("");
        if !config.knows_model_at(&request.model, host) {
            let known = config.models.keys().cloned().collect::<Vec<_>>().join(", ");
            let refused = Refused {
                config: &config,
                model: &request.model,
                target: None,
            };
            let error = ApiError::UnknownModel {
                model: request.model.clone(),
                known,
            };
            return Err(Box::new(self.refuse(error, Some(refused))));
        }
        let state = Arc::new(RequestState {
            request,
            config,
            request_id: self.request_id.clone(),
            // Moved, not copied: the stream reads no header after the request body.
            client_headers: self.request_headers.take().unwrap_or_default(),
            attempt: Default::default(),
            traceparent: self.span.get_mut().as_ref().map(RequestSpan::traceparent),
        });
        let Some(guard) = self.shared.store.insert(state.clone()) else {
            let refused = Refused {
                config: &state.config,
                model: &state.request.model,
                target: None,
            };
            let error = ApiError::Overloaded(self.shared.store.capacity());
            return Err(Box::new(self.refuse(error, Some(refused))));
        };
        Ok((state, guard))
    }

    /// The client's request, parsed from its body and the headers its API reads.
    fn client_request(&mut self, api: ApiKind, body: Vec<u8>) -> Result<ClientRequest, ApiError> {
        let body = Bytes::from(self.accept_body(body)?);
        let headers = self.request_headers.as_ref();
        let mut request = match api.is_form() {
            true => {
                ClientRequest::parse_form(api, body, header(headers, "content-type").unwrap_or(""))?
            }
            false => ClientRequest::parse(api, body)?,
        };
        request.sent_anthropic_version = header(headers, "anthropic-version").is_some();
        if api.anthropic_shaped() {
            request.anthropic_beta = header(headers, "anthropic-beta").map(str::to_string);
        }
        Ok(request)
    }

    /// The provider request of a rule with one backend, built here at the router level,
    /// bound to that backend; `Err` is the refusal to answer with.
    fn single_backend(
        &self,
        state: &RequestState,
        target: BackendRefTarget,
        model: &str,
    ) -> Result<Reply, Box<ProcessingResponse>> {
        let backend = target.backend.name.clone();
        let prepared = match attempt::prepare(state, target) {
            Ok(p) => p,
            Err(e) => {
                // The same target again (moved into `prepare`): only on this path.
                let target = state
                    .config
                    .router_targets
                    .get(model)
                    .and_then(|key| state.config.backend_refs.get(key));
                let refused = Refused {
                    config: &state.config,
                    model,
                    target,
                };
                return Err(Box::new(self.refuse(e, Some(refused))));
            }
        };
        let mut reply = Reply {
            headers: prepared.headers,
            ..Default::default()
        };
        reply.headers.set(BACKEND_BINDING_HEADER, backend);
        reply.body = prepared.body;
        Ok(reply)
    }

    /// The body as the gateway reads it: within the size limit and the large-body budget,
    /// and decoded when it came compressed.
    fn accept_body(&mut self, body: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        let limit = self.shared.limits.max_body_bytes;
        let size = body.len() as u64;
        if size > limit {
            return Err(ApiError::BodyTooLarge { size, limit });
        }
        if self._body_reservation.is_none() {
            // No content-length (chunked): counted now that its size is known.
            self._body_reservation = self.shared.body_budget.reserve(size)?;
        }
        let Some(encoding) = self.request_encoding else {
            return Ok(body);
        };
        let plain = decode::decode_whole(encoding, &body, limit).map_err(|e| match e {
            DecodeError::TooLarge(limit) => ApiError::DecodedBodyTooLarge {
                encoding: encoding.to_string(),
                limit,
            },
            e => ApiError::BadRequest(format!("request body {e}")),
        })?;
        drop(body);
        // What is held from here on is the decoded body: count that instead.
        self._body_reservation = None;
        self._body_reservation = self.shared.body_budget.reserve(plain.len() as u64)?;
        Ok(plain)
    }
}

impl Drop for RouterStream {
    /// A streamed answer whose end never came: Envoy reset the stream (the route
    /// timeout, `streamIdleTimeout`, the client going away) and the client got no event
    /// the sidecar could write. Say so, with the request id, and meter what was streamed.
    fn drop(&mut self) {
        if self.finished
            || !self
                .response
                .as_ref()
                .is_some_and(|r| r.mode == BodyMode::Stream)
        {
            return;
        }
        tracing::warn!(request_id = %self.request_id, elapsed_ms = self.started.elapsed().as_millis() as u64,
            "stream ended before the provider finished it: Envoy reset it (a timeout, or the client went away)");
        self.record(Some("stream_reset"));
    }
}
