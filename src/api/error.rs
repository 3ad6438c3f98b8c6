//! Client-facing errors: an HTTP status and an OpenAI-style JSON body.

use serde_json::json;

use super::ApiKind;

/// Every way a request can fail before or instead of reaching a provider.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but the chosen provider cannot honour it (named in the message).
    #[error("{0}")]
    Unprocessable(String),
    #[error("model `{model}` is not served by this gateway; known models: {known}")]
    UnknownModel { model: String, known: String },
    #[error("no API at {method} {path}; this gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/images/generations, /v1/audio/speech, /v1/audio/transcriptions, /v1/audio/translations, /v1/rerank (and /cohere/v2/rerank), /v1/models and Anthropic's /v1/messages and /v1/messages/count_tokens")]
    UnsupportedPath { method: String, path: String },
    #[error("method {method} is not allowed on {path}; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("request body is {size} bytes, over the limit of {limit} bytes")]
    BodyTooLarge { size: u64, limit: u64 },
    #[error("request body decodes ({encoding}) to more than the limit of {limit} bytes")]
    DecodedBodyTooLarge { encoding: String, limit: u64 },
    #[error("request content-encoding `{0}` is not supported; send the body uncompressed, gzip or deflate")]
    UnsupportedEncoding(String),
    #[error("backend `{backend}` cannot be used: {reason}")]
    BackendUnavailable { backend: String, reason: String },
    #[error("the gateway is at its limit of {0} requests in flight; retry shortly")]
    Overloaded(usize),
    #[error("the gateway holds its limit of {limit} bytes of large request bodies; retry shortly")]
    BodiesInFlight { limit: u64 },
    #[error("internal gateway error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unprocessable(_) => 422,
            ApiError::UnknownModel { .. } | ApiError::UnsupportedPath { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BodyTooLarge { .. } | ApiError::DecodedBodyTooLarge { .. } => 413,
            ApiError::UnsupportedEncoding(_) => 415,
            ApiError::BackendUnavailable { .. }
            | ApiError::Overloaded(_)
            | ApiError::BodiesInFlight { .. } => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// The OpenAI error `type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_)
            | ApiError::Unprocessable(_)
            | ApiError::UnknownModel { .. }
            | ApiError::UnsupportedPath { .. }
            | ApiError::MethodNotAllowed { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::DecodedBodyTooLarge { .. }
            | ApiError::UnsupportedEncoding(_) => "invalid_request_error",
            ApiError::BackendUnavailable { .. }
            | ApiError::Overloaded(_)
            | ApiError::BodiesInFlight { .. } => "service_unavailable",
            ApiError::Internal(_) => "server_error",
        }
    }

    /// The OpenAI error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid_request",
            ApiError::Unprocessable(_) => "unsupported_parameter",
            ApiError::UnknownModel { .. } => "model_not_found",
            ApiError::UnsupportedPath { .. } => "unknown_url",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BodyTooLarge { .. } | ApiError::DecodedBodyTooLarge { .. } => {
                "request_too_large"
            }
            ApiError::UnsupportedEncoding(_) => "unsupported_content_encoding",
            ApiError::BackendUnavailable { .. } => "backend_unavailable",
            ApiError::Overloaded(_) | ApiError::BodiesInFlight { .. } => "overloaded",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// Seconds after which a retry may succeed, sent as `retry-after` (the OpenAI SDKs
    /// honour it): a load limit, not a problem with the request.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ApiError::Overloaded(_) | ApiError::BodiesInFlight { .. } => Some(1),
            _ => None,
        }
    }

    /// The JSON body the client receives.
    pub fn body(&self) -> Vec<u8> {
        error_body(&self.to_string(), self.error_type(), self.code())
    }

    /// The body in the shape of the client's API: Anthropic's for Messages clients.
    pub fn body_for(&self, api: Option<ApiKind>) -> Vec<u8> {
        match api {
            Some(api) if api.anthropic_shaped() => {
                anthropic_error_body(self.status(), &self.to_string())
            }
            _ => self.body(),
        }
    }
}

/// Provider error text as it may reach a client. AWS signature errors quote the canonical
/// request, whose `x-amz-security-token` line is a credential: everything from that quote
/// on is dropped.
pub fn scrub_provider_text(text: &str) -> &str {
    const MARKERS: [&str; 2] = ["The Canonical String", "x-amz-security-token"];
    let cut = MARKERS
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    text[..cut].trim_end()
}

/// An Anthropic-style error body: `{"type":"error","error":{"type","message"}}`, with the
/// type Anthropic uses for `status`.
pub fn anthropic_error_body(status: u16, message: &str) -> Vec<u8> {
    json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
        .to_string()
        .into_bytes()
}

/// An Anthropic `error` stream event (`event: error`, the body of
/// [`anthropic_error_body`]), appended to `out`: the one way a Messages client's stream
/// is ended with an error.
pub fn anthropic_error_event(out: &mut Vec<u8>, status: u16, message: &str) {
    crate::framing::sse::write_event(out, Some("error"), &anthropic_error_body(status, message));
}

/// A Responses API `error` stream event (`{"type":"error","code","message","param",
/// "sequence_number"}`, as OpenAI's streaming reference has it), appended to `out`.
pub fn responses_error_event(out: &mut Vec<u8>, sequence: u64, code: &str, message: &str) {
    let event = json!({"type": "error", "code": code, "message": message, "param": null, "sequence_number": sequence});
    crate::framing::sse::write_event(out, Some("error"), event.to_string().as_bytes());
}

/// Anthropic's error type for an HTTP status (its API reference's table).
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An OpenAI-style error body: `{"error":{"message","type","param","code"}}`.
pub fn error_body(message: &str, error_type: &str, code: &str) -> Vec<u8> {
    json!({"error": {"message": message, "type": error_type, "param": null, "code": code}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_errors_lose_the_quoted_canonical_request() {
        let text = "The request signature we calculated does not match the signature you provided.\n\nThe Canonical String for this request should have been\n'POST\n/model/x/converse\n\nhost:bedrock-runtime.us-east-1.amazonaws.com\nx-amz-security-token:SECRET'";
        let scrubbed = scrub_provider_text(text);
        assert!(!scrubbed.contains("SECRET") && !scrubbed.contains("Canonical"));
        assert!(scrubbed.ends_with("you provided."));
        assert_eq!(scrub_provider_text("plain"), "plain");
    }

    #[test]
    fn body_is_openai_shaped() {
        let e = ApiError::UnknownModel {
            model: "gpt-x".into(),
            known: "a, b".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(e.status(), 404);
        assert_eq!(v["error"]["code"], "model_not_found");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));
    }
}
