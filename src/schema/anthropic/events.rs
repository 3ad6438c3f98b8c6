//! Anthropic's Messages stream events (the JSON of each SSE `data:` line, or of a Bedrock
//! InvokeModelWithResponseStream `chunk`), parsed once into one typed enum that every
//! translator reading them shares: the OpenAI translation ([`super::response`]), the
//! meter of passed-through Messages answers ([`super::messages`]) and the Bedrock
//! invoke stream for Messages clients. Fields the gateway does not read are skipped;
//! missing ones take their default, as the translators always tolerated.

use serde::Deserialize;

use super::response::AnthropicUsage;

/// One stream event, tagged by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        #[serde(default)]
        message: MessageHead,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u64,
        content_block: BlockStart,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u64,
        delta: Delta,
    },
    ContentBlockStop,
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Ping,
    Error {
        #[serde(default)]
        error: ErrorBody,
    },
    /// An event type added after this gateway was written.
    #[serde(other)]
    Unknown,
}

impl StreamEvent {
    /// Parses one event's JSON.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The event's `type`, for the SSE `event:` line; None for an unknown type.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Unknown => return None,
        })
    }

    /// The `type` of any event JSON, known or not (for an event passed on unchanged).
    pub fn tag(json: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Tag {
            #[serde(rename = "type")]
            kind: String,
        }
        serde_json::from_slice::<Tag>(json)
            .ok()
            .map(|t| t.kind)
            .filter(|k| !k.is_empty())
    }

    /// Whether the event carries output (for time to first token).
    pub fn is_output(&self) -> bool {
        matches!(
            self,
            StreamEvent::ContentBlockStart { .. } | StreamEvent::ContentBlockDelta { .. }
        )
    }
}

/// What the gateway reads of a message: `message_start`'s message, or a unary answer.
#[derive(Debug, Default, Deserialize)]
pub struct MessageHead {
    /// `message` for a message.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub usage: Option<AnthropicUsage>,
}

/// The block a `content_block_start` opens.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockStart {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    /// Server tools, web search results and blocks added later.
    #[serde(other)]
    Other,
}

/// A `content_block_delta`'s delta (`text_delta`, `input_json_delta`, …).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum Delta {
    #[serde(rename = "text_delta")]
    Text {
        #[serde(default)]
        text: String,
    },
    #[serde(rename = "input_json_delta")]
    InputJson {
        #[serde(default)]
        partial_json: String,
    },
    #[serde(rename = "thinking_delta")]
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(rename = "signature_delta")]
    Signature {
        #[serde(default)]
        signature: String,
    },
    /// Citations and deltas added later.
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixtures::{load, response_body, sse_payloads};

    #[test]
    fn every_recorded_event_is_known() {
        for fixture in [
            "anthropic/messages-stream-text.json",
            "anthropic/messages-stream-tool-use.json",
            "anthropic/messages-stream-thinking.json",
            "anthropic/messages-stream-cache-read.json",
        ] {
            for payload in sse_payloads(&response_body(&load(fixture))) {
                let event = StreamEvent::parse(payload.to_string().as_bytes()).unwrap();
                assert_eq!(event.name(), payload["type"].as_str(), "{fixture}");
            }
        }
    }

    #[test]
    fn unknown_types_and_missing_fields_are_tolerated() {
        let e = StreamEvent::parse(br#"{"type":"future_event","x":1}"#).unwrap();
        assert!(matches!(e, StreamEvent::Unknown));
        let e = StreamEvent::parse(
            br#"{"type":"content_block_delta","delta":{"type":"citations_delta"}}"#,
        )
        .unwrap();
        assert!(matches!(
            e,
            StreamEvent::ContentBlockDelta {
                index: 0,
                delta: Delta::Other
            }
        ));
        assert!(StreamEvent::parse(b"not json").is_err());
        assert!(StreamEvent::parse(br#"{"no":"type"}"#).is_err());
    }
}
