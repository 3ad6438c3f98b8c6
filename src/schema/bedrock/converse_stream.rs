//! A ConverseStream event stream → OpenAI `chat.completion.chunk`s, frame by frame
//! (the mapping is [`super::converse_response`]'s).

use crate::framing::aws_eventstream::{Frame, MessageType};
use crate::schema::completion::ToolCallOut;

use super::converse_response::{finish_reason, redacted_block, thinking_block, ConverseResponse};
use super::converse_types::{
    BlockDelta, BlockStart, ConverseEvent, MessageStop, Metadata, ReasoningDelta,
};
use super::errors;

impl ConverseResponse {
    pub(super) fn on_frame(&mut self, out: &mut Vec<u8>, frame: Frame) {
        match frame.message_type {
            MessageType::Event => match ConverseEvent::parse(&frame.name, &frame.payload) {
                Ok(event) => self.on_event(out, event),
                Err(e) => {
                    let message = format!(
                        "AWS Bedrock sent a `{}` event that is not valid: {e}",
                        frame.name
                    );
                    self.writer.error(out, &message, "upstream_error");
                }
            },
            MessageType::Exception | MessageType::Error => {
                let message = errors::exception_message(&frame.name, &frame.payload);
                let error_type = errors::openai_error_type(0, Some(&frame.name));
                self.writer.error(out, &message, error_type);
            }
        }
    }

    fn on_event(&mut self, out: &mut Vec<u8>, event: ConverseEvent) {
        match event {
            ConverseEvent::MessageStart => self.writer.start(out),
            ConverseEvent::ContentBlockStart(e) => self.on_block_start(out, e),
            ConverseEvent::ContentBlockDelta(e) => self.on_block_delta(out, e),
            ConverseEvent::ContentBlockStop(e) => {
                self.flush_thinking(out, Some(e.content_block_index))
            }
            ConverseEvent::MessageStop(e) => self.on_message_stop(out, e),
            ConverseEvent::Metadata(e) => self.on_metadata(out, e),
            // Newer events (e.g. server tool traces) carry nothing an OpenAI client reads.
            ConverseEvent::Unknown => {}
        }
    }

    fn on_block_start(&mut self, out: &mut Vec<u8>, event: BlockStart) {
        let Some(tool) = event.start.and_then(|s| s.tool_use) else {
            return;
        };
        self.saw_output = true;
        let call = ToolCallOut {
            id: tool.tool_use_id,
            name: tool.name,
            arguments: String::new(),
            thought_signature: None,
        };
        let index = self.writer.tool_call(out, &call);
        self.tool_calls.insert(event.content_block_index, index);
    }

    fn on_block_delta(&mut self, out: &mut Vec<u8>, event: BlockDelta) {
        let block = event.content_block_index;
        let delta = event.delta;
        if let Some(text) = delta.text {
            self.saw_output |= !text.is_empty();
            self.writer.text(out, &text);
        }
        if let Some(tool) = delta.tool_use {
            let index = match self.tool_calls.get(&block) {
                Some(&index) => index,
                None => {
                    // Input for a block that never started as a tool use: Bedrock sent no id
                    // or name for it. The input is kept, under a call of its own.
                    tracing::warn!(
                        block,
                        "Bedrock streamed tool input for a content block it never started"
                    );
                    let call = ToolCallOut {
                        id: format!("call_{}", uuid::Uuid::new_v4().simple()),
                        name: String::new(),
                        arguments: String::new(),
                        thought_signature: None,
                    };
                    let index = self.writer.tool_call(out, &call);
                    self.tool_calls.insert(block, index);
                    index
                }
            };
            self.saw_output = true;
            self.writer.tool_arguments(out, index, &tool.input);
        }
        if let Some(reasoning) = delta.reasoning_content {
            self.on_reasoning(out, block, reasoning);
        }
    }

    fn on_reasoning(&mut self, out: &mut Vec<u8>, block: u64, delta: ReasoningDelta) {
        if let Some(text) = delta.text {
            self.saw_output |= !text.is_empty();
            self.writer.reasoning(out, &text);
            self.thinking.entry(block).or_default().text.push_str(&text);
        }
        if let Some(signature) = delta.signature {
            let pending = self.thinking.entry(block).or_default();
            pending
                .signature
                .get_or_insert_with(String::new)
                .push_str(&signature);
        }
        if let Some(data) = delta.redacted_content {
            self.writer.thinking_block(out, redacted_block(&data));
        }
    }

    /// Emits the finished reasoning block `only`, or every one still open.
    fn flush_thinking(&mut self, out: &mut Vec<u8>, only: Option<u64>) {
        let blocks: Vec<u64> = match only {
            Some(block) => vec![block],
            None => self.thinking.keys().copied().collect(),
        };
        for block in blocks {
            if let Some(pending) = self.thinking.remove(&block) {
                let entry = thinking_block(&pending.text, pending.signature.as_deref());
                self.writer.thinking_block(out, entry);
            }
        }
    }

    fn on_message_stop(&mut self, out: &mut Vec<u8>, event: MessageStop) {
        self.flush_thinking(out, None);
        let reason = finish_reason(event.stop_reason.as_deref().unwrap_or(""));
        self.writer.finish(out, reason);
    }

    fn on_metadata(&mut self, out: &mut Vec<u8>, event: Metadata) {
        if let Some(usage) = event.usage {
            self.usage = usage.to_usage();
        }
        // Metadata is ConverseStream's last event.
        self.writer.end(out, &self.usage);
    }
}
