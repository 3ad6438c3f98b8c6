//! Gemini answers → OpenAI chat completions: the unary `GenerateContentResponse` becomes
//! a `chat.completion`; an `alt=sse` stream (each event a whole `GenerateContentResponse`)
//! becomes `chat.completion.chunk` events, one Gemini event at a time.
//!
//! Text parts are content, `thought: true` parts are `reasoning_content`, `functionCall`
//! parts are tool calls with their whole arguments (Gemini never splits a call) and their
//! `thoughtSignature` as `extra_content.google.thought_signature`. A signature on a text
//! part is dropped: OpenAI's message has no place for it and Gemini only requires the
//! signatures of function calls back. Usage is the last `usageMetadata` seen.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::ClientRequest;
use crate::framing::sse::{event_data, SseSplitter};
use crate::schema::UnreadableAnswer;
use crate::usage::Usage;

use crate::schema::completion::{generated_id, now_unix, ChunkWriter, Completion, FinishReason};
use crate::schema::vertex::error::translate_error;
use crate::schema::vertex::types::{CallIds, GenerateContentResponse};
use crate::schema::{ResponseHead, ResponseTranslator};

pub struct GeminiChatResponse {
    /// The model asked for, reported when Gemini names no `modelVersion`.
    requested_model: String,
    splitter: SseSplitter,
    writer: ChunkWriter,
    /// Set once the first stream event has given the answer its id, model and time.
    call_ids: Option<CallIds>,
    saw_tool_call: bool,
    usage: Usage,
    model: Option<String>,
    saw_output: bool,
}

impl GeminiChatResponse {
    pub fn new(request: &ClientRequest) -> Self {
        GeminiChatResponse {
            requested_model: request.model.clone(),
            splitter: SseSplitter::default(),
            writer: ChunkWriter::new(request.include_usage),
            call_ids: None,
            saw_tool_call: false,
            usage: Usage::default(),
            model: None,
            saw_output: false,
        }
    }

    /// Records what every response carries: usage (cumulative in Gemini: the last wins)
    /// and the model version.
    fn observe(&mut self, response: &GenerateContentResponse) {
        if let Some(meta) = &response.usage_metadata {
            self.usage = meta.usage();
        }
        if self.model.is_none() {
            self.model = response.model_version.clone().filter(|m| !m.is_empty());
        }
    }

    fn model_name(&self) -> String {
        self.model
            .clone()
            .unwrap_or_else(|| self.requested_model.clone())
    }

    fn completion(&mut self, response: &GenerateContentResponse) -> Completion {
        let mut call_ids = CallIds::new(response.response_id.as_deref());
        let mut completion = Completion {
            id: answer_id(response),
            model: self.model_name(),
            created: created(response),
            usage: self.usage,
            ..Completion::default()
        };
        for part in response.parts() {
            if let Some(call) = &part.function_call {
                completion
                    .tool_calls
                    .push(call_ids.tool_call(call, part.thought_signature.as_deref()));
            } else if let Some(text) = &part.text {
                let target = if part.thought {
                    &mut completion.reasoning
                } else {
                    &mut completion.text
                };
                target.push_str(text);
            }
        }
        completion.finish_reason = Some(
            response
                .finish(!completion.tool_calls.is_empty())
                .unwrap_or(FinishReason::Stop),
        );
        completion
    }

    /// Translates one SSE event of the stream.
    fn stream_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let Some(data) = event_data(raw) else {
            return;
        };
        let Ok(response) = serde_json::from_str::<GenerateContentResponse>(&data) else {
            tracing::debug!("skipping a stream event that is not a Gemini response");
            return;
        };
        if let Some(error) = &response.error {
            self.writer
                .error(out, &error.message, error.openai_type(500));
            return;
        }
        self.observe(&response);
        if self.call_ids.is_none() {
            // The first event names the answer for the whole stream.
            self.writer.id = answer_id(&response);
            self.writer.model = self.model_name();
            self.writer.created = created(&response);
            self.call_ids = Some(CallIds::new(response.response_id.as_deref()));
        }
        let Some(call_ids) = self.call_ids.as_mut() else {
            return;
        };
        for part in response.parts() {
            if let Some(call) = &part.function_call {
                let call = call_ids.tool_call(call, part.thought_signature.as_deref());
                self.writer.tool_call(out, &call);
                self.saw_tool_call = true;
                self.saw_output = true;
            } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                if part.thought {
                    self.writer.reasoning(out, text);
                } else {
                    self.writer.text(out, text);
                }
                self.saw_output = true;
            }
        }
        if let Some(finish) = response.finish(self.saw_tool_call) {
            self.writer.finish(out, finish);
        }
    }
}

fn answer_id(response: &GenerateContentResponse) -> String {
    response
        .response_id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(generated_id)
}

fn created(response: &GenerateContentResponse) -> u64 {
    response
        .create_time
        .as_deref()
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        .and_then(|at| u64::try_from(at.unix_timestamp()).ok())
        .unwrap_or_else(now_unix)
}

impl ResponseTranslator for GeminiChatResponse {
    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        translate_error(head.status, body)
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let response = serde_json::from_slice::<GenerateContentResponse>(body)
            .map_err(|e| UnreadableAnswer::new("a Gemini answer", e))?;
        self.observe(&response);
        let completion = self.completion(&response);
        self.saw_output = !completion.text.is_empty() || !completion.tool_calls.is_empty();
        Ok(Some(completion.to_json()))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut events = self.splitter.push(chunk);
        if end_of_stream {
            events.extend(self.splitter.finish());
        }
        let mut out = Vec::with_capacity(chunk.len());
        for event in &events {
            self.stream_event(event, &mut out);
        }
        if end_of_stream {
            self.writer.end(&mut out, &self.usage);
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

    fn stream_failed(&self) -> bool {
        self.writer.failed()
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
