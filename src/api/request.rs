//! The client's request body, parsed once.
//!
//! The body is kept as received (`Bytes`); the parse records the few values the gateway
//! needs and where the `model` value sits, so that a passthrough backend gets the exact
//! bytes and a `modelNameOverride` splices one value.

use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ApiError, ApiKind};

/// Longest model name accepted; model names become header values and path segments.
pub const MAX_MODEL_LEN: usize = 256;

#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub api: ApiKind,
    pub body: Bytes,
    pub model: String,
    /// Byte range of the `model` JSON string (quotes included) in `body`.
    pub model_span: Range<usize>,
    pub stream: bool,
    /// The client asked for a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Byte range of the `stream_options` value, when present.
    pub stream_options_span: Option<Range<usize>>,
    /// The client's `anthropic-beta` header (Messages clients), for backends that take
    /// beta flags in the body rather than as a header.
    pub anthropic_beta: Option<String>,
    /// The client sent an `anthropic-version` header (it then passes as sent).
    pub sent_anthropic_version: bool,
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    /// Speech streams when `stream_format` is `sse`.
    #[serde(borrow, default)]
    stream_format: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl ClientRequest {
    /// Parses and validates `body` for `api`.
    pub fn parse(api: ApiKind, body: Bytes) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "request body is empty; send a JSON object".into(),
            ));
        }
        check_depth(&body)?;
        check_is_object(&body)?;
        let peek: Peek<'_> = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(match e.classify() {
                serde_json::error::Category::Data => format!("request body is invalid: {e}"),
                _ => format!("request body is not valid JSON: {e}"),
            })
        })?;
        let raw_model = peek
            .model
            .ok_or_else(|| ApiError::BadRequest("request body has no `model` field".into()))?;
        let model: String = serde_json::from_str(raw_model.get()).map_err(|_| {
            ApiError::BadRequest(format!(
                "`model` must be a string, got {}",
                json_kind(raw_model.get())
            ))
        })?;
        validate_model(&model)?;
        let model_span = span_of(&body, raw_model.get());
        let (include_usage, stream_options_span) = match peek.stream_options {
            Some(raw) if raw.get() != "null" => {
                if !raw.get().starts_with('{') {
                    return Err(ApiError::BadRequest(format!(
                        "`stream_options` must be an object, got {}",
                        json_kind(raw.get())
                    )));
                }
                let options: StreamOptions = serde_json::from_str(raw.get()).map_err(|_| {
                    ApiError::BadRequest(
                        "`stream_options.include_usage` must be a boolean".to_string(),
                    )
                })?;
                (
                    options.include_usage.unwrap_or(false),
                    Some(span_of(&body, raw.get())),
                )
            }
            _ => (false, None),
        };
        let stream = match peek.stream.map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "`stream` must be a boolean, got {}",
                    json_kind(other)
                )))
            }
        };
        let stream = stream
            || (api == ApiKind::Speech && peek.stream_format.map(RawValue::get) == Some("\"sse\""));
        if stream && api == ApiKind::Embeddings {
            return Err(ApiError::BadRequest("embeddings cannot be streamed".into()));
        }
        Ok(ClientRequest {
            include_usage,
            stream_options_span,
            ..ClientRequest::read(api, body, model, model_span, stream)
        })
    }

    /// A request read from its body; the headers' parts are filled in by the caller.
    fn read(
        api: ApiKind,
        body: Bytes,
        model: String,
        model_span: Range<usize>,
        stream: bool,
    ) -> Self {
        ClientRequest {
            api,
            body,
            model,
            model_span,
            stream,
            include_usage: false,
            stream_options_span: None,
            anthropic_beta: None,
            sent_anthropic_version: false,
        }
    }
}

impl ClientRequest {
    /// Parses a `multipart/form-data` body (`content_type` names its boundary): the
    /// `model` field, and `stream` when it is `true`. `model_span` is the raw field value.
    pub fn parse_form(api: ApiKind, body: Bytes, content_type: &str) -> Result<Self, ApiError> {
        let boundary = super::multipart::boundary(content_type)?;
        let fields = super::multipart::fields(&body, boundary)?;
        let model_span = fields
            .model
            .ok_or_else(|| ApiError::BadRequest("the form has no `model` field".into()))?;
        let model = std::str::from_utf8(&body[model_span.clone()])
            .map_err(|_| ApiError::BadRequest("the form's `model` is not text".into()))?
            .to_string();
        validate_model(&model)?;
        let stream = match fields.stream.map(|r| &body[r]) {
            None | Some(b"false") => false,
            Some(b"true") => true,
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "the form's `stream` must be true or false".into(),
                ))
            }
        };
        Ok(ClientRequest::read(api, body, model, model_span, stream))
    }
}

/// Deepest JSON nesting accepted. serde_json skips unknown fields without a depth
/// limit, so this is checked up front; providers reject such bodies anyway.
pub const MAX_DEPTH: usize = 128;

/// Rejects bodies nested deeper than [`MAX_DEPTH`], in one pass over the bytes. Strings,
/// nearly all of an LLM request, are skipped with `memchr` (the byte-by-byte scan was a
/// tenth of the sidecar's CPU on a 5 MiB body).
fn check_depth(body: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut i) = (0usize, 0usize);
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                i += 1;
                // To the closing quote, past escaped characters.
                loop {
                    let Some(rest) = body.get(i..) else {
                        return Ok(()); // unterminated: the parser names it
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        None => return Ok(()),
                        Some(n) if rest[n] == b'\\' => i += n + 2,
                        Some(n) => {
                            i += n + 1;
                            break;
                        }
                    }
                }
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ApiError::BadRequest(format!(
                        "request body is nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A body that is JSON but not an object is named for what it is; serde would only say
/// which field type it expected first.
fn check_is_object(body: &[u8]) -> Result<(), ApiError> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|i| body[i] == b'{') {
        return Ok(());
    }
    match serde_json::from_slice::<&RawValue>(body) {
        Ok(value) => Err(ApiError::BadRequest(format!(
            "request body must be a JSON object, got {}",
            json_kind(value.get())
        ))),
        Err(e) => Err(ApiError::BadRequest(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

/// What kind of JSON value `raw` (valid JSON text) is, for error messages.
fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Model names become a routing header and, for some providers, a path segment: only
/// visible ASCII is accepted, which rules out header and path injection.
pub fn validate_model(model: &str) -> Result<(), ApiError> {
    if model.is_empty() {
        return Err(ApiError::BadRequest("`model` is empty".into()));
    }
    if model.len() > MAX_MODEL_LEN {
        return Err(ApiError::BadRequest(format!(
            "`model` is longer than {MAX_MODEL_LEN} characters"
        )));
    }
    if let Some(c) = model.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "`model` contains {c:?}; model names are printable ASCII without spaces"
        )));
    }
    // `.` and `..` are dot-segments: as a path segment (Azure deployments, Bedrock model
    // ids) they would move the request to another path, and a signature with it.
    if matches!(model, "." | "..") {
        return Err(ApiError::BadRequest(format!(
            "`model` `{model}` is not a model name"
        )));
    }
    Ok(())
}

/// The byte range of `part` inside `whole`; `part` must borrow from `whole`.
fn span_of(whole: &[u8], part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ClientRequest, ApiError> {
        ClientRequest::parse(
            ApiKind::ChatCompletions,
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    #[test]
    fn depth_counts_structure_not_brackets_in_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(deep(MAX_DEPTH).as_bytes()).is_ok());
        assert!(check_depth(deep(MAX_DEPTH + 1).as_bytes()).is_err());
        // Brackets inside strings, escaped quotes and escaped backslashes.
        let quoted = format!(
            r#"{{"a":"{}\"{}","b":"\\"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(check_depth(quoted.as_bytes()).is_ok());
        let after_escaped_backslash =
            format!(r#"{{"a":"\\",{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(check_depth(after_escaped_backslash.as_bytes()).is_err());
        // Unterminated strings and a trailing escape end the scan without a panic.
        for cut in [r#"{"a":"abc"#, r#"{"a":"abc\"#, "\"", "\"\\"] {
            assert!(check_depth(cut.as_bytes()).is_ok());
        }
    }

    #[test]
    fn reads_model_and_its_span() {
        let body = r#"{"messages":[],"model": "gpt-4o" ,"stream":true}"#;
        let r = parse(body).unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert_eq!(&body[r.model_span.clone()], "\"gpt-4o\"");
        assert!(r.stream);
        assert!(!r.include_usage);
    }

    #[test]
    fn reads_stream_options() {
        let r = parse(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#)
            .unwrap();
        assert!(r.include_usage);
        assert!(r.stream_options_span.is_some());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (body, says) in [
            ("[1,2]", "request body must be a JSON object, got an array"),
            ("42", "request body must be a JSON object, got a number"),
            (" \"s\"", "request body must be a JSON object, got a string"),
            ("null", "request body must be a JSON object, got null"),
            ("{\"model\"", "request body is not valid JSON"),
            ("not json", "request body is not valid JSON"),
            (
                r#"{"model":"m","stream":"yes"}"#,
                "`stream` must be a boolean, got a string",
            ),
            (
                r#"{"model":"m","stream":1}"#,
                "`stream` must be a boolean, got a number",
            ),
            (
                r#"{"model":["m"]}"#,
                "`model` must be a string, got an array",
            ),
            (
                r#"{"model":"m","stream_options":true}"#,
                "`stream_options` must be an object, got a boolean",
            ),
            (
                r#"{"model":"m","stream_options":{"include_usage":"y"}}"#,
                "`stream_options.include_usage` must be a boolean",
            ),
        ] {
            let message = parse(body)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string());
            assert!(message.starts_with(says), "{body}: {message}");
        }
        assert!(!parse(r#"{"model":"m","stream":null}"#).unwrap().stream);
    }

    #[test]
    fn rejects_bad_bodies_with_400() {
        for body in [
            "",
            "not json",
            "[1,2]",
            "\"s\"",
            "{}",
            r#"{"model":7}"#,
            r#"{"model":""}"#,
            r#"{"model":"a\r\nx-injected: 1"}"#,
            r#"{"model":"a b"}"#,
            r#"{"model":"."}"#,
            r#"{"model":".."}"#,
            r#"{"model":"m","model":"n"}"#,
        ] {
            let status = parse(body).map(|_| 200).unwrap_or_else(|e| e.status());
            assert_eq!(status, 400, "{body}");
        }
        let deep = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            parse(&deep).map(|_| 200).unwrap_or_else(|e| e.status()),
            400
        );
        let ok = format!("{{\"model\":\"m\",\"x\":\"{}\"}}", "[".repeat(1000));
        assert!(parse(&ok).is_ok(), "brackets inside strings do not count");
    }
}
