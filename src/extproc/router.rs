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
use super::messages::{self, header, immediate, immediate_error_for, Reply};
use super::store::{RequestState, StoreGuard, REQUEST_KEY_METADATA};
use super::Shared;
use crate::api::{self, error::error_body, ApiError, ApiKind, ClientRequest};
use crate::auth::CLIENT_CREDENTIAL_HEADERS;
use crate::config::{
    BackendRefTarget, CostKind, GatewayConfig, BACKEND_BINDING_HEADER, MODEL_HEADER,
    STREAM_ROUTE_HEADER,
};
use crate::metrics::Completed;
use crate::schema::{ResponseHead, ResponseTranslator};
use crate::sync::lock;
use crate::usage::Usage;

/// What a client reads at the end of a stream the provider cut (as translated streams say).
const STREAM_CUT_MESSAGE: &str = "the provider's stream ended before the answer was finished";

/// Dynamic metadata key naming the client's API: `messages` or `openai`.
pub const CLIENT_API_METADATA: &str = "client_api";

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
}

/// How the response of the attempt that answered is being handled.
struct ResponseState {
    head: ResponseHead,
    mode: BodyMode,
    /// Some for an answer from a backend (success or error): its schema's translator.
    translator: Option<Box<dyn ResponseTranslator>>,
    decoder: Option<BodyDecoder>,
    /// The client receives decoded bytes (the encoding header was removed).
    deliver_decoded: bool,
    provider: String,
    first_output: Option<Instant>,
}

/// What the answer's body is, decided at its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    /// A success, buffered whole: translated (or read for usage) at once.
    Whole,
    /// A success streamed chunk by chunk.
    Stream,
    /// A provider error, buffered: rewritten in the client's API shape.
    Error,
    /// A stream that could no longer be decoded: already ended for the client with an
    /// error event; what is left of it is dropped.
    Broken,
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
        }
    }

    /// Whether the request body arrives compressed (then it is decoded off the runtime
    /// thread whatever its compressed size).
    pub fn decodes_request(&self) -> bool {
        self.request_encoding.is_some()
    }

    /// Request headers. They must be sent (not skipped) even though the body carries what
    /// matters: with headers skipped, Envoy hands them to the router, which picks the route
    /// before the body has set `x-ai-eg-model` (seen on Envoy 1.40).
    pub fn request_headers(&mut self, h: HttpHeaders) -> ProcessingResponse {
        self.request_headers = h.headers;
        let map = self.request_headers.as_ref();
        self.request_id = header(map, "x-request-id").unwrap_or("").to_string();
        let method = header(map, ":method").unwrap_or("");
        let path = header(map, ":path").unwrap_or("");
        match api::route(method, path) {
            Ok(ApiKind::Models) => {
                let config = self.shared.config.load();
                return immediate(200, api::models::list_body(&config), "models");
            }
            Ok(api) => self.api = Some(api),
            Err(e) => {
                // No API serves it, but the client still reads its API's error shape.
                self.error_shape = Some(api::error_shape(path));
                return self.reject(e);
            }
        }
        let limit = self.shared.limits.max_body_bytes;
        if let Some(size) = header(map, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            if size > limit {
                return self.reject(ApiError::BodyTooLarge { size, limit });
            }
            // Refused before Envoy sends the body: the sidecar never holds it.
            match self.shared.body_budget.reserve(size) {
                Ok(reservation) => self._body_reservation = reservation,
                Err(e) => return self.reject(e),
            }
        }
        match header(map, "content-encoding").map(str::trim) {
            None | Some("") => {}
            Some(e) if e.eq_ignore_ascii_case("identity") => {}
            Some(e) => match decode::known_encoding(e) {
                Some(known) => self.request_encoding = Some(known),
                None => return self.reject(ApiError::UnsupportedEncoding(api::printable(e))),
            },
        }
        if h.end_of_stream {
            return self.reject(ApiError::BadRequest(
                "request body is empty; send a JSON object".into(),
            ));
        }
        // Until the body phase has decided, the request carries nothing that routes it or
        // authenticates it: were the body phase skipped (an HTTP/2 request with trailers
        // and no data), Envoy would otherwise route on what the client sent.
        let mut reply = Reply::default();
        for name in CLIENT_CREDENTIAL_HEADERS {
            reply.headers.remove(name);
        }
        // Envoy's own error replies read this to answer in the client's API's shape: the
        // path no longer says it once the sidecar moved it to a provider's.
        let client_api = match self.api {
            Some(ApiKind::Messages) => "messages",
            _ => "openai",
        };
        reply.metadata = messages::metadata([(
            CLIENT_API_METADATA.to_string(),
            Kind::StringValue(client_api.into()),
        )]);
        let routing = [MODEL_HEADER, BACKEND_BINDING_HEADER, STREAM_ROUTE_HEADER];
        if routing.iter().any(|name| header(map, name).is_some()) {
            // Envoy may already have matched a route on them: match again without.
            for name in routing {
                reply.headers.remove(name);
            }
            reply.clear_route_cache = true;
        }
        reply.request_headers()
    }

    /// The whole (buffered) request body.
    pub fn request_body(&mut self, b: HttpBody) -> ProcessingResponse {
        let Some(api) = self.api else {
            return self.reject(ApiError::Internal("request body before headers".into()));
        };
        let request = match self.client_request(api, b.body) {
            Ok(r) => r,
            Err(e) => return self.reject(e),
        };
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
            if reply.body.is_none() {
                let plain = state.request.body.to_vec();
                reply.headers.set("content-length", plain.len().to_string());
                reply.body = Some(plain);
            }
        }
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
        ];
        if let Some(route) = route_name {
            meta.push(("route_name".to_string(), Kind::StringValue(route)));
        }
        reply.metadata = messages::metadata(meta);
        self.state = Some(state);
        self._guard = Some(guard);
        reply.request_body()
    }

    /// The state both placements share for a request to a model the configuration
    /// serves, stored until this stream ends; `Err` is the refusal to answer with.
    fn request_state(
        &self,
        request: ClientRequest,
    ) -> Result<(Arc<RequestState>, StoreGuard), Box<ProcessingResponse>> {
        let config = self.shared.config.load_full();
        if !config.knows_model(&request.model) {
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
            client_headers: self.request_headers.clone().unwrap_or_default(),
            attempt: Default::default(),
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
        let body = self.accept_body(body)?;
        let mut request = ClientRequest::parse(api, Bytes::from(body))?;
        let headers = self.request_headers.as_ref();
        request.sent_anthropic_version = header(headers, "anthropic-version").is_some();
        if api == ApiKind::Messages {
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
        if let Some(body) = prepared.body {
            reply.headers.set("content-length", body.len().to_string());
            reply.body = Some(body);
        }
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

    pub fn response_headers(&mut self, h: HttpHeaders) -> ProcessingResponse {
        let map = h.headers.as_ref();
        let head = ResponseHead {
            status: header(map, ":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            content_type: header(map, "content-type")
                .unwrap_or("")
                .to_ascii_lowercase(),
            aws_error_type: header(map, "x-amzn-errortype").map(str::to_string),
        };
        let encoding = header(map, "content-encoding").map(str::to_ascii_lowercase);
        let decoder = BodyDecoder::for_encoding(encoding.as_deref());
        let attempt = self.state.as_ref().and_then(|s| lock(&s.attempt).clone());
        let mut reply = Reply::default();
        let provider = attempt
            .as_ref()
            .map(|a| a.target.backend.schema.provider_name().to_string())
            .unwrap_or_default();
        // The schema of the backend that answered translates its success or its error.
        let translator = match (&self.state, &attempt) {
            (Some(state), Some(attempt)) => Some(
                attempt
                    .target
                    .backend
                    .schema
                    .response_translator(&state.request, attempt.usage_injected),
            ),
            _ => None,
        };
        let succeeded = (200..300).contains(&head.status);
        let streaming = succeeded
            && self.state.as_ref().is_some_and(|s| s.request.stream)
            && translator
                .as_ref()
                .is_some_and(|t| head.content_type.starts_with(t.stream_content_type()));
        let rewrites = translator.as_ref().is_some_and(|t| t.rewrites_body());
        // An error is buffered and rewritten at the body, which fixes its headers there.
        // A compressed stream reaches the client decoded even when passed as it came:
        // the sidecar decodes it for metering anyway, and only plain bytes let it end a
        // stream the provider cut with an error event.
        let deliver_decoded = succeeded && decoder.is_some() && (rewrites || streaming);
        if deliver_decoded {
            reply.headers.remove("content-encoding");
        }
        if streaming {
            reply.stream_response_body = true;
            reply.headers.remove("content-length");
            if rewrites {
                reply.headers.set("content-type", "text/event-stream");
            }
        }
        let empty_success = succeeded && h.end_of_stream && translator.is_some();
        let mode = match (succeeded, streaming) {
            (false, _) => BodyMode::Error,
            (true, true) => BodyMode::Stream,
            (true, false) => BodyMode::Whole,
        };
        self.response = Some(ResponseState {
            head,
            mode,
            translator,
            decoder,
            deliver_decoded,
            provider,
            first_output: None,
        });
        if empty_success {
            // Every API served here answers with a body: an empty 2xx is a broken answer,
            // never a successful empty one.
            return self.unreadable_answer("the provider's answer was empty");
        }
        reply.response_headers()
    }

    /// Replaces a 2xx answer that cannot be what the provider's API sends with a 502 in
    /// the client's API's shape, metered as such.
    fn unreadable_answer(&mut self, message: &str) -> ProcessingResponse {
        if let Some(resp) = self.response.as_mut() {
            tracing::warn!(request_id = %self.request_id, provider = %resp.provider, "{message}");
            resp.head.status = 502;
            resp.translator = None;
        }
        let api = self.state.as_ref().map(|s| s.request.api);
        let body = answer_error_body(api, false, message, "bad_upstream_response");
        let mut answer = immediate(502, body, "bad_upstream_response");
        answer.dynamic_metadata = self.finish();
        answer
    }

    pub fn response_body(&mut self, b: HttpBody) -> ProcessingResponse {
        let Some(mode) = self.response.as_ref().map(|r| r.mode) else {
            return Reply::default().response_body();
        };
        let mut reply = Reply::default();
        if mode == BodyMode::Broken {
            // The rest of a body that could no longer be decoded.
            reply.body = Some(Vec::new());
        } else {
            let decoded = match self.decode(&b.body, b.end_of_stream) {
                Ok(decoded) => decoded,
                Err(answer) => return *answer,
            };
            let plain: &[u8] = decoded.as_deref().unwrap_or(&b.body);
            match mode {
                BodyMode::Error => self.error_answer(plain, &mut reply),
                BodyMode::Whole => {
                    if let Err(answer) = self.whole_answer(plain, &decoded, &mut reply) {
                        return *answer;
                    }
                }
                BodyMode::Stream => {
                    reply.body = self.stream_piece(plain, &decoded, b.end_of_stream);
                    self.end_cut_stream(&b, &mut reply);
                }
                BodyMode::Broken => {}
            }
        }
        if b.end_of_stream {
            reply.metadata = self.finish();
        }
        reply.response_body()
    }

    /// The piece decoded, when the answer is compressed (None when it is not). An
    /// undecodable answer promised to the client decoded ends here: a buffered one is
    /// replaced by a 502, a stream ends with an error event (the `Err` to send).
    fn decode(
        &mut self,
        piece: &[u8],
        end_of_stream: bool,
    ) -> Result<Option<Vec<u8>>, Box<ProcessingResponse>> {
        let Some(resp) = self.response.as_mut() else {
            return Ok(None);
        };
        let Some(decoder) = resp.decoder.as_mut() else {
            return Ok(None);
        };
        let e = match decoder.push(piece, end_of_stream) {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(e) => e,
        };
        tracing::warn!(request_id = %self.request_id, error = %e, "response body could not be decoded; usage not read");
        resp.decoder = None;
        resp.translator = None;
        if !resp.deliver_decoded {
            return Ok(None); // passed as it came: only metering is lost
        }
        // The client was promised plain bytes: end its answer with an error in its API's
        // shape rather than hand it undecodable data.
        resp.head.status = 502;
        let streaming = resp.mode == BodyMode::Stream;
        let api = self.state.as_ref().map(|s| s.request.api);
        let message = "the provider's compressed answer could not be decoded";
        let body = answer_error_body(api, streaming, message, "stream_decode_error");
        if !streaming {
            // A buffered answer has not reached the client yet: replace it.
            let mut answer = immediate(502, body, "upstream_decode_error");
            answer.dynamic_metadata = self.finish();
            return Err(Box::new(answer));
        }
        resp.mode = BodyMode::Broken;
        let mut reply = Reply {
            body: Some(body),
            ..Default::default()
        };
        if end_of_stream {
            reply.metadata = self.finish();
        }
        Err(Box::new(reply.response_body()))
    }

    /// A provider error in the client's API shape: translated by the schema, else an
    /// OpenAI error passes as it came and anything else is wrapped.
    fn error_answer(&mut self, plain: &[u8], reply: &mut Reply) {
        let Some(resp) = self.response.as_mut() else {
            return;
        };
        let translated = resp
            .translator
            .as_mut()
            .and_then(|t| t.error(&resp.head, plain));
        let api = self.state.as_ref().map(|s| s.request.api);
        let body = translated.or_else(|| match api {
            Some(ApiKind::Messages) => anthropic_error_body(resp.head.status, plain),
            _ => openai_error_body(resp.head.status, plain),
        });
        if let Some(body) = body {
            reply
                .headers
                .set("content-type", "application/json")
                .set("content-length", body.len().to_string())
                .remove("content-encoding");
            reply.body = Some(body);
        }
    }

    /// A whole success answer through its translator; `Err` is the 502 that replaces an
    /// answer the translator cannot read.
    fn whole_answer(
        &mut self,
        plain: &[u8],
        decoded: &Option<Vec<u8>>,
        reply: &mut Reply,
    ) -> Result<(), Box<ProcessingResponse>> {
        let Some(resp) = self.response.as_mut() else {
            return Ok(());
        };
        let Some(t) = resp.translator.as_mut() else {
            return Ok(());
        };
        let replacement = match t.unary(plain) {
            Ok(replacement) => replacement,
            Err(unreadable) => {
                tracing::debug!(request_id = %self.request_id, "{unreadable}");
                let message = format!(
                    "the provider's answer could not be read as {}",
                    unreadable.expected
                );
                return Err(Box::new(self.unreadable_answer(&message)));
            }
        };
        if resp.first_output.is_none() && t.saw_output() {
            resp.first_output = Some(Instant::now());
        }
        reply.body = match replacement {
            Some(bytes) => Some(bytes),
            None if resp.deliver_decoded => decoded.clone(),
            None => None,
        };
        if let Some(body) = &reply.body {
            reply.headers.set("content-length", body.len().to_string());
        }
        Ok(())
    }

    /// A piece of a streamed success through its translator: the bytes that replace it,
    /// or None to pass it (decoded, when the client was promised plain bytes).
    fn stream_piece(
        &mut self,
        plain: &[u8],
        decoded: &Option<Vec<u8>>,
        end_of_stream: bool,
    ) -> Option<Vec<u8>> {
        let resp = self.response.as_mut()?;
        let t = resp.translator.as_mut()?;
        let replacement = t.stream_chunk(plain, end_of_stream);
        if resp.first_output.is_none() && t.saw_output() {
            resp.first_output = Some(Instant::now());
        }
        match replacement {
            Some(bytes) => Some(bytes),
            None if resp.deliver_decoded => decoded.clone(),
            None => None,
        }
    }

    /// At the end of a stream the provider cut (no end the API defines), appends the
    /// error event translated streams end with, so the client does not take a cut answer
    /// for a whole one.
    fn end_cut_stream(&mut self, b: &HttpBody, reply: &mut Reply) {
        let Some(resp) = self.response.as_ref() else {
            return;
        };
        let complete = resp.translator.as_ref().is_none_or(|t| t.stream_complete());
        if !b.end_of_stream || complete {
            return;
        }
        tracing::warn!(request_id = %self.request_id, provider = %resp.provider, "the provider's stream ended before the answer was finished");
        let api = self.state.as_ref().map(|s| s.request.api);
        let mut body = reply.body.take().unwrap_or_else(|| b.body.clone());
        body.extend(answer_error_body(
            api,
            true,
            STREAM_CUT_MESSAGE,
            "upstream_error",
        ));
        reply.body = Some(body);
    }

    /// Records metrics and returns the token-cost metadata for a finished response.
    fn finish(&mut self) -> Option<envoy_types::pb::google::protobuf::Struct> {
        self.record(None)
    }

    /// `cut`: the error type of a response that ended before its end was seen.
    fn record(&mut self, cut: Option<&str>) -> Option<envoy_types::pb::google::protobuf::Struct> {
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
        self.shared.metrics.record(&Completed {
            operation: state.request.api.operation(),
            provider: resp.provider.clone(),
            request_model: request_model.clone(),
            response_model: response_label,
            original_model,
            usage,
            duration: self.started.elapsed(),
            time_to_first_token: resp.first_output.map(|t| t - self.started),
            error_type,
        });
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
                for cost in &route.costs {
                    entries.push((
                        cost.metadata_key.clone(),
                        Kind::NumberValue(cost_value(cost.kind, &usage) as f64),
                    ));
                }
            }
        }
        entries.push(("response_model".into(), Kind::StringValue(response_model)));
        messages::metadata(entries)
    }

    /// Answers the client with `error` before its model is known.
    fn reject(&self, error: ApiError) -> ProcessingResponse {
        self.refuse(error, None)
    }

    /// Answers the client with `error`, metered like every answer: once, with its
    /// `error.type`, whether or not a backend was chosen.
    fn refuse(&self, error: ApiError, request: Option<Refused<'_>>) -> ProcessingResponse {
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
        self.shared.metrics.record(&Completed {
            operation: self.api.map_or(UNKNOWN_OPERATION, ApiKind::operation),
            provider: provider.to_string(),
            response_model: request_model.clone(),
            request_model,
            original_model,
            usage: Usage::default(),
            duration: self.started.elapsed(),
            time_to_first_token: None,
            error_type: error.status().to_string(),
        });
        immediate_error_for(&error, self.api.or(self.error_shape))
    }
}

/// `gen_ai.operation.name` of a request refused before its API was known (an unknown
/// path, a wrong method).
const UNKNOWN_OPERATION: &str = "unknown";

/// What is known of a request the gateway refuses after reading its model.
struct Refused<'a> {
    config: &'a GatewayConfig,
    model: &'a str,
    /// The backend reference the router level chose, when it chose one.
    target: Option<&'a BackendRefTarget>,
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

fn cost_value(kind: CostKind, u: &Usage) -> u64 {
    match kind {
        CostKind::Input => u.input,
        CostKind::CachedInput => u.cached_input,
        CostKind::CacheCreationInput => u.cache_creation_input,
        CostKind::Output => u.output,
        CostKind::Total => u.total,
        CostKind::Reasoning => u.reasoning,
    }
}

/// What the client gets instead of a provider answer the gateway cannot hand on (not
/// decodable, not readable): an error in its API's shape, as a stream event or a body.
fn answer_error_body(api: Option<ApiKind>, streaming: bool, message: &str, code: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match (api, streaming) {
        (Some(ApiKind::Messages), true) => {
            api::error::anthropic_error_event(&mut out, 502, message)
        }
        (Some(ApiKind::Messages), false) => out = api::error::anthropic_error_body(502, message),
        (_, true) => {
            let body = error_body(message, "server_error", code);
            crate::framing::sse::write_event(&mut out, None, &body);
        }
        (_, false) => out = error_body(message, "server_error", code),
    }
    out
}

/// An error body the client can read as an OpenAI error: None when it already is one,
/// else the text wrapped (Envoy's own replies, HTML from a proxy, empty bodies).
pub fn openai_error_body(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if v.get("error").is_some_and(|e| e.is_object()) {
            return None;
        }
    }
    let message = upstream_error_message(status, body);
    let (kind, code) = match status {
        429 => ("rate_limit_exceeded", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "upstream_error"),
        _ => ("upstream_error", "upstream_error"),
    };
    Some(error_body(&message, kind, code))
}

/// The same for an Anthropic Messages client: None when the body is an Anthropic error
/// already; an OpenAI error's message is kept; anything else is wrapped.
pub fn anthropic_error_body(status: u16, body: &[u8]) -> Option<Vec<u8>> {
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    if let Some(v) = &parsed {
        if v.get("type").and_then(|t| t.as_str()) == Some("error") {
            return None;
        }
    }
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| upstream_error_message(status, body));
    Some(api::error::anthropic_error_body(status, &message))
}

/// "upstream answered HTTP 502: <the body's text, cleaned and capped>".
fn upstream_error_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = api::error::scrub_provider_text(&text)
        .chars()
        .filter(|c| !c.is_control())
        .take(1000)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("upstream answered HTTP {status}")
    } else {
        format!("upstream answered HTTP {status}: {text}")
    }
}
