//! Bedrock errors as OpenAI errors: HTTP errors (`{"message"}` plus the
//! `x-amzn-errortype` header) and exception frames inside an event stream.

use serde_json::Value;

use crate::api::error::{error_body, scrub_provider_text};
use crate::schema::ResponseHead;

/// An OpenAI error body for a Bedrock error answer; None when `body` is not one (an
/// OpenAI error, or Envoy's own reply), so the generic handling applies.
pub fn openai_error(head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    if object.contains_key("error") {
        return None;
    }
    let message = aws_message(&value)?;
    let aws_type = head
        .aws_error_type
        .as_deref()
        .map(short_error_type)
        .filter(|t| !t.is_empty())
        .or_else(|| object.get("__type").and_then(Value::as_str).map(type_name));
    let code = aws_type.map_or_else(|| head.status.to_string(), str::to_string);
    Some(error_body(
        message,
        openai_error_type(head.status, aws_type),
        &code,
    ))
}

/// The `message` (or `Message`) of a Bedrock error document, scrubbed of the quoted
/// canonical request a signature error carries.
pub fn aws_message(value: &Value) -> Option<&str> {
    value
        .get("message")
        .or_else(|| value.get("Message"))
        .and_then(Value::as_str)
        .map(scrub_provider_text)
}

/// `ValidationException:http://internal.amazon.com/coral/...` → `ValidationException`.
fn short_error_type(header: &str) -> &str {
    header.split(':').next().unwrap_or_default().trim()
}

/// `com.amazon.coral.service#ExpiredTokenException` → `ExpiredTokenException`.
fn type_name(qualified: &str) -> &str {
    qualified.rsplit('#').next().unwrap_or(qualified)
}

/// The OpenAI error `type` for an AWS error type (any case, as streams send them in
/// lowerCamelCase) or, failing that, the HTTP status (0 when there is none).
pub fn openai_error_type(status: u16, aws_type: Option<&str>) -> &'static str {
    let aws = aws_type.unwrap_or_default().to_ascii_lowercase();
    match aws.as_str() {
        "throttlingexception" | "servicequotaexceededexception" | "modelnotreadyexception" => {
            return "rate_limit_exceeded"
        }
        "unrecognizedclientexception"
        | "expiredtokenexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception" => return "authentication_error",
        "accessdeniedexception" => return "permission_error",
        "resourcenotfoundexception" => return "not_found_error",
        "validationexception" => return "invalid_request_error",
        "serviceunavailableexception" => return "service_unavailable",
        "internalserverexception"
        | "modelstreamerrorexception"
        | "modeltimeoutexception"
        | "modelerrorexception" => return "server_error",
        _ => {}
    }
    match status {
        429 => "rate_limit_exceeded",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        400..=499 => "invalid_request_error",
        503 => "service_unavailable",
        500..=599 => "server_error",
        _ => "upstream_error",
    }
}

/// The HTTP status an exception frame stands for (Bedrock's documented status for the
/// exception; 500 for unknown ones), to pick an Anthropic error type mid-stream.
pub fn exception_status(name: &str) -> u16 {
    match name.to_ascii_lowercase().as_str() {
        "throttlingexception" | "servicequotaexceededexception" | "modelnotreadyexception" => 429,
        "validationexception" => 400,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "serviceunavailableexception" => 503,
        _ => 500,
    }
}

/// The message for an exception frame's payload (its `message`, else the raw text).
pub fn exception_message(name: &str, payload: &[u8]) -> String {
    let detail = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| aws_message(&v).map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(payload);
            scrub_provider_text(&text).chars().take(500).collect()
        });
    format!("{} {name}: {detail}", super::PROVIDER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixtures::{load, response_body, response_head};

    fn recorded(name: &str) -> (ResponseHead, Vec<u8>) {
        let f = load(name);
        (response_head(&f), response_body(&f))
    }

    fn translate(head: &ResponseHead, body: &[u8]) -> Value {
        serde_json::from_slice(&openai_error(head, body).unwrap()).unwrap()
    }

    #[test]
    fn recorded_errors_become_openai_errors() {
        let (head, body) = recorded("bedrock/invoke-error-403-expired-token.json");
        let e = translate(&head, &body);
        assert_eq!(
            e["error"]["message"],
            "The security token included in the request is expired"
        );
        assert_eq!(e["error"]["code"], "ExpiredTokenException");
        assert_eq!(e["error"]["type"], "authentication_error");
        assert!(e["error"]["param"].is_null());

        for name in [
            "bedrock/converse-error-400-invalid-model.json",
            "bedrock/converse-stream-error-400-invalid-model.json",
        ] {
            let (mut head, body) = recorded(name);
            let e = translate(&head, &body);
            assert_eq!(
                e["error"]["message"],
                "The provided model identifier is invalid."
            );
            assert_eq!(e["error"]["type"], "invalid_request_error");
            assert_eq!(e["error"]["code"], "400");
            // As Bedrock sends it, with the header the recorder dropped.
            head.aws_error_type = Some(
                "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/".into(),
            );
            assert_eq!(
                translate(&head, &body)["error"]["code"],
                "ValidationException"
            );
        }
    }

    #[test]
    fn throttling_and_capitalised_message() {
        let head = ResponseHead {
            status: 429,
            content_type: "application/json".into(),
            aws_error_type: Some("ThrottlingException".into()),
        };
        let e = translate(&head, br#"{"Message":"Too many requests"}"#);
        assert_eq!(e["error"]["type"], "rate_limit_exceeded");
        assert_eq!(e["error"]["message"], "Too many requests");
    }

    #[test]
    fn other_bodies_are_left_alone() {
        let head = ResponseHead {
            status: 503,
            ..ResponseHead::default()
        };
        assert!(openai_error(&head, b"upstream connect error").is_none());
        assert!(openai_error(&head, br#"{"error":{"message":"x"}}"#).is_none());
        assert!(openai_error(&head, br#"[1]"#).is_none());
    }
}
