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
use super::decode::BodyDecoder;
use super::messages::{self, header, immediate, immediate_error_for, Reply};
use super::store::{RequestState, StoreGuard, REQUEST_KEY_METADATA};
use super::Shared;
use crate::api::{self, error::error_body, ApiError, ApiKind, ClientRequest};
use crate::auth::CLIENT_CREDENTIAL_HEADERS;
use crate::config::{CostKind, BACKEND_BINDING_HEADER, MODEL_HEADER, STREAM_ROUTE_HEADER};
use crate::metrics::{provider_name, Completed};
use crate::schema::{ResponseHead, ResponseTranslator};
use crate::usage::Usage;

/// What a client reads at the end of a stream the provider cut (as translated streams say).
const STREAM_CUT_MESSAGE: &str = "the provider's stream ended before the answer was finished";

/// Dynamic metadata key naming the client's API when it is not OpenAI's.
pub const CLIENT_API_METADATA: &str = "client_api";

pub struct RouterStream {
    shared: Arc<Shared>,
    started: Instant,
    request_id: String,
    /// The client's request headers (moved out of the headers message, not copied).
    request_headers: Option<HeaderMap>,
    api: Option<ApiKind>,
    state: Option<Arc<RequestState>>,
    /// Frees the shared state when this stream ends, however it ends.
    _guard: Option<StoreGuard>,
    response: Option<ResponseState>,
    /// The response was metered (its end seen, or it was answered whole).
    finished: bool,
}

/// How the response of the attempt that answered is being handled.
struct ResponseState {
    head: ResponseHead,
    /// Some for an answer from a backend (success or error): its schema's translator.
    translator: Option<Box<dyn ResponseTranslator>>,
    decoder: Option<BodyDecoder>,
    /// The client receives decoded bytes (the encoding header was removed).
    deliver_decoded: bool,
    provider: String,
    /// The body comes chunk by chunk (SSE) rather than buffered whole.
    streaming: bool,
    /// A stream that failed to decode; what is left of it is dropped.
    broken: bool,
    first_output: Option<Instant>,
}

impl RouterStream {
    pub fn new(shared: Arc<Shared>) -> Self {
        RouterStream {
            shared,
            started: Instant::now(),
            request_id: String::new(),
            request_headers: None,
            api: None,
            state: None,
            _guard: None,
            response: None,
            finished: false,
        }
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
            Err(e) => return self.reject(e),
        }
        let limit = self.shared.limits.max_body_bytes;
        if let Some(size) = header(map, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            if size > limit {
                return self.reject(ApiError::BodyTooLarge { size, limit });
            }
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
        if self.api == Some(ApiKind::Messages) {
            // Envoy's own error replies read this to answer in Anthropic's shape.
            reply.metadata = messages::metadata([(
                CLIENT_API_METADATA.to_string(),
                Kind::StringValue("messages".into()),
            )]);
        }
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
        let limit = self.shared.limits.max_body_bytes;
        if b.body.len() as u64 > limit {
            return self.reject(ApiError::BodyTooLarge {
                size: b.body.len() as u64,
                limit,
            });
        }
        let mut request = match ClientRequest::parse(api, Bytes::from(b.body)) {
            Ok(r) => r,
            Err(e) => return self.reject(e),
        };
        if api == ApiKind::Messages {
            let headers = self.request_headers.as_ref();
            request.anthropic_beta = header(headers, "anthropic-beta").map(str::to_string);
        }
        let config = self.shared.config.load_full();
        if !config.knows_model(&request.model) {
            let known = config.models.keys().cloned().collect::<Vec<_>>().join(", ");
            return self.reject(ApiError::UnknownModel {
                model: request.model,
                known,
            });
        }
        let route_name = config
            .route_for_model(&request.model)
            .map(|r| r.name.clone());
        let model = request.model.clone();
        let state = Arc::new(RequestState {
            request,
            config,
            request_id: self.request_id.clone(),
            client_headers: self.request_headers.clone().unwrap_or_default(),
            attempt: Default::default(),
        });
        let Some(guard) = self.shared.store.insert(state.clone()) else {
            return self.reject(ApiError::Overloaded(self.shared.store.capacity()));
        };
        let target = state
            .config
            .router_targets
            .get(&model)
            .and_then(|key| state.config.backend_refs.get(key).cloned());
        let mut reply = match target {
            // One backend serves this rule: build its request now; its cluster has no
            // upstream-level filter.
            Some(target) => {
                let backend = target.backend.name.clone();
                let prepared = match attempt::prepare(&state, target) {
                    Ok(p) => p,
                    Err(e) => return self.reject(e),
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
                reply
            }
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
        let attempt = self
            .state
            .as_ref()
            .and_then(|s| s.attempt.lock().ok().and_then(|a| a.clone()));
        let mut reply = Reply::default();
        let provider = attempt
            .as_ref()
            .map(|a| provider_name(a.target.backend.schema.name()).to_string())
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
        self.response = Some(ResponseState {
            head,
            translator,
            decoder,
            deliver_decoded,
            provider,
            streaming,
            first_output: None,
            broken: false,
        });
        reply.response_headers()
    }

    pub fn response_body(&mut self, b: HttpBody) -> ProcessingResponse {
        let Some(resp) = self.response.as_mut() else {
            return Reply::default().response_body();
        };
        let mut reply = Reply::default();
        if resp.broken {
            // The rest of a body that could no longer be decoded: already ended for the client.
            reply.body = Some(Vec::new());
            if b.end_of_stream {
                reply.metadata = self.finish();
            }
            return reply.response_body();
        }
        let decoded: Option<Vec<u8>> = match resp.decoder.as_mut() {
            Some(d) => match d.push(&b.body, b.end_of_stream) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::warn!(request_id = %self.request_id, error = %e, "response body could not be decoded; usage not read");
                    resp.decoder = None;
                    resp.translator = None;
                    if resp.deliver_decoded {
                        // The client was promised plain bytes: end its answer with an error
                        // in its API's shape rather than hand it undecodable data.
                        resp.broken = true;
                        resp.head.status = 502;
                        let streaming = resp.streaming;
                        let api = self.state.as_ref().map(|s| s.request.api);
                        let body = answer_error_body(
                            api,
                            streaming,
                            "the provider's compressed answer could not be decoded",
                            "stream_decode_error",
                        );
                        if !streaming {
                            // A buffered answer has not reached the client yet: replace it.
                            let mut answer = immediate(502, body, "upstream_decode_error");
                            answer.dynamic_metadata = self.finish();
                            return answer;
                        }
                        reply.body = Some(body);
                        if b.end_of_stream {
                            reply.metadata = self.finish();
                        }
                        return reply.response_body();
                    }
                    None
                }
            },
            None => None,
        };
        let plain: &[u8] = decoded.as_deref().unwrap_or(&b.body);
        let failed = !(200..300).contains(&resp.head.status);
        match resp.translator.as_mut() {
            _ if failed => {
                let translated = resp
                    .translator
                    .as_mut()
                    .and_then(|t| t.error(&resp.head, plain));
                let api = self.state.as_ref().map(|s| s.request.api);
                let body = translated.or_else(|| match api {
                    Some(ApiKind::Messages) => anthropic_error_body(resp.head.status, plain),
                    _ => openai_error_body(resp.head.status, plain),
                });
                // None: an OpenAI error already, passed as it came (compressed or not).
                if let Some(body) = body {
                    reply
                        .headers
                        .set("content-type", "application/json")
                        .set("content-length", body.len().to_string())
                        .remove("content-encoding");
                    reply.body = Some(body);
                }
            }
            None => {}
            Some(t) => {
                let replacement = if resp.streaming {
                    t.stream_chunk(plain, b.end_of_stream)
                } else {
                    match t.unary(plain) {
                        Ok(replacement) => replacement,
                        Err(unreadable) => {
                            tracing::warn!(request_id = %self.request_id, provider = %resp.provider, "{unreadable}");
                            resp.head.status = 502;
                            resp.translator = None;
                            let api = self.state.as_ref().map(|s| s.request.api);
                            let message = format!(
                                "the provider's answer could not be read as {}",
                                unreadable.expected
                            );
                            let body =
                                answer_error_body(api, false, &message, "bad_upstream_response");
                            let mut answer = immediate(502, body, "bad_upstream_response");
                            answer.dynamic_metadata = self.finish();
                            return answer;
                        }
                    }
                };
                if resp.first_output.is_none() && t.saw_output() {
                    resp.first_output = Some(Instant::now());
                }
                match replacement {
                    Some(bytes) => reply.body = Some(bytes),
                    None if resp.deliver_decoded => reply.body = decoded,
                    None => {}
                }
                if resp.streaming && b.end_of_stream && !t.stream_complete() {
                    tracing::warn!(request_id = %self.request_id, provider = %resp.provider, "the provider's stream ended before the answer was finished");
                    let api = self.state.as_ref().map(|s| s.request.api);
                    let mut body = reply.body.take().unwrap_or(b.body);
                    body.extend(answer_error_body(
                        api,
                        true,
                        STREAM_CUT_MESSAGE,
                        "upstream_error",
                    ));
                    reply.body = Some(body);
                }
                if !resp.streaming && reply.body.is_some() {
                    let len = reply.body.as_ref().map_or(0, Vec::len);
                    reply.headers.set("content-length", len.to_string());
                }
            }
        }
        if b.end_of_stream {
            reply.metadata = self.finish();
        }
        reply.response_body()
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
        let attempt = state.attempt.lock().ok().and_then(|a| a.clone());
        let override_model = attempt
            .as_ref()
            .and_then(|a| a.target.model_name_override.clone());
        // A client-chosen model name becomes a metric label only when the configuration
        // names it or a provider served it: otherwise (models matched by a regular
        // expression) random names could grow the label set without bound.
        let succeeded = (200..300).contains(&resp.head.status);
        let original_model = if succeeded || state.config.models.contains_key(&state.request.model)
        {
            state.request.model.clone()
        } else {
            "other".to_string()
        };
        let request_model = override_model.unwrap_or_else(|| original_model.clone());
        let response_model = resp
            .translator
            .as_ref()
            .and_then(|t| t.response_model().map(str::to_string))
            .unwrap_or_else(|| request_model.clone());
        let error_type = match cut {
            Some(kind) => kind.to_string(),
            None if succeeded => String::new(),
            None => resp.head.status.to_string(),
        };
        self.shared.metrics.record(&Completed {
            operation: state.request.api.operation(),
            provider: resp.provider.clone(),
            request_model: request_model.clone(),
            response_model: response_model.clone(),
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

    fn reject(&self, error: ApiError) -> ProcessingResponse {
        match error.status() {
            500.. => {
                tracing::error!(request_id = %self.request_id, status = error.status(), "{error}")
            }
            _ => tracing::debug!(request_id = %self.request_id, status = error.status(), "{error}"),
        }
        immediate_error_for(&error, self.api)
    }
}

impl Drop for RouterStream {
    /// A streamed answer whose end never came: Envoy reset the stream (the route
    /// timeout, `streamIdleTimeout`, the client going away) and the client got no event
    /// the sidecar could write. Say so, with the request id, and meter what was streamed.
    fn drop(&mut self) {
        if self.finished || !self.response.as_ref().is_some_and(|r| r.streaming) {
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
    let (body, event_name) = match api {
        Some(ApiKind::Messages) => (
            api::error::anthropic_error_body(502, message),
            "event: error\n",
        ),
        _ => (error_body(message, "server_error", code), ""),
    };
    if !streaming {
        return body;
    }
    let mut event = event_name.as_bytes().to_vec();
    event.extend_from_slice(b"data: ");
    event.extend(body);
    event.extend_from_slice(b"\n\n");
    event
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
