//! The router level's response phases: the answer's headers decide its [`BodyMode`];
//! its body is translated, read for usage, or rewritten as an error in the client's API
//! shape, whole or piece by piece.

use super::*;

/// How the response of the attempt that answered is being handled.
pub(super) struct ResponseState {
    pub(super) head: ResponseHead,
    pub(super) mode: BodyMode,
    /// Some for an answer from a backend (success or error): its schema's translator.
    pub(super) translator: Option<Box<dyn ResponseTranslator>>,
    pub(super) decoder: Option<BodyDecoder>,
    /// The client receives decoded bytes (the encoding header was removed).
    pub(super) deliver_decoded: bool,
    pub(super) provider: String,
    pub(super) first_output: Option<Instant>,
}

/// What the answer's body is, decided at its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyMode {
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
    /// The answer's headers. A stream is answered at once and then piece by piece; a
    /// unary answer (success or error) only once its body has ended, in one answer to
    /// these headers that replaces the body (Envoy sends the body without waiting).
    pub fn response_headers(&mut self, h: HttpHeaders) -> Answers {
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
            // Already in the client's shape (a local reply): no backend's error to translate.
            _ if quota::is_quota_refusal(&head, map) => None,
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
            return vec![self.unreadable_answer("the provider's answer was empty")];
        }
        if mode == BodyMode::Stream {
            return vec![reply.response_headers()];
        }
        if h.end_of_stream {
            // No body follows: the headers are all there is to answer.
            reply.metadata = self.record(None);
            return vec![reply.response_headers()];
        }
        self.response_header_edits = reply.headers;
        Vec::new()
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
        let body = answer_error_body(api, false, 0, message, "bad_upstream_response");
        let mut answer = immediate(502, body, "bad_upstream_response");
        answer.dynamic_metadata = self.finish();
        answer
    }

    pub fn response_body(&mut self, b: HttpBody) -> Answers {
        let Some(mode) = self.response.as_ref().map(|r| r.mode) else {
            return vec![Reply::default().response_body()];
        };
        if matches!(mode, BodyMode::Stream | BodyMode::Broken) {
            return vec![self.stream_body(mode, b)];
        }
        self.hold(b.body);
        if !b.end_of_stream {
            return Vec::new();
        }
        let body = std::mem::take(&mut self.held_body);
        vec![self.answer_whole(mode, body)]
    }

    /// A unary answer, read whole: translated, read for usage, or rewritten as an error,
    /// and answered at its headers with the body that replaces it (the one it came with
    /// when nothing changes).
    fn answer_whole(&mut self, mode: BodyMode, body: Vec<u8>) -> ProcessingResponse {
        let mut reply = Reply::default();
        let decoded = match self.decode(&body, true) {
            Ok(decoded) => decoded,
            Err(answer) => return *answer,
        };
        let plain: &[u8] = decoded.as_deref().unwrap_or(&body);
        let replacement = match mode {
            BodyMode::Error => self.error_answer(plain, &mut reply),
            _ => match self.whole_answer(plain) {
                Ok(replacement) => replacement,
                Err(answer) => return *answer,
            },
        };
        if mode != BodyMode::Error {
            if let Some(span) = self.span.get_mut() {
                span.read_answer(replacement.as_deref().unwrap_or(plain));
            }
        }
        let deliver_decoded = self.response.as_ref().is_some_and(|r| r.deliver_decoded);
        reply.body = Some(match (replacement, decoded) {
            (Some(bytes), _) => bytes,
            (None, Some(decoded)) if deliver_decoded && mode != BodyMode::Error => decoded,
            (None, _) => body,
        });
        reply.replace_in_header_phase = true;
        let mut headers = std::mem::take(&mut self.response_header_edits);
        headers.append(reply.headers);
        reply.headers = headers;
        reply.metadata = self.record(None);
        reply.response_headers()
    }

    /// A piece of a streamed answer (or of one that broke mid-way), answered at once.
    fn stream_body(&mut self, mode: BodyMode, b: HttpBody) -> ProcessingResponse {
        let mut reply = Reply::default();
        let decoded = match mode {
            BodyMode::Broken => None,
            _ => match self.decode(&b.body, b.end_of_stream) {
                Ok(decoded) => decoded,
                Err(answer) => return *answer,
            },
        };
        let plain: &[u8] = decoded.as_deref().unwrap_or(&b.body);
        // None: the piece passes (decoded, when the client was promised plain bytes).
        let replacement = match mode {
            // The rest of a body that could no longer be decoded.
            BodyMode::Broken => Some(Vec::new()),
            _ => self.stream_piece(plain, b.end_of_stream),
        };
        if mode == BodyMode::Stream {
            if let Some(span) = self.span.get_mut() {
                span.read_answer_piece(replacement.as_deref().unwrap_or(plain), b.end_of_stream);
            }
        }
        let deliver_decoded = self.response.as_ref().is_some_and(|r| r.deliver_decoded);
        reply.body = match replacement {
            Some(bytes) => Some(bytes),
            None if deliver_decoded => decoded,
            None => None,
        };
        let mut cut = false;
        if mode == BodyMode::Stream {
            cut = self.end_cut_stream(b.end_of_stream, b.body, &mut reply);
        }
        if b.end_of_stream {
            // A stream that ended in an error event is metered as the error the client was
            // told of: cut here, or failed in its translation.
            let failed = mode == BodyMode::Stream
                && self
                    .response
                    .as_ref()
                    .and_then(|r| r.translator.as_ref())
                    .is_some_and(|t| t.stream_failed());
            let error = match (cut, failed) {
                (true, _) => Some("stream_cut"),
                (false, true) => Some("stream_error"),
                _ => None,
            };
            reply.metadata = self.record(error);
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
        let sequence = resp.translator.as_ref().map_or(0, |t| t.stream_sequence());
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
        let body = answer_error_body(api, streaming, sequence, message, "stream_decode_error");
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
    fn error_answer(&mut self, plain: &[u8], reply: &mut Reply) -> Option<Vec<u8>> {
        let resp = self.response.as_mut()?;
        let translated = resp
            .translator
            .as_mut()
            .and_then(|t| t.error(&resp.head, plain));
        let api = self.state.as_ref().map(|s| s.request.api);
        let body = translated.or_else(|| match api {
            Some(api) if api.anthropic_shaped() => anthropic_error_body(resp.head.status, plain),
            _ => openai_error_body(resp.head.status, plain),
        });
        if body.is_some() {
            reply
                .headers
                .set("content-type", "application/json")
                .remove("content-encoding");
        }
        body
    }

    /// A whole success answer through its translator; `Err` is the 502 that replaces an
    /// answer the translator cannot read.
    fn whole_answer(&mut self, plain: &[u8]) -> Result<Option<Vec<u8>>, Box<ProcessingResponse>> {
        let Some(resp) = self.response.as_mut() else {
            return Ok(None);
        };
        let Some(t) = resp.translator.as_mut() else {
            return Ok(None);
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
        Ok(replacement)
    }

    /// A piece of a streamed success through its translator: the bytes that replace it,
    /// or None to pass it (decoded, when the client was promised plain bytes).
    fn stream_piece(&mut self, plain: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let resp = self.response.as_mut()?;
        let t = resp.translator.as_mut()?;
        let replacement = t.stream_chunk(plain, end_of_stream);
        if resp.first_output.is_none() && t.saw_output() {
            resp.first_output = Some(Instant::now());
        }
        replacement
    }

    /// At the end of a stream the provider cut (no end the API defines), appends the
    /// error event translated streams end with, so the client does not take a cut answer
    /// for a whole one; true when it did.
    fn end_cut_stream(&mut self, end_of_stream: bool, piece: Vec<u8>, reply: &mut Reply) -> bool {
        let Some(resp) = self.response.as_ref() else {
            return false;
        };
        let complete = resp.translator.as_ref().is_none_or(|t| t.stream_complete());
        if !end_of_stream || complete {
            return false;
        }
        tracing::warn!(request_id = %self.request_id, provider = %resp.provider, "{STREAM_CUT_MESSAGE}");
        let api = self.state.as_ref().map(|s| s.request.api);
        let sequence = resp.translator.as_ref().map_or(0, |t| t.stream_sequence());
        let mut body = reply.body.take().unwrap_or(piece);
        body.extend(answer_error_body(
            api,
            true,
            sequence,
            STREAM_CUT_MESSAGE,
            "upstream_error",
        ));
        reply.body = Some(body);
        true
    }
}
