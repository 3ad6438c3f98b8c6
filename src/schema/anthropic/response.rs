//! Anthropic Messages responses → OpenAI chat completions: the unary message, the SSE
//! event stream, and errors. Shared by the Anthropic, GCPAnthropic and AWSAnthropic
//! schemas (Bedrock wraps the same events in its binary event-stream, see
//! `AnthropicResponse::event` in [`super::stream`]).
//!
//! Mapping:
//! - `text` blocks → `content`; `thinking` → `reasoning_content`, and with its
//!   `signature` into `thinking_blocks` (the client sends them back on the next turn);
//!   `redacted_thinking` → `thinking_blocks`; `tool_use` → `tool_calls` (id kept, input
//!   as JSON text).
//! - `stop_reason`: end_turn, stop_sequence, pause_turn → stop; max_tokens,
//!   model_context_window_exceeded → length; tool_use → tool_calls; refusal →
//!   content_filter.
//! - errors: Anthropic's `error.type` becomes the OpenAI `type` and `code`; Google's
//!   error format (Vertex's front end) is read too.
//! - usage: `prompt_tokens` = input + cache read + cache creation (OpenAI counts cached
//!   input in the prompt), `cached_tokens` = cache read. Counts that `message_delta`
//!   repeats or corrects (newer API versions) replace those of `message_start`.

use serde::Deserialize;
use serde_json::Value;

use crate::api::error::error_body;
use crate::api::ClientRequest;
use crate::framing::sse::{event_data, SseSplitter};
use crate::schema::completion::{now_unix, ChunkWriter, Completion, FinishReason, ToolCallOut};
use crate::schema::{ResponseHead, ResponseTranslator, UnreadableAnswer};
use crate::usage::Usage;

pub fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Anthropic's usage counts; absent fields keep their earlier value in a stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

/// The raw counts, kept apart so stream updates can replace one at a time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl Counts {
    pub(crate) fn update(&mut self, u: &AnthropicUsage) {
        self.input = u.input_tokens.unwrap_or(self.input);
        self.output = u.output_tokens.unwrap_or(self.output);
        self.cache_read = u.cache_read_input_tokens.unwrap_or(self.cache_read);
        self.cache_creation = u.cache_creation_input_tokens.unwrap_or(self.cache_creation);
    }

    pub(crate) fn usage(&self) -> Usage {
        let prompt = self
            .input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_creation);
        Usage {
            input: prompt,
            cached_input: self.cache_read,
            cache_creation_input: self.cache_creation,
            output: self.output,
            reasoning: 0,
            total: prompt.saturating_add(self.output),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Value>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

pub struct AnthropicResponse {
    pub(super) splitter: SseSplitter,
    pub(super) writer: ChunkWriter,
    pub(super) counts: Counts,
    pub(super) model: Option<String>,
    pub(super) saw_output: bool,
    /// OpenAI tool-call index of each content block index, for `input_json_delta`.
    pub(super) tool_blocks: Vec<(u64, usize)>,
    /// The thinking text of the current thinking block: its signature covers the text,
    /// so the block is handed to the client whole, when the signature arrives.
    pub(super) thinking: String,
}

impl AnthropicResponse {
    pub fn new(request: &ClientRequest) -> Self {
        let mut writer = ChunkWriter::new(request.include_usage);
        // Claude on Vertex may answer without a model: the client's then names it, as on
        // Bedrock.
        writer.model.clone_from(&request.model);
        AnthropicResponse {
            splitter: SseSplitter::default(),
            writer,
            counts: Counts::default(),
            model: None,
            saw_output: false,
            tool_blocks: Vec::new(),
            thinking: String::new(),
        }
    }

    fn completion(&mut self, message: Message) -> Completion {
        self.counts.update(&message.usage);
        self.model = Some(message.model.clone()).filter(|m| !m.is_empty());
        let mut out = Completion {
            id: message.id,
            model: self
                .model
                .clone()
                .unwrap_or_else(|| self.writer.model.clone()),
            created: now_unix(),
            finish_reason: message.stop_reason.as_deref().map(finish_reason),
            usage: self.counts.usage(),
            ..Default::default()
        };
        for block in &message.content {
            let text = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
            match text("type") {
                "text" => out.text.push_str(text("text")),
                "thinking" => {
                    out.reasoning.push_str(text("thinking"));
                    out.thinking_blocks.push(block.clone());
                }
                "redacted_thinking" => out.thinking_blocks.push(block.clone()),
                "tool_use" => out.tool_calls.push(ToolCallOut {
                    id: text("id").to_string(),
                    name: text("name").to_string(),
                    arguments: block
                        .get("input")
                        .map_or_else(|| "{}".into(), Value::to_string),
                    thought_signature: None,
                }),
                _ => {}
            }
        }
        self.saw_output = true;
        out
    }
}

/// An Anthropic error body as an OpenAI one, or None when it is not Anthropic's.
pub fn openai_error(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    let kind = error.get("type")?.as_str()?;
    let message = error.get("message").and_then(Value::as_str).unwrap_or(kind);
    Some(error_body(message, kind, kind))
}

impl ResponseTranslator for AnthropicResponse {
    fn rewrites_body(&self) -> bool {
        true
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        // Vertex's front end answers Claude requests it refuses (quota, auth, unknown
        // model) in Google's error format, sometimes wrapped in an array.
        openai_error(body)
            .or_else(|| crate::schema::vertex::error::translate_error(head.status, body))
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let message = serde_json::from_slice::<Message>(body)
            .map_err(|e| UnreadableAnswer::new("an Anthropic message", e))?;
        Ok(Some(self.completion(message).to_json()))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut events = self.splitter.push(chunk);
        if end_of_stream {
            events.extend(self.splitter.finish());
        }
        let mut out = Vec::new();
        for raw in events {
            if let Some(data) = event_data(&raw) {
                self.event(data.as_bytes(), &mut out);
            }
        }
        if end_of_stream {
            self.end_of_stream(&mut out);
        }
        Some(out)
    }

    fn usage(&self) -> Usage {
        self.counts.usage()
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
mod tests {
    use super::*;
    use crate::api::ApiKind;
    use crate::schema::fixtures::{load, reassemble, response_body, sse_payloads, Assembled};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn request(stream: bool, include_usage: bool) -> ClientRequest {
        let body = format!(
            r#"{{"model":"claude","stream":{stream},"stream_options":{{"include_usage":{include_usage}}},"messages":[]}}"#
        );
        ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(body)).unwrap()
    }

    fn unary(fixture: &str) -> (Value, Value) {
        let recorded = load(fixture);
        let mut t = AnthropicResponse::new(&request(false, false));
        let out = t.unary(&response_body(&recorded)).unwrap().unwrap();
        (
            recorded["response"]["body"].clone(),
            serde_json::from_slice(&out).unwrap(),
        )
    }

    #[test]
    fn unary_text_usage_and_finish() {
        let (recorded, out) = unary("anthropic/messages-cache-write-1h.json");
        let u = &recorded["usage"];
        let n = |k: &str| u[k].as_u64().unwrap();
        let prompt =
            n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
        assert_eq!(out["id"], recorded["id"]);
        assert_eq!(out["model"], recorded["model"]);
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(
            out["choices"][0]["message"]["content"],
            recorded["content"][0]["text"]
        );
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        assert_eq!(out["usage"]["prompt_tokens"], prompt);
        assert_eq!(
            out["usage"]["prompt_tokens_details"]["cached_tokens"],
            n("cache_read_input_tokens")
        );
        assert_eq!(out["usage"]["completion_tokens"], n("output_tokens"));
        assert_eq!(out["usage"]["total_tokens"], prompt + n("output_tokens"));
    }

    #[test]
    fn an_answer_without_a_model_names_the_requested_one() {
        // Claude on Vertex (rawPredict) may leave `model` out of its answer.
        let mut recorded = load("anthropic/messages-text.json")["response"]["body"].clone();
        recorded.as_object_mut().unwrap().remove("model");
        let mut t = AnthropicResponse::new(&request(false, false));
        let out = t.unary(recorded.to_string().as_bytes()).unwrap().unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["model"], "claude");
        let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"\",\"usage\":{\"input_tokens\":3}}}\n\n";
        let mut t = AnthropicResponse::new(&request(true, false));
        let out = t.stream_chunk(stream, false).unwrap();
        let first = sse_payloads(&out);
        assert_eq!(first[0]["model"], "claude");
    }

    #[test]
    fn unary_parallel_tool_calls() {
        let (recorded, out) = unary("anthropic/messages-tool-use.json");
        let uses: Vec<&Value> = recorded["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .collect();
        let calls = out["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap();
        assert_eq!(calls.len(), uses.len());
        for (call, used) in calls.iter().zip(uses) {
            assert_eq!(call["id"], used["id"]);
            assert_eq!(call["function"]["name"], used["name"]);
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args, used["input"]);
        }
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn unary_thinking_keeps_its_signature() {
        let (recorded, out) = unary("anthropic/messages-thinking.json");
        let message = &out["choices"][0]["message"];
        assert_eq!(
            message["reasoning_content"],
            recorded["content"][0]["thinking"]
        );
        assert_eq!(
            message["thinking_blocks"][0]["signature"],
            recorded["content"][0]["signature"]
        );
        assert_eq!(message["content"], recorded["content"][1]["text"]);
    }

    /// What a recorded Anthropic stream holds, read from its events.
    fn expected(payloads: &[Value]) -> Assembled {
        let mut a = Assembled {
            first_role: Some("assistant".into()),
            done: true,
            ..Default::default()
        };
        let mut blocks: Vec<(u64, usize)> = Vec::new();
        let (mut input, mut output, mut read, mut write) = (0, 0, 0, 0);
        let mut count = |u: &Value| {
            let get = |k: &str, old: u64| u[k].as_u64().unwrap_or(old);
            input = get("input_tokens", input);
            output = get("output_tokens", output);
            read = get("cache_read_input_tokens", read);
            write = get("cache_creation_input_tokens", write);
        };
        for p in payloads {
            match p["type"].as_str().unwrap() {
                "message_start" => count(&p["message"]["usage"]),
                "message_delta" => {
                    count(&p["usage"]);
                    a.finish_reason = Some(
                        finish_reason(p["delta"]["stop_reason"].as_str().unwrap())
                            .as_str()
                            .into(),
                    );
                }
                "content_block_start" if p["content_block"]["type"] == "tool_use" => {
                    blocks.push((p["index"].as_u64().unwrap(), a.tool_calls.len()));
                    let b = &p["content_block"];
                    a.tool_calls.push((
                        b["id"].as_str().unwrap().into(),
                        b["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                "content_block_delta" => {
                    let d = &p["delta"];
                    a.text.push_str(d["text"].as_str().unwrap_or(""));
                    a.reasoning.push_str(d["thinking"].as_str().unwrap_or(""));
                    if let Some(s) = d["signature"].as_str() {
                        a.signatures.push(s.into());
                    }
                    if let Some(j) = d["partial_json"].as_str() {
                        let at = blocks
                            .iter()
                            .find(|(i, _)| Some(*i) == p["index"].as_u64())
                            .unwrap()
                            .1;
                        a.tool_calls[at].2.push_str(j);
                    }
                }
                _ => {}
            }
        }
        let prompt = input + read + write;
        a.usage = Some(serde_json::json!({
            "prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": read},
            "completion_tokens_details": {"reasoning_tokens": 0}
        }));
        if write > 0 {
            a.usage.as_mut().unwrap()["prompt_tokens_details"]["cache_creation_tokens"] =
                write.into();
        }
        a
    }

    fn translate(body: &[u8], cuts: &[usize], include_usage: bool) -> String {
        let mut t = AnthropicResponse::new(&request(true, include_usage));
        t.writer.created = 0; // the same output at any split, whatever the clock says
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let cut = cut.clamp(from, body.len());
            out.extend(t.stream_chunk(&body[from..cut], cut == body.len()).unwrap());
            from = cut;
        }
        String::from_utf8(out).unwrap()
    }

    const STREAMS: &[&str] = &[
        "anthropic/messages-stream-text.json",
        "anthropic/messages-stream-tool-use.json",
        "anthropic/messages-stream-thinking.json",
        "anthropic/messages-stream-cache-read.json",
    ];

    #[test]
    fn recorded_streams_give_what_they_hold_at_every_split() {
        for fixture in STREAMS {
            let body = response_body(&load(fixture));
            let want = expected(&sse_payloads(&body));
            let whole = translate(&body, &[], true);
            assert_eq!(reassemble(whole.as_bytes()), want, "{fixture}");
            for cut in (0..body.len()).step_by(7) {
                assert_eq!(
                    translate(&body, &[cut], true),
                    whole,
                    "{fixture} cut at {cut}"
                );
            }
            // Without include_usage the usage chunk is not sent.
            assert_eq!(
                reassemble(translate(&body, &[], false).as_bytes()).usage,
                None
            );
        }
    }

    #[test]
    fn streamed_thinking_block_carries_its_whole_text_with_the_signature() {
        let body = response_body(&load("anthropic/messages-stream-thinking.json"));
        let payloads = sse_payloads(&body);
        let thinking: String = payloads
            .iter()
            .filter_map(|p| p.pointer("/delta/thinking").and_then(Value::as_str))
            .collect();
        let out = translate(&body, &[], false);
        let blocks: Vec<Value> = sse_payloads(out.as_bytes())
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/thinking_blocks/0").cloned())
            .collect();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0]["thinking"], thinking.as_str());
        assert!(!thinking.is_empty() && blocks[0]["signature"].is_string());
    }

    #[test]
    fn cut_stream_ends_with_an_error_event() {
        let body = response_body(&load(STREAMS[1]));
        let half = translate(&body[..body.len() / 2], &[], true);
        let a = reassemble(half.as_bytes());
        assert!(a.error.is_some() && !a.done);
    }

    #[test]
    fn mid_stream_error_event_becomes_an_openai_error() {
        let body = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let a = reassemble(translate(body, &[], false).as_bytes());
        assert_eq!(a.error.unwrap()["type"], "overloaded_error");
    }

    #[test]
    fn recorded_errors_become_openai_errors() {
        for fixture in [
            "anthropic/error-400-invalid-request.json",
            "anthropic/error-401-authentication.json",
        ] {
            let recorded = load(fixture);
            let body = response_body(&recorded);
            let out: Value = serde_json::from_slice(&openai_error(&body).unwrap()).unwrap();
            let e = &recorded["response"]["body"]["error"];
            assert_eq!(out["error"]["message"], e["message"]);
            assert_eq!(out["error"]["type"], e["type"]);
        }
        assert!(openai_error(b"upstream connect error").is_none());
    }

    proptest! {
        #[test]
        fn any_bytes_any_split_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), cuts in proptest::collection::vec(0usize..2048, 0..6)) {
            let mut cuts = cuts;
            cuts.sort();
            translate(&bytes, &cuts, true);
        }

        #[test]
        fn recorded_stream_is_split_invariant(which in 0..STREAMS.len(), cuts in proptest::collection::vec(0usize..20000, 0..8)) {
            let body = response_body(&load(STREAMS[which]));
            let mut cuts = cuts;
            cuts.sort();
            prop_assert_eq!(translate(&body, &cuts, true), translate(&body, &[], true));
        }
    }
}
