//! The error bodies the router level writes instead of a provider answer, in the
//! client's API shape.

use super::*;

/// What the client gets instead of a provider answer the gateway cannot hand on (not
/// decodable, not readable): an error in its API's shape, as a stream event or a body.
/// `sequence` numbers a Responses API stream's error event.
pub(super) fn answer_error_body(
    api: Option<ApiKind>,
    streaming: bool,
    sequence: u64,
    message: &str,
    code: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    match (api, streaming) {
        (Some(ApiKind::Responses), true) => {
            api::error::responses_error_event(&mut out, sequence, code, message)
        }
        (Some(api), true) if api.anthropic_shaped() => {
            api::error::anthropic_error_event(&mut out, 502, message)
        }
        (Some(api), false) if api.anthropic_shaped() => {
            out = api::error::anthropic_error_body(502, message)
        }
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
