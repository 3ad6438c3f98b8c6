//! Test access to the recorded provider traffic in `e2e/fixtures` (see its README): the
//! one place unit tests read a recording from.

use serde_json::Value;

use crate::wire::ResponseHead;

/// The recorded interaction at `path` (relative to `e2e/fixtures`), e.g.
/// `load("vertex/generate-content-text.json")`.
pub fn load(path: &str) -> Value {
    let full = format!("{}/e2e/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The response body of the first interaction of a recorded YAML cassette (the OpenAI
/// recordings, e.g. `openai/chat-streaming.yaml`).
pub fn cassette_body(path: &str) -> Vec<u8> {
    let full = format!("{}/e2e/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    let cassette: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"));
    let body = cassette.pointer("/interactions/0/response/body");
    body.and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{full}: no response body"))
        .as_bytes()
        .to_vec()
}

/// The recorded response body of the interaction at `path`.
pub fn recorded_body(path: &str) -> Vec<u8> {
    response_body(&load(path))
}

/// A recorded response header, by case-insensitive name.
pub fn response_header<'a>(interaction: &'a Value, name: &str) -> Option<&'a str> {
    interaction["response"]["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))?
        .1
        .as_str()
}

/// The head of the recorded response, as a translator reads it.
pub fn response_head(interaction: &Value) -> ResponseHead {
    ResponseHead {
        status: interaction["response"]["status"].as_u64().expect("status") as u16,
        content_type: response_header(interaction, "content-type")
            .unwrap_or("application/json")
            .to_ascii_lowercase(),
        aws_error_type: response_header(interaction, "x-amzn-errortype").map(str::to_string),
    }
}

/// Whether the recorded answer is a stream (SSE or AWS event-stream).
pub fn is_stream(interaction: &Value) -> bool {
    let head = response_head(interaction);
    head.content_type.starts_with("text/event-stream")
        || head
            .content_type
            .starts_with("application/vnd.amazon.eventstream")
}

/// The recorded response body's bytes: SSE text as recorded, JSON re-serialized, or the
/// decoded `body_base64`.
pub fn response_body(interaction: &Value) -> Vec<u8> {
    use base64::Engine;
    let response = &interaction["response"];
    if let Some(b64) = response["body_base64"].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("recorded base64");
    }
    match &response["body"] {
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// The JSON `data:` payloads of a recorded SSE body, in order.
pub fn sse_payloads(body: &[u8]) -> Vec<Value> {
    let mut splitter = crate::framing::sse::SseSplitter::default();
    let mut events = splitter.push(body);
    events.extend(splitter.finish());
    events
        .iter()
        .filter_map(|e| crate::framing::sse::event_data(e))
        .filter_map(|d| serde_json::from_str(&d).ok())
        .collect()
}

/// An OpenAI chat stream put back together, as a client SDK would.
#[derive(Debug, Default, PartialEq)]
pub struct Assembled {
    pub text: String,
    pub reasoning: String,
    /// (id, name, arguments) by tool-call index.
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: Option<String>,
    pub usage: Option<Value>,
    pub first_role: Option<String>,
    pub error: Option<Value>,
    pub done: bool,
    pub signatures: Vec<String>,
}

/// Reassembles `sse` (chat.completion.chunk events), checking the invariants clients
/// rely on: a tool call's first delta has its id and name, its index stays.
pub fn reassemble(sse: &[u8]) -> Assembled {
    let mut a = Assembled::default();
    let mut splitter = crate::framing::sse::SseSplitter::default();
    let mut events = splitter.push(sse);
    events.extend(splitter.finish());
    for (n, raw) in events.iter().enumerate() {
        let data = crate::framing::sse::event_data(raw).expect("every event has data");
        if data == "[DONE]" {
            a.done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).expect("events are JSON");
        if chunk.get("error").is_some() {
            a.error = Some(chunk["error"].clone());
            continue;
        }
        if !chunk["usage"].is_null() {
            a.usage = Some(chunk["usage"].clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        if n == 0 {
            a.first_role = delta["role"].as_str().map(str::to_string);
        }
        a.text.push_str(delta["content"].as_str().unwrap_or(""));
        a.reasoning
            .push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        for block in delta["thinking_blocks"].as_array().into_iter().flatten() {
            if let Some(s) = block["signature"].as_str() {
                a.signatures.push(s.to_string());
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().expect("tool call index") as usize;
            if index == a.tool_calls.len() {
                let id = call["id"].as_str().expect("first delta has the id");
                let name = call["function"]["name"].as_str().expect("and the name");
                a.tool_calls.push((id.into(), name.into(), String::new()));
            }
            assert!(
                index < a.tool_calls.len(),
                "tool call index jumped: {index}"
            );
            a.tool_calls[index]
                .2
                .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            a.finish_reason = Some(reason.to_string());
        }
    }
    a
}
