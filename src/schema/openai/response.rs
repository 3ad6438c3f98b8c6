//! Responses that already speak OpenAI (the `OpenAI` and `AzureOpenAI` schemas): the
//! bytes pass through; usage and the response model are read on the way. When the
//! gateway asked for a usage chunk the client did not want, that chunk and the
//! `"usage":null` fields it brings are removed again, so the client sees what it asked for.

use serde::Deserialize;
use serde_json::Value;

use crate::api::ClientRequest;
use crate::framing::sse::{event_data, SseSplitter};
use crate::usage::Usage;

use crate::schema::{ResponseTranslator, UnreadableAnswer};

pub struct OpenAiResponse {
    hide_usage: bool,
    splitter: SseSplitter,
    usage: Usage,
    model: Option<String>,
    saw_output: bool,
    /// `[DONE]`, a finish reason or an error event was seen.
    complete: bool,
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    choices: Option<Vec<Value>>,
    #[serde(default)]
    error: Option<Value>,
}

impl OpenAiResponse {
    pub fn new(request: &ClientRequest, usage_injected: bool) -> Self {
        OpenAiResponse {
            hide_usage: request.stream && usage_injected,
            splitter: SseSplitter::default(),
            usage: Usage::default(),
            model: None,
            saw_output: false,
            complete: false,
        }
    }

    fn observe(&mut self, peek: &Peek) {
        if self.model.is_none() {
            self.model = peek.model.clone().filter(|m| !m.is_empty());
        }
        if let Some(usage) = peek.usage.as_ref().and_then(Usage::from_openai) {
            self.usage = usage;
        }
        if !self.saw_output && peek.choices.as_ref().is_some_and(|c| !c.is_empty()) {
            self.saw_output = true;
        }
        let finished = |c: &Value| c.get("finish_reason").is_some_and(|f| !f.is_null());
        if peek.error.is_some()
            || peek
                .choices
                .as_ref()
                .is_some_and(|c| c.iter().any(finished))
        {
            self.complete = true;
        }
    }

    /// Handles one complete SSE event; returns the bytes to forward for it.
    fn event<'a>(&mut self, raw: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let Some(data) = event_data(raw) else {
            return raw.into();
        };
        if data.trim() == "[DONE]" {
            self.complete = true;
            return raw.into();
        }
        let Ok(peek) = serde_json::from_str::<Peek>(&data) else {
            return raw.into();
        };
        self.observe(&peek);
        if !self.hide_usage {
            return raw.into();
        }
        let usage_chunk = peek.usage.as_ref().is_some_and(|u| !u.is_null())
            && peek.choices.as_ref().is_none_or(|c| c.is_empty());
        if usage_chunk {
            return Vec::new().into();
        }
        remove_null_usage(raw)
    }
}

/// Removes a top-level `"usage":null` member from an event's JSON. A key in raw JSON
/// text is always an unescaped quoted string, so the pattern cannot match inside content.
fn remove_null_usage(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    for pattern in [
        &b",\"usage\":null"[..],
        b",\"usage\": null",
        b"\"usage\":null,",
        b"\"usage\": null,",
    ] {
        if let Some(at) = raw.windows(pattern.len()).position(|w| w == pattern) {
            let mut out = Vec::with_capacity(raw.len());
            out.extend_from_slice(&raw[..at]);
            out.extend_from_slice(&raw[at + pattern.len()..]);
            return out.into();
        }
    }
    raw.into()
}

impl ResponseTranslator for OpenAiResponse {
    fn rewrites_body(&self) -> bool {
        self.hide_usage
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        // Passed as it came either way: an OpenAI-compatible provider owns its answer.
        if let Ok(peek) = serde_json::from_slice::<Peek>(body) {
            self.observe(&peek);
        }
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut events = self.splitter.push(chunk);
        if end_of_stream {
            events.extend(self.splitter.finish());
        }
        if !self.hide_usage {
            for event in &events {
                self.event(event);
            }
            return None;
        }
        let mut out = Vec::with_capacity(chunk.len());
        for event in &events {
            let forwarded = self.event(event).into_owned();
            out.extend_from_slice(&forwarded);
        }
        Some(out)
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn response_model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn saw_output(&self) -> bool {
        self.saw_output
    }

    fn stream_complete(&self) -> bool {
        self.complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use bytes::Bytes;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-2024\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        "data: [DONE]\n\n"
    );

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(
            ApiKind::ChatCompletions,
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .unwrap()
    }

    fn run(t: &mut OpenAiResponse, input: &[u8], cut: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (piece, end) in [(&input[..cut], false), (&input[cut..], true)] {
            match t.stream_chunk(piece, end) {
                Some(bytes) => out.extend(bytes),
                None => out.extend_from_slice(piece),
            }
        }
        out
    }

    #[test]
    fn hidden_usage_is_metered_but_not_shown_at_any_split() {
        let r = request(r#"{"model":"gpt-4o","stream":true}"#);
        for cut in 0..=STREAM.len() {
            let mut t = OpenAiResponse::new(&r, true);
            let out = String::from_utf8(run(&mut t, STREAM.as_bytes(), cut)).unwrap();
            assert!(!out.contains("usage"), "cut {cut}: {out}");
            assert!(out.ends_with("data: [DONE]\n\n"));
            assert_eq!(out.matches("data: ").count(), 3);
            assert_eq!(t.usage().total, 11);
            assert_eq!(t.response_model(), Some("gpt-4o-2024"));
        }
    }

    #[test]
    fn requested_usage_passes_untouched() {
        let r =
            request(r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#);
        let mut t = OpenAiResponse::new(&r, false);
        assert!(!t.rewrites_body());
        assert_eq!(run(&mut t, STREAM.as_bytes(), 17), STREAM.as_bytes());
        assert_eq!(t.usage().input, 9);
    }

    #[test]
    fn a_stream_is_complete_only_with_done_or_a_finish_reason() {
        let r = request(r#"{"model":"gpt-4o","stream":true}"#);
        let first_event = &STREAM[..STREAM.find("\n\n").unwrap() + 2];
        let mut cut = OpenAiResponse::new(&r, false);
        cut.stream_chunk(first_event.as_bytes(), true);
        assert!(!cut.stream_complete());
        let mut whole = OpenAiResponse::new(&r, false);
        whole.stream_chunk(STREAM.as_bytes(), true);
        assert!(whole.stream_complete());
        let mut failed = OpenAiResponse::new(&r, false);
        failed.stream_chunk(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n", true);
        assert!(failed.stream_complete());
    }

    #[test]
    fn unary_usage() {
        let r = request(r#"{"model":"gpt-4o"}"#);
        let mut t = OpenAiResponse::new(&r, false);
        let body = br#"{"id":"x","model":"gpt-4o-2024","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        assert_eq!(t.unary(body).unwrap(), None);
        assert_eq!(t.usage().total, 4);
    }
}
