//! Converse answers as OpenAI chat completions: the unary JSON document, and the
//! ConverseStream event stream as `chat.completion.chunk` SSE.

use crate::schema::UnreadableAnswer;
use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::api::ClientRequest;
use crate::framing::aws_eventstream::EventStreamDecoder;
use crate::schema::completion::{
    generated_id, now_unix, ChunkWriter, Completion, FinishReason, ToolCallOut,
};
use crate::schema::{ResponseHead, ResponseTranslator};
use crate::usage::Usage;

use super::converse_types::{ContentBlock, ConverseOutput};
use super::errors;

/// Converse `stopReason` as an OpenAI finish reason.
pub fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub(super) fn thinking_block(text: &str, signature: Option<&str>) -> Value {
    let mut block = json!({"type": "thinking", "thinking": text});
    if let Some(signature) = signature {
        block["signature"] = signature.into();
    }
    block
}

pub(super) fn redacted_block(data: &str) -> Value {
    json!({"type": "redacted_thinking", "data": data})
}

fn add_block(completion: &mut Completion, block: ContentBlock) {
    if let Some(text) = block.text {
        completion.text.push_str(&text);
    }
    if let Some(call) = block.tool_use {
        let arguments = match call.input {
            Value::Null => "{}".to_string(),
            input => input.to_string(),
        };
        completion.tool_calls.push(ToolCallOut {
            id: call.tool_use_id,
            name: call.name,
            arguments,
            thought_signature: None,
        });
    }
    if let Some(reasoning) = block.reasoning_content {
        if let Some(r) = reasoning.reasoning_text {
            completion.reasoning.push_str(&r.text);
            completion
                .thinking_blocks
                .push(thinking_block(&r.text, r.signature.as_deref()));
        }
        if let Some(data) = reasoning.redacted_content {
            completion.thinking_blocks.push(redacted_block(&data));
        }
    }
}

fn completion_of(output: ConverseOutput, model: &str) -> Completion {
    let mut completion = Completion {
        id: generated_id(),
        model: model.to_string(),
        created: now_unix(),
        finish_reason: Some(finish_reason(output.stop_reason.as_deref().unwrap_or(""))),
        usage: output.usage.unwrap_or_default().to_usage(),
        ..Completion::default()
    };
    for block in output.output.message.content {
        add_block(&mut completion, block);
    }
    completion
}

/// A reasoning block being streamed: its text is kept to hand the whole block back,
/// with its signature, as a `thinking_blocks` entry when the block stops.
#[derive(Default)]
pub(super) struct PendingThinking {
    pub(super) text: String,
    pub(super) signature: Option<String>,
}

/// Translates a Converse (unary) or ConverseStream answer.
pub struct ConverseResponse {
    pub(super) model: String,
    pub(super) decoder: EventStreamDecoder,
    pub(super) writer: ChunkWriter,
    /// Converse content block index → OpenAI tool call index.
    pub(super) tool_calls: HashMap<u64, usize>,
    /// By block index, so blocks left open are flushed in order.
    pub(super) thinking: BTreeMap<u64, PendingThinking>,
    pub(super) usage: Usage,
    pub(super) saw_output: bool,
}

impl ConverseResponse {
    pub fn new(request: &ClientRequest) -> Self {
        let mut writer = ChunkWriter::new(request.include_usage);
        writer.model = request.model.clone();
        ConverseResponse {
            model: request.model.clone(),
            decoder: EventStreamDecoder::new(),
            writer,
            tool_calls: HashMap::new(),
            thinking: BTreeMap::new(),
            usage: Usage::default(),
            saw_output: false,
        }
    }
}

impl ResponseTranslator for ConverseResponse {
    fn stream_content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn error(&mut self, head: &ResponseHead, body: &[u8]) -> Option<Vec<u8>> {
        errors::openai_error(head, body)
    }

    fn rewrites_body(&self) -> bool {
        true
    }

    fn unary(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, UnreadableAnswer> {
        let output: ConverseOutput = serde_json::from_slice(body)
            .map_err(|e| UnreadableAnswer::new("a Converse answer", e))?;
        let completion = completion_of(output, &self.model);
        self.usage = completion.usage;
        self.saw_output = true;
        Ok(Some(completion.to_json()))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for decoded in self.decoder.push(chunk) {
            match decoded {
                Ok(frame) => self.on_frame(&mut out, frame),
                Err(e) => self.writer.error(
                    &mut out,
                    &format!("AWS Bedrock sent a stream that cannot be decoded: {e}"),
                    "upstream_error",
                ),
            }
        }
        if end_of_stream {
            if let Some(e) = self.decoder.finish() {
                let message = format!("AWS Bedrock's stream was cut short: {e}");
                self.writer.error(&mut out, &message, "upstream_error");
            }
            self.writer.end(&mut out, &self.usage);
        }
        Some(out)
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn response_model(&self) -> Option<&str> {
        // Bedrock does not name the model that answered.
        None
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
    use crate::framing::aws_eventstream::testing::encode;
    use crate::schema::fixtures::{load, recorded_body};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn request(body: &str) -> ClientRequest {
        ClientRequest::parse(
            ApiKind::ChatCompletions,
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .unwrap()
    }

    fn stream_request() -> ClientRequest {
        request(r#"{"model":"claude","stream":true,"stream_options":{"include_usage":true}}"#)
    }

    fn translator(r: &ClientRequest) -> ConverseResponse {
        let mut t = ConverseResponse::new(r);
        // Fixed so outputs of different runs compare equal.
        t.writer.id = "chatcmpl-test".into();
        t.writer.created = 1;
        t
    }

    /// Runs `body` through a fresh translator, cut at `cuts`.
    fn replay(body: &[u8], cuts: &[usize]) -> (Vec<u8>, Usage) {
        let mut t = translator(&stream_request());
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, body.len());
            out.extend(t.stream_chunk(&body[at..cut], false).unwrap());
            at = cut;
        }
        out.extend(t.stream_chunk(&body[at..], true).unwrap());
        (out, t.usage())
    }

    fn events(out: &[u8]) -> Vec<Value> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n") || text.contains("\"error\""));
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    /// What the recording itself says, read from its events independently of the
    /// translator.
    #[derive(Debug, Default, PartialEq)]
    struct Expected {
        text: String,
        reasoning: String,
        signature: String,
        /// (id, name, arguments)
        tools: Vec<(String, String, String)>,
        stop_reason: String,
        usage: Value,
    }

    fn expected_from_recording(name: &str) -> Expected {
        let body = recorded_body(name);
        let mut d = EventStreamDecoder::new();
        let mut e = Expected::default();
        let mut tool_blocks: Vec<u64> = Vec::new();
        for frame in d.push(&body) {
            let frame = frame.unwrap();
            let p: Value = serde_json::from_slice(&frame.payload).unwrap();
            let index = p["contentBlockIndex"].as_u64();
            match frame.name.as_str() {
                "contentBlockStart" => {
                    let t = &p["start"]["toolUse"];
                    tool_blocks.push(index.unwrap());
                    e.tools.push((
                        t["toolUseId"].as_str().unwrap().into(),
                        t["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                "contentBlockDelta" => {
                    let delta = &p["delta"];
                    if let Some(s) = delta["text"].as_str() {
                        e.text.push_str(s);
                    }
                    if let Some(s) = delta["reasoningContent"]["text"].as_str() {
                        e.reasoning.push_str(s);
                    }
                    if let Some(s) = delta["reasoningContent"]["signature"].as_str() {
                        e.signature.push_str(s);
                    }
                    if let Some(s) = delta["toolUse"]["input"].as_str() {
                        let at = tool_blocks.iter().position(|b| Some(*b) == index).unwrap();
                        e.tools[at].2.push_str(s);
                    }
                }
                "messageStop" => e.stop_reason = p["stopReason"].as_str().unwrap().into(),
                "metadata" => e.usage = p["usage"].clone(),
                _ => {}
            }
        }
        e
    }

    /// What the client gets, accumulated from the chunks as an OpenAI SDK would.
    fn received(out: &[u8]) -> (Expected, Option<String>, Value) {
        let mut r = Expected::default();
        let mut finish = None;
        let mut usage = Value::Null;
        for ev in events(out) {
            if !ev["usage"].is_null() {
                usage = ev["usage"].clone();
            }
            let Some(choice) = ev["choices"].get(0) else {
                continue;
            };
            let delta = &choice["delta"];
            if let Some(s) = delta["content"].as_str() {
                r.text.push_str(s);
            }
            if let Some(s) = delta["reasoning_content"].as_str() {
                r.reasoning.push_str(s);
            }
            for block in delta["thinking_blocks"].as_array().into_iter().flatten() {
                r.signature
                    .push_str(block["signature"].as_str().unwrap_or(""));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let i = call["index"].as_u64().unwrap() as usize;
                if r.tools.len() <= i {
                    r.tools.resize(i + 1, Default::default());
                }
                if let Some(id) = call["id"].as_str() {
                    r.tools[i].0 = id.into();
                    r.tools[i].1 = call["function"]["name"].as_str().unwrap().into();
                }
                r.tools[i]
                    .2
                    .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
        (r, finish, usage)
    }

    fn check_recording(name: &str, finish: &str) {
        let expected = expected_from_recording(name);
        let (out, usage) = replay(&recorded_body(name), &[]);
        let (got, got_finish, got_usage) = received(&out);
        assert_eq!(got.text, expected.text);
        assert_eq!(got.reasoning, expected.reasoning);
        assert_eq!(got.signature, expected.signature);
        assert_eq!(got.tools, expected.tools);
        assert_eq!(
            finish_reason(&expected.stop_reason).as_str(),
            got_finish.as_deref().unwrap()
        );
        assert_eq!(got_finish.as_deref(), Some(finish));
        let n = |k: &str| expected.usage[k].as_u64().unwrap_or(0);
        let cached = n("cacheReadInputTokens");
        let prompt = n("inputTokens") + cached + n("cacheWriteInputTokens");
        assert_eq!(got_usage["prompt_tokens"], prompt);
        assert_eq!(got_usage["completion_tokens"], n("outputTokens"));
        assert_eq!(got_usage["total_tokens"], n("totalTokens"));
        assert_eq!(got_usage["prompt_tokens_details"]["cached_tokens"], cached);
        assert_eq!((usage.input, usage.cached_input), (prompt, cached));
    }

    #[test]
    fn recorded_tool_use_stream() {
        check_recording("bedrock/converse-stream-tool-use.json", "tool_calls");
        let e = expected_from_recording("bedrock/converse-stream-tool-use.json");
        assert_eq!(e.tools.len(), 1);
        assert!(serde_json::from_str::<Value>(&e.tools[0].2).is_ok());
    }

    #[test]
    fn recorded_cache_usage_stream() {
        check_recording("bedrock/converse-stream-cache-usage.json", "stop");
        let e = expected_from_recording("bedrock/converse-stream-cache-usage.json");
        assert!(e.usage["cacheReadInputTokens"].as_u64().unwrap() > 0);
    }

    #[test]
    fn recorded_reasoning_stream() {
        check_recording("bedrock/converse-stream-reasoning.json", "stop");
        let (out, _) = replay(
            &recorded_body("bedrock/converse-stream-reasoning.json"),
            &[],
        );
        let blocks: Vec<Value> = events(&out)
            .into_iter()
            .filter_map(|e| e["choices"][0]["delta"]["thinking_blocks"].get(0).cloned())
            .collect();
        let e = expected_from_recording("bedrock/converse-stream-reasoning.json");
        assert_eq!(
            blocks,
            vec![json!({"type": "thinking", "thinking": e.reasoning, "signature": e.signature})]
        );
    }

    #[test]
    fn first_chunk_has_the_role_and_usage_only_when_asked() {
        let body = recorded_body("bedrock/converse-stream-cache-usage.json");
        let (out, _) = replay(&body, &[]);
        let ev = events(&out);
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[0]["model"], "claude");
        let mut t = translator(&request(r#"{"model":"claude","stream":true}"#));
        let out = t.stream_chunk(&body, true).unwrap();
        assert!(events(&out).iter().all(|e| e["usage"].is_null()));
        assert_eq!(t.usage().cached_input, 1028);
        assert!(t.saw_output());
        assert!(t.rewrites_body());
        assert_eq!(
            t.stream_content_type(),
            "application/vnd.amazon.eventstream"
        );
    }

    #[test]
    fn tool_input_for_a_block_never_started_is_kept() {
        let mut body = encode("event", "messageStart", br#"{"role":"assistant"}"#);
        body.extend(encode(
            "event",
            "contentBlockDelta",
            br#"{"contentBlockIndex":3,"delta":{"toolUse":{"input":"{\"city\":\"Paris\"}"}}}"#,
        ));
        body.extend(encode(
            "event",
            "messageStop",
            br#"{"stopReason":"tool_use"}"#,
        ));
        let (out, _) = replay(&body, &[]);
        let arguments: String = events(&out)
            .iter()
            .filter_map(|e| e.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(arguments, r#"{"city":"Paris"}"#);
    }

    #[test]
    fn an_exception_mid_stream_is_an_error_event() {
        let mut body = encode("event", "messageStart", br#"{"role":"assistant"}"#);
        body.extend(encode(
            "event",
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#,
        ));
        body.extend(encode(
            "exception",
            "throttlingException",
            br#"{"message":"Too many tokens"}"#,
        ));
        body.extend(encode(
            "event",
            "messageStop",
            br#"{"stopReason":"end_turn"}"#,
        ));
        let (out, _) = replay(&body, &[]);
        let ev = events(&out);
        let last = ev.last().unwrap();
        assert_eq!(last["error"]["type"], "rate_limit_exceeded");
        assert!(last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Too many tokens"));
        assert!(!String::from_utf8(out).unwrap().contains("[DONE]"));
    }

    #[test]
    fn a_corrupt_or_cut_stream_is_an_error_event() {
        let mut body = recorded_body("bedrock/converse-stream-tool-use.json");
        body[200] ^= 0x55;
        let (out, _) = replay(&body, &[]);
        let ev = events(&out);
        assert!(ev.last().unwrap()["error"]["message"].is_string());

        let body = recorded_body("bedrock/converse-stream-tool-use.json");
        let (out, _) = replay(&body[..body.len() - 10], &[]);
        let ev = events(&out);
        assert!(ev.last().unwrap()["error"]["message"].is_string());
    }

    #[test]
    fn unary_recorded_answers() {
        let r = request(r#"{"model":"claude"}"#);
        let recorded = load("bedrock/converse-tool-use.json");
        let mut t = ConverseResponse::new(&r);
        let out = t
            .unary(recorded["response"]["body"].to_string().as_bytes())
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let message = &v["choices"][0]["message"];
        let blocks = &recorded["response"]["body"]["output"]["message"]["content"];
        assert_eq!(message["content"], blocks[0]["text"]);
        let call = &message["tool_calls"][0];
        assert_eq!(call["id"], blocks[1]["toolUse"]["toolUseId"]);
        assert_eq!(call["function"]["name"], blocks[1]["toolUse"]["name"]);
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, blocks[1]["toolUse"]["input"]);
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["model"], "claude");
        assert_eq!(v["object"], "chat.completion");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));

        let recorded = load("bedrock/converse-cache-usage.json");
        let usage = &recorded["response"]["body"]["usage"];
        let mut t = ConverseResponse::new(&r);
        let out = t
            .unary(recorded["response"]["body"].to_string().as_bytes())
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let n = |k: &str| usage[k].as_u64().unwrap();
        let prompt = n("inputTokens") + n("cacheReadInputTokens") + n("cacheWriteInputTokens");
        assert_eq!(v["usage"]["prompt_tokens"], prompt);
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"],
            n("cacheReadInputTokens")
        );
        assert_eq!(v["usage"]["total_tokens"], n("totalTokens"));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(t.usage().input, prompt);
    }

    #[test]
    fn unary_reasoning_is_surfaced_with_its_signature() {
        let r = request(r#"{"model":"claude"}"#);
        let mut t = ConverseResponse::new(&r);
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "think", "signature": "sig"}}},
                {"reasoningContent": {"redactedContent": "UkVE"}},
                {"text": "answer"}]}},
            "stopReason": "max_tokens",
            "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
        });
        let v: Value =
            serde_json::from_slice(&t.unary(body.to_string().as_bytes()).unwrap().unwrap())
                .unwrap();
        let message = &v["choices"][0]["message"];
        assert_eq!(message["content"], "answer");
        assert_eq!(message["reasoning_content"], "think");
        assert_eq!(
            message["thinking_blocks"],
            json!([{"type": "thinking", "thinking": "think", "signature": "sig"},
                   {"type": "redacted_thinking", "data": "UkVE"}])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(stop).as_str(), finish);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..800),
            cuts in proptest::collection::vec(0usize..800, 0..8),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (out, _) = replay(&bytes, &cuts);
            // Whatever came in, the client gets a properly ended stream.
            let text = String::from_utf8(out).unwrap();
            prop_assert!(text.ends_with("data: [DONE]\n\n") || text.contains("\"error\""));
        }

        #[test]
        fn recorded_streams_at_any_cuts_translate_the_same(
            which in 0usize..3,
            cuts in proptest::collection::vec(0usize..24000, 0..12),
        ) {
            let name = [
                "bedrock/converse-stream-tool-use.json",
                "bedrock/converse-stream-cache-usage.json",
                "bedrock/converse-stream-reasoning.json",
            ][which];
            let body = recorded_body(name);
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(replay(&body, &cuts), replay(&body, &[]));
        }
    }
}
