//! Recorded Gemini and Vertex AI answers through the translator. Expectations are read
//! from the recordings themselves, never from the translator's own output.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::api::ApiKind;
use crate::schema::fixtures::{load, recorded_body};

fn request(body: Value) -> ClientRequest {
    ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(body.to_string())).unwrap()
}

fn stream_request() -> ClientRequest {
    request(json!({"model": "gemini", "messages": [], "stream": true,
                   "stream_options": {"include_usage": true}}))
}

/// What an answer says, however it was framed.
#[derive(Debug, Default, PartialEq)]
struct Answer {
    text: String,
    reasoning: String,
    /// (name, arguments as JSON, thought signature)
    calls: Vec<(String, Value, Option<String>)>,
    finish: Option<String>,
    /// (prompt, completion, total, reasoning)
    usage: Option<(u64, u64, u64, u64)>,
}

/// What a recorded stream holds: the Gemini responses of its events, in order.
fn recorded_responses(body: &str) -> Vec<Value> {
    body.split("\r\n\r\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn expected(responses: &[Value]) -> Answer {
    let mut answer = Answer::default();
    for r in responses {
        let candidate = &r["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(call) = part.get("functionCall") {
                answer.calls.push((
                    call["name"].as_str().unwrap().to_string(),
                    call.get("args").cloned().unwrap_or(json!({})),
                    part["thoughtSignature"].as_str().map(str::to_string),
                ));
            } else if part["thought"] == true {
                answer.reasoning += part["text"].as_str().unwrap();
            } else if let Some(text) = part["text"].as_str() {
                answer.text += text;
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            answer.finish = Some(match (reason, answer.calls.is_empty()) {
                ("STOP", false) => "tool_calls".into(),
                ("STOP", true) => "stop".into(),
                (other, _) => other.into(),
            });
        }
        let u = &r["usageMetadata"];
        let n = |k: &str| u[k].as_u64().unwrap_or(0);
        answer.usage = Some((
            n("promptTokenCount"),
            n("candidatesTokenCount") + n("thoughtsTokenCount"),
            n("totalTokenCount"),
            n("thoughtsTokenCount"),
        ));
    }
    answer
}

fn usage_tuple(u: &Value) -> (u64, u64, u64, u64) {
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
        u["total_tokens"].as_u64().unwrap(),
        u["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap(),
    )
}

fn output_events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn streamed_answer(events: &[Value]) -> Answer {
    let mut answer = Answer::default();
    let mut calls: Vec<(String, String, Option<String>)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["object"], "chat.completion.chunk");
        if i == 0 {
            assert_eq!(e["choices"][0]["delta"]["role"], "assistant");
        }
        if let Some(u) = e.get("usage") {
            answer.usage = Some(usage_tuple(u));
        }
        let Some(choice) = e["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        answer.text += delta["content"].as_str().unwrap_or("");
        answer.reasoning += delta["reasoning_content"].as_str().unwrap_or("");
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
                calls.push((
                    call["function"]["name"].as_str().unwrap().to_string(),
                    String::new(),
                    call["extra_content"]["google"]["thought_signature"]
                        .as_str()
                        .map(str::to_string),
                ));
            }
            calls[index].1 += call["function"]["arguments"].as_str().unwrap_or("");
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            answer.finish = Some(f.to_string());
        }
    }
    answer.calls = calls
        .into_iter()
        .map(|(name, args, sig)| (name, serde_json::from_str(&args).unwrap(), sig))
        .collect();
    answer
}

/// Runs `input` through a fresh stream translator, cut into pieces at `cuts`.
fn run_stream(input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut t = GeminiChatResponse::new(&stream_request());
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        let end = cut == input.len();
        out.extend(t.stream_chunk(&input[start..cut], end).unwrap());
        start = cut;
        if end {
            break;
        }
    }
    out
}

/// Output bytes with the one value that may differ between runs (`created` when the
/// provider sent no `createTime`) blanked.
fn normalized(out: &[u8]) -> Vec<Value> {
    output_events(out)
        .into_iter()
        .map(|mut e| {
            if let Some(obj) = e.as_object_mut() {
                obj.remove("created");
            }
            e
        })
        .collect()
}

fn recorded_stream(name: &str) -> String {
    String::from_utf8(recorded_body(name)).unwrap()
}

/// The streamed JSON array recording (no `alt=sse`), re-framed as the SSE events that
/// `alt=sse` sends: each array element is one event.
fn thinking_stream_as_sse() -> String {
    let body = recorded_stream("gemini/stream-json-array-thinking-function-call.json");
    let items: Vec<Value> = serde_json::from_str(&body).unwrap();
    items.iter().map(|i| format!("data: {i}\r\n\r\n")).collect()
}

fn sse_recordings() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = [
        "gemini/stream-sse-text.json",
        "gemini/stream-sse-function-call.json",
        "vertex/stream-sse-text.json",
    ]
    .iter()
    .map(|n| (n.to_string(), recorded_stream(n)))
    .collect();
    all.push(("thinking (re-framed)".into(), thinking_stream_as_sse()));
    all
}

#[test]
fn recorded_streams_give_what_they_hold() {
    for (name, body) in sse_recordings() {
        let want = expected(&recorded_responses(&body));
        let out = run_stream(body.as_bytes(), &[]);
        let got = streamed_answer(&output_events(&out));
        assert_eq!(got, want, "{name}");
        let first: Value = recorded_responses(&body)[0].clone();
        let events = output_events(&out);
        assert_eq!(events[0]["id"], first["responseId"], "{name}");
        assert_eq!(events[0]["model"], first["modelVersion"], "{name}");
    }
}

#[test]
fn vertex_stream_created_is_the_create_time() {
    let out = run_stream(
        recorded_stream("vertex/stream-sse-text.json").as_bytes(),
        &[],
    );
    // 2026-03-21T18:11:55Z
    assert_eq!(output_events(&out)[0]["created"], 1_774_116_715);
}

#[test]
fn every_split_point_gives_the_same_output() {
    for (name, body) in sse_recordings() {
        let whole = normalized(&run_stream(body.as_bytes(), &[]));
        for cut in 0..=body.len() {
            assert_eq!(
                normalized(&run_stream(body.as_bytes(), &[cut])),
                whole,
                "{name} cut {cut}"
            );
        }
    }
}

#[test]
fn usage_chunk_only_when_asked() {
    let body = recorded_stream("gemini/stream-sse-text.json");
    let r = request(json!({"model": "gemini", "messages": [], "stream": true}));
    let mut t = GeminiChatResponse::new(&r);
    let out = t.stream_chunk(body.as_bytes(), true).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("\"usage\""));
    assert_eq!(t.usage().total, 21, "metered all the same");
    assert_eq!(t.response_model(), Some("gemini-2.0-flash-exp"));
    assert!(t.saw_output());
}

#[test]
fn stream_error_event_and_unfinished_stream() {
    let body = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\r\n\r\n\
                data: {\"error\":{\"code\":429,\"message\":\"Quota exceeded\",\"status\":\"RESOURCE_EXHAUSTED\"}}\r\n\r\n";
    let mut t = GeminiChatResponse::new(&stream_request());
    let out = String::from_utf8(t.stream_chunk(body.as_bytes(), true).unwrap()).unwrap();
    assert!(out.contains("\"content\":\"Hi\""));
    assert!(out.contains("Quota exceeded") && out.contains("rate_limit_exceeded"));
    assert!(!out.contains("[DONE]"));
    let mut t = GeminiChatResponse::new(&stream_request());
    let cut = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\r\n\r\n";
    let out = String::from_utf8(t.stream_chunk(cut.as_bytes(), true).unwrap()).unwrap();
    assert!(
        out.contains("ended before the answer was finished"),
        "{out}"
    );
}

fn unary(name: &str) -> (Value, Value, GeminiChatResponse) {
    let f = load(name);
    let body = f["response"]["body"].clone();
    let mut t = GeminiChatResponse::new(&request(json!({"model": "asked", "messages": []})));
    let out = t.unary(body.to_string().as_bytes()).unwrap().unwrap();
    (body, serde_json::from_slice(&out).unwrap(), t)
}

#[test]
fn recorded_unary_answers() {
    for name in [
        "gemini/generate-content-text.json",
        "gemini/generate-content-function-call.json",
        "vertex/generate-content-text.json",
        "vertex/generate-content-function-call.json",
    ] {
        let (body, out, t) = unary(name);
        let want = expected(std::slice::from_ref(&body));
        let message = &out["choices"][0]["message"];
        let calls: Vec<(String, Value, Option<String>)> = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                assert!(c["id"].as_str().unwrap().starts_with("call_"));
                (
                    c["function"]["name"].as_str().unwrap().to_string(),
                    serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
                    c["extra_content"]["google"]["thought_signature"]
                        .as_str()
                        .map(str::to_string),
                )
            })
            .collect();
        let got = Answer {
            text: message["content"].as_str().unwrap_or("").to_string(),
            reasoning: message["reasoning_content"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            calls,
            finish: out["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string),
            usage: Some(usage_tuple(&out["usage"])),
        };
        assert_eq!(got, want, "{name}");
        assert_eq!(out["id"], body["responseId"], "{name}");
        assert_eq!(out["model"], body["modelVersion"], "{name}");
        assert_eq!(t.response_model(), body["modelVersion"].as_str(), "{name}");
        assert_eq!(
            t.usage().reasoning,
            body["usageMetadata"]["thoughtsTokenCount"]
                .as_u64()
                .unwrap_or(0)
        );
    }
}

#[test]
fn blocked_prompt_is_a_content_filter_stop() {
    let (_, out, t) = unary("vertex/generate-content-prompt-blocked-regional.json");
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["choices"][0]["message"]["content"], "");
    assert_eq!(out["model"], "gemini-2.5-flash");
    assert_eq!(t.usage(), Usage::default());
    assert!(!t.saw_output());
}

#[test]
fn provider_errors_are_translated() {
    let f = load("gemini/error-404-model-not-found.json");
    let mut t = GeminiChatResponse::new(&stream_request());
    let head = ResponseHead {
        status: 404,
        content_type: "application/json".into(),
        aws_error_type: None,
    };
    let out: Value = serde_json::from_slice(
        &t.error(&head, f["response"]["body"].to_string().as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["error"]["code"], "NOT_FOUND");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                   cuts in proptest::collection::vec(0usize..512, 0..6)) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let _ = run_stream(&bytes, &cuts);
    }

    #[test]
    fn arbitrary_splits_of_recorded_streams(which in 0usize..4,
                                            cuts in proptest::collection::vec(0usize..4000, 0..8)) {
        let (_, body) = sse_recordings().swap_remove(which);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let whole = normalized(&run_stream(body.as_bytes(), &[]));
        prop_assert_eq!(normalized(&run_stream(body.as_bytes(), &cuts)), whole);
    }
}
