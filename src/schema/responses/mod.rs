//! OpenAI's Responses API (`/v1/responses`) for the schemas that translate: Claude
//! (`Anthropic`, `AWSAnthropic`, `GCPAnthropic`), Converse (`AWSBedrock`) and Gemini
//! (`GCPVertexAI`). `OpenAI` and `AzureOpenAI` pass it as it came
//! (`openai::responses_meter`).
//!
//! The request becomes the chat completions request those schemas already translate
//! (`request.rs` has the table), and their chat answer becomes a response object or its
//! stream of events (`output.rs`, `stream.rs`): each provider's rules are written once,
//! for chat. The translation is stateless: what needs stored responses is refused with
//! 422 naming the field. Errors keep OpenAI's shape, which the Responses API shares.

mod output;
mod request;
mod signature;
mod stream;

use serde_json::Value;

use crate::api::{ApiError, ApiKind, ClientRequest};
use crate::framing::sse::{event_data, SseSplitter};
use crate::schema::{
    BackendSchema, ResponseHead, ResponseTranslator, UnreadableAnswer, UpstreamRequest,
};
use crate::usage::Usage;

use output::{items_from_message, Ending, ResponseHeader};
use stream::EventWriter;

/// The provider request for a Responses client of `schema`, through its chat translation.
pub fn upstream_request(
    schema: &dyn BackendSchema,
    request: &ClientRequest,
    model_override: Option<&str>,
) -> Result<UpstreamRequest, ApiError> {
    let body = request::chat_body(&request.body, schema.provider_name())?;
    let chat = ClientRequest::parse(ApiKind::ChatCompletions, body.into())?;
    schema
        .upstream_request(&chat, model_override)
        .map_err(in_responses_terms)
}

/// The translator for a Responses client of `schema`: its chat translator, rewritten.
pub fn translator(
    schema: &dyn BackendSchema,
    request: &ClientRequest,
) -> Box<dyn ResponseTranslator> {
    // The chat translators read only the model and the stream flags; usage is always
    // asked for, since `response.completed` carries it.
    let chat = ClientRequest {
        api: ApiKind::ChatCompletions,
        include_usage: true,
        ..request.clone()
    };
    let inner = schema.response_translator(&chat, false);
    Box::new(ResponsesFromChat::new(request, inner))
}

/// Chat's field names in a refusal become the Responses API's, which the client sent.
fn in_responses_terms(error: ApiError) -> ApiError {
    const NAMES: [(&str, &str); 3] = [
        ("`response_format", "`text.format"),
        ("`max_completion_tokens`", "`max_output_tokens`"),
        ("`reasoning_effort", "`reasoning.effort"),
    ];
    let rename = |message: String| {
        NAMES
            .iter()
            .fold(message, |m, (chat, responses)| m.replace(chat, responses))
    };
    match error {
        ApiError::BadRequest(m) => ApiError::BadRequest(rename(m)),
        ApiError::Unprocessable(m) => ApiError::Unprocessable(rename(m)),
        other => other,
    }
}

/// A chat answer (from a schema's chat translator) as the Responses API's.
pub struct ResponsesFromChat {
    inner: Box<dyn ResponseTranslator>,
    splitter: SseSplitter,
    writer: EventWriter,
}

impl ResponsesFromChat {
    fn new(request: &ClientRequest, inner: Box<dyn ResponseTranslator>) -> Self {
        ResponsesFromChat {
            inner,
            splitter: SseSplitter::default(),
            writer: EventWriter::new(ResponseHeader::new(&request.body, &request.model)),
        }
    }

    fn chat_event(&mut self, out: &mut Vec<u8>, raw: &[u8]) {
        let Some(data) = event_data(raw) else {
            return;
        };
        if data.trim() == "[DONE]" {
            let usage = self.inner.usage();
            self.writer.complete(out, &usage);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        if let Some(error) = chunk.get("error") {
            let text = |name: &str| error.get(name).and_then(Value::as_str).unwrap_or("");
            let code = [text("code"), text("type")]
                .into_iter()
                .find(|c| !c.is_empty())
                .unwrap_or("upstream_error")
                .to_string();
            self.writer.error(out, &code, text("message"));
            return;
        }
        self.writer.chunk(out, &chunk);
    }
}

impl ResponseTranslator for ResponsesFromChat {
    fn stream_content_type(&self) -> &'static str {
        self.inner.stream_content_type()
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        self.inner.error(head, body)
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let chat = self.inner.unary(body)?;
        let chat: Value = serde_json::from_slice(chat.as_deref().unwrap_or(body))
            .map_err(|e| UnreadableAnswer::new("a chat completion", e))?;
        let choice = chat.pointer("/choices/0").unwrap_or(&Value::Null);
        let items = items_from_message(choice.get("message").unwrap_or(&Value::Null));
        let ending =
            Ending::from_finish_reason(choice.get("finish_reason").and_then(Value::as_str));
        let header = &mut self.writer.header;
        if let Some(model) = self
            .inner
            .response_model()
            .or(chat.get("model").and_then(Value::as_str))
        {
            header.model = model.to_string();
        }
        let usage = self.inner.usage();
        let response = header.response(&items, Some(&usage), Some(ending));
        Ok(Some(response.to_string().into_bytes()))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let chat = self.inner.stream_chunk(chunk, end_of_stream);
        let events = self
            .splitter
            .push_piece(chat.as_deref().unwrap_or(chunk), end_of_stream);
        let mut out = Vec::new();
        for event in &events {
            self.chat_event(&mut out, event);
        }
        if end_of_stream && !self.writer.ended() {
            self.writer.error(
                &mut out,
                "upstream_error",
                crate::schema::STREAM_CUT_MESSAGE,
            );
        }
        Some(out)
    }

    fn usage(&self) -> Usage {
        self.inner.usage()
    }

    fn response_model(&self) -> Option<&str> {
        self.inner.response_model()
    }

    fn saw_output(&self) -> bool {
        self.inner.saw_output()
    }

    fn stream_complete(&self) -> bool {
        self.writer.ended()
    }

    fn stream_failed(&self) -> bool {
        self.writer.failed() || self.inner.stream_failed()
    }

    fn stream_sequence(&self) -> u64 {
        self.writer.sequence()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resources::SchemaSpec;
    use crate::schema::fixtures::{load, response_body};
    use bytes::Bytes;
    use std::sync::Arc;

    fn claude() -> Arc<dyn BackendSchema> {
        crate::schema::build(&SchemaSpec {
            name: "Anthropic".into(),
            version: None,
            prefix: None,
        })
        .unwrap()
    }

    fn streamed(pieces: &[&[u8]]) -> Vec<Value> {
        let body = br#"{"model":"claude","input":"hi","stream":true}"#;
        let request = ClientRequest::parse(ApiKind::Responses, Bytes::from_static(body)).unwrap();
        let mut t = translator(claude().as_ref(), &request);
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            out.extend(
                t.stream_chunk(piece, i + 1 == pieces.len())
                    .unwrap_or_default(),
            );
        }
        String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// The event types and texts, which do not depend on generated ids.
    fn shape(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["type"],
                    e.get("delta").or(e.get("text")).unwrap_or(&Value::Null)
                )
            })
            .collect()
    }

    #[test]
    fn a_stream_gives_the_same_events_wherever_the_provider_splits_it() {
        let body = response_body(&load("anthropic/messages-stream-tool-use.json"));
        let whole = streamed(&[&body]);
        assert_eq!(whole.last().unwrap()["type"], "response.completed");
        for cut in (1..body.len()).step_by(97) {
            assert_eq!(
                shape(&streamed(&[&body[..cut], &body[cut..]])),
                shape(&whole),
                "cut {cut}"
            );
        }
        let numbers: Vec<u64> = whole
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, (0..whole.len() as u64).collect::<Vec<_>>());
    }

    #[test]
    fn a_cut_stream_ends_with_the_responses_error_event() {
        let body = response_body(&load("anthropic/messages-stream-text.json"));
        // Cut at the end of an event in the middle, as a provider that stops sending does.
        let half = body.len() / 2;
        let cut = half + body[half..].windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        let events = streamed(&[&body[..cut]]);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["message"], crate::schema::STREAM_CUT_MESSAGE);
        assert_eq!(
            last["sequence_number"].as_u64().unwrap() as usize,
            events.len() - 1
        );
        assert!(events.iter().all(|e| e["type"] != "response.completed"));
    }
}
