//! Google API errors (`{"error":{"code","message","status"}}`, sometimes wrapped in a
//! JSON array by Vertex AI) as OpenAI errors. The OpenAI `code` is Google's `status`
//! (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED ...), so nothing is lost.

use serde::Deserialize;
use serde_json::Value;

use crate::api::error::error_body;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct GoogleError {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: GoogleError,
}

impl GoogleError {
    /// Reads a Google error body; None when `body` is not one.
    pub fn parse(body: &[u8]) -> Option<GoogleError> {
        match serde_json::from_slice::<Value>(body).ok()? {
            Value::Array(items) => items
                .into_iter()
                .next()
                .and_then(|first| serde_json::from_value::<Envelope>(first).ok()),
            object => serde_json::from_value::<Envelope>(object).ok(),
        }
        .map(|envelope| envelope.error)
    }

    /// The OpenAI error `type`: from Google's status, else from the HTTP status.
    pub fn openai_type(&self, http_status: u16) -> &'static str {
        match self.status.as_deref() {
            Some("RESOURCE_EXHAUSTED") => "rate_limit_exceeded",
            Some("UNAUTHENTICATED") => "authentication_error",
            Some("PERMISSION_DENIED") => "permission_error",
            Some(
                "INVALID_ARGUMENT"
                | "NOT_FOUND"
                | "FAILED_PRECONDITION"
                | "OUT_OF_RANGE"
                | "ALREADY_EXISTS",
            ) => "invalid_request_error",
            _ => match self.code.unwrap_or(http_status) {
                429 => "rate_limit_exceeded",
                401 => "authentication_error",
                403 => "permission_error",
                400..=499 => "invalid_request_error",
                _ => "upstream_error",
            },
        }
    }

    /// The error as an OpenAI error body.
    pub fn openai_body(&self, http_status: u16) -> Vec<u8> {
        let message = if self.message.is_empty() {
            format!("the provider answered HTTP {http_status}")
        } else {
            self.message.clone()
        };
        let code = self.status.as_deref().unwrap_or("upstream_error");
        error_body(&message, self.openai_type(http_status), code)
    }
}

/// A Google error body as an OpenAI error body; None when it is not a Google error.
pub fn translate_error(http_status: u16, body: &[u8]) -> Option<Vec<u8>> {
    GoogleError::parse(body).map(|e| e.openai_body(http_status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixtures::load;

    fn openai(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn recorded_errors_keep_status_and_message() {
        for (file, code, kind) in [
            (
                "gemini/error-404-model-not-found.json",
                "NOT_FOUND",
                "invalid_request_error",
            ),
            (
                "vertex/error-400-invalid-argument.json",
                "INVALID_ARGUMENT",
                "invalid_request_error",
            ),
        ] {
            let f = load(file);
            let status = f["response"]["status"].as_u64().unwrap() as u16;
            let body = f["response"]["body"].to_string();
            let out = openai(&translate_error(status, body.as_bytes()).unwrap());
            assert_eq!(out["error"]["code"], code, "{file}");
            assert_eq!(out["error"]["type"], kind, "{file}");
            assert_eq!(
                out["error"]["message"], f["response"]["body"]["error"]["message"],
                "{file}"
            );
        }
    }

    #[test]
    fn array_wrapped_and_rate_limit() {
        let body =
            br#"[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]"#;
        let out = openai(&translate_error(429, body).unwrap());
        assert_eq!(out["error"]["type"], "rate_limit_exceeded");
        assert_eq!(out["error"]["code"], "RESOURCE_EXHAUSTED");
    }

    #[test]
    fn other_bodies_are_not_google_errors() {
        assert_eq!(translate_error(500, b"upstream connect error"), None);
        assert_eq!(translate_error(400, br#"{"message":"x"}"#), None);
        assert_eq!(translate_error(400, b"[]"), None);
    }
}
