//! Anthropic's Messages SSE events → OpenAI `chat.completion.chunk`s, event by event,
//! written with the shared [`ChunkWriter`] rules (mapping in [`super::response`]).

use serde::de::IgnoredAny;
use serde_json::json;

use crate::schema::anthropic::events::{BlockStart, Delta, StreamEvent};
use crate::schema::anthropic::response::{finish_reason, AnthropicResponse};
use crate::schema::completion::ToolCallOut;

impl AnthropicResponse {
    /// Translates one stream event (the JSON of an SSE `data:` line, or of a Bedrock
    /// `chunk`), appending the OpenAI events it becomes to `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match StreamEvent::parse(data) {
            Ok(event) => self.on_event(event, out),
            // JSON of a shape this gateway does not know is skipped, as new event types are.
            Err(_) if serde_json::from_slice::<IgnoredAny>(data).is_ok() => {}
            Err(_) => self.writer.error(
                out,
                "the provider sent a stream event that is not JSON",
                "upstream_error",
            ),
        }
    }

    fn on_event(&mut self, event: StreamEvent, out: &mut Vec<u8>) {
        if event.is_output() {
            self.saw_output = true;
        }
        match event {
            StreamEvent::MessageStart { message } => {
                if let Some(id) = message.id {
                    self.writer.id = id;
                }
                if let Some(model) = message.model.filter(|m| !m.is_empty()) {
                    self.writer.model.clone_from(&model);
                    self.model = Some(model);
                }
                if let Some(u) = &message.usage {
                    self.counts.update(u);
                }
                self.writer.start(out);
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                BlockStart::Text { text } => self.writer.text(out, &text),
                BlockStart::ToolUse { id, name } => {
                    let call = ToolCallOut {
                        id,
                        name,
                        arguments: String::new(),
                        thought_signature: None,
                    };
                    let at = self.writer.tool_call(out, &call);
                    self.tool_blocks.push((index, at));
                }
                BlockStart::RedactedThinking { data } => self
                    .writer
                    .thinking_block(out, json!({"type": "redacted_thinking", "data": data})),
                BlockStart::Thinking { thinking } => {
                    self.writer.reasoning(out, &thinking);
                    self.thinking = thinking;
                }
                BlockStart::Other => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                Delta::Text { text } => self.writer.text(out, &text),
                Delta::Thinking { thinking } => {
                    self.thinking.push_str(&thinking);
                    self.writer.reasoning(out, &thinking);
                }
                Delta::Signature { signature } => {
                    let thinking = std::mem::take(&mut self.thinking);
                    self.writer.thinking_block(
                        out,
                        json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                    );
                }
                Delta::InputJson { partial_json } => {
                    if let Some(&(_, at)) = self.tool_blocks.iter().find(|(i, _)| *i == index) {
                        self.writer.tool_arguments(out, at, &partial_json);
                    }
                }
                Delta::Other => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.counts.update(u);
                }
                if let Some(reason) = delta.stop_reason {
                    self.writer.finish(out, finish_reason(&reason));
                }
            }
            StreamEvent::MessageStop => {
                let usage = self.counts.usage();
                self.writer.end(out, &usage);
            }
            StreamEvent::Error { error } => {
                let message = error
                    .message
                    .as_deref()
                    .unwrap_or("the provider failed mid-stream");
                let kind = error.kind.as_deref().unwrap_or("upstream_error");
                self.writer.error(out, message, kind);
            }
            // `ping`, block stops and event types added later.
            StreamEvent::ContentBlockStop | StreamEvent::Ping | StreamEvent::Unknown => {}
        }
    }

    /// Ends the client's stream with an error event (a failure the transport reported).
    pub fn fail(&mut self, out: &mut Vec<u8>, message: &str, kind: &str) {
        self.writer.error(out, message, kind);
    }

    /// The end of the provider's stream: a stream cut before `message_stop` ends with an
    /// error event rather than silently.
    pub fn end_of_stream(&mut self, out: &mut Vec<u8>) {
        if !self.writer.ended() {
            let usage = self.counts.usage();
            self.writer.end(out, &usage);
        }
    }
}
