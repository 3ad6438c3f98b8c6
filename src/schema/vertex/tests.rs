//! The `GCPVertexAI` schema end to end: paths, the request body against the shape of the
//! Gemini API reference, refusals, and the thought signature round trip.

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::schema::fixtures::load;

fn schema() -> Arc<dyn BackendSchema> {
    GcpVertexAi::build(&SchemaSpec {
        name: "GCPVertexAI".into(),
        version: None,
        prefix: None,
    })
    .unwrap()
}

fn client(api: ApiKind, body: Value) -> ClientRequest {
    ClientRequest::parse(api, Bytes::from(body.to_string())).unwrap()
}

fn upstream(body: Value) -> Result<(UpstreamRequest, Value), ApiError> {
    let u = schema().upstream_request(&client(ApiKind::ChatCompletions, body), None)?;
    let sent = serde_json::from_slice(u.body.as_deref().unwrap()).unwrap();
    Ok((u, sent))
}

#[test]
fn paths_for_each_api() {
    let s = schema();
    let chat = client(
        ApiKind::ChatCompletions,
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let u = s.upstream_request(&chat, None).unwrap();
    assert_eq!(
        u.path,
        "/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        u.headers,
        vec![("content-type".to_string(), "application/json".to_string())]
    );
    let u = s.upstream_request(&chat, Some("gemini-2.5-pro")).unwrap();
    assert_eq!(
        u.path,
        "/publishers/google/models/gemini-2.5-pro:generateContent"
    );
    let stream = client(
        ApiKind::ChatCompletions,
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let u = s.upstream_request(&stream, None).unwrap();
    assert_eq!(
        u.path,
        "/publishers/google/models/m:streamGenerateContent?alt=sse"
    );
    let sent: Value = serde_json::from_slice(u.body.as_deref().unwrap()).unwrap();
    assert!(sent.get("stream_options").is_none() && sent.get("stream").is_none());
    let embed = client(
        ApiKind::Embeddings,
        json!({"model": "text-embedding-005", "input": "x"}),
    );
    assert_eq!(
        s.upstream_request(&embed, None).unwrap().path,
        "/publishers/google/models/text-embedding-005:predict"
    );
    let completions = client(ApiKind::Completions, json!({"model": "m", "prompt": "x"}));
    assert_eq!(
        s.upstream_request(&completions, None).unwrap_err().status(),
        422
    );
}

#[test]
fn rich_request_matches_the_reference_shape() {
    let (_, sent) = upstream(json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.JPG?size=large"}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                 "extra_content": {"google": {"thought_signature": "c2lnLWE="}}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp_c\": 21}"},
            {"role": "tool", "tool_call_id": "call_b", "content": "10:00"},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
            {"type": "function", "function": {"name": "get_time"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "additionalProperties": false}}},
        "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 4096, "stop": ["END"], "seed": 7,
        "frequency_penalty": 0.5, "presence_penalty": 0.1,
        "reasoning_effort": "low",
        "user": "u-1", "parallel_tool_calls": false, "metadata": {"k": "v"}, "store": false
    }))
    .unwrap();
    let want = json!({
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in French."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "What is in this picture, and the weather?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=large"}}
            ]},
            {"role": "model", "parts": [
                {"text": "Let me check."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLWE="},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "10:00"}}}
            ]},
            {"role": "user", "parts": [{"text": "Thanks"}]}
        ],
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather of a city",
             "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}},
            {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}}
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {
            "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 4096, "stopSequences": ["END"], "seed": 7,
            "frequencyPenalty": 0.5, "presencePenalty": 0.1,
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "additionalProperties": false},
            "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}
        }
    });
    assert_eq!(sent, want);
}

#[test]
fn tool_choice_modes_and_json_object() {
    for (choice, mode) in [("none", "NONE"), ("auto", "AUTO"), ("required", "ANY")] {
        let (_, sent) = upstream(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}),
        )
        .unwrap();
        assert_eq!(
            sent["toolConfig"],
            json!({"functionCallingConfig": {"mode": mode}})
        );
    }
    let (_, sent) = upstream(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}, "max_tokens": 5, "reasoning_effort": "none"}),
    )
    .unwrap();
    assert_eq!(
        sent["generationConfig"],
        json!({"maxOutputTokens": 5, "responseMimeType": "application/json", "thinkingConfig": {"thinkingBudget": 0}})
    );
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    let base = || json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    for (field, value) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("audio", json!({"voice": "alloy"})),
        ("modalities", json!(["text", "audio"])),
    ] {
        let mut body = base();
        body[field] = value;
        let e = upstream(body).unwrap_err();
        assert_eq!(e.status(), 422, "{field}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let mut body = base();
    body["messages"] = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/image"}}]}]);
    assert_eq!(upstream(body).unwrap_err().status(), 422);
    let mut body = base();
    body["messages"] = json!([{"role": "tool", "tool_call_id": "nope", "content": "x"}]);
    assert_eq!(upstream(body).unwrap_err().status(), 400);
    let mut body = base();
    body["messages"] = json!([{"role": "system", "content": "only a system prompt"}]);
    assert_eq!(upstream(body).unwrap_err().status(), 400);
    let mut body = base();
    body["logprobs"] = json!(false);
    body["modalities"] = json!(["text"]);
    assert!(upstream(body).is_ok(), "false and text-only are harmless");
}

#[test]
fn thought_signature_round_trip() {
    // Gemini's recorded answer, as the client receives it ...
    let recorded = load("vertex/generate-content-function-call.json");
    let answer = &recorded["response"]["body"];
    let request = client(
        ApiKind::ChatCompletions,
        json!({"model": "gemini-3-flash-preview", "messages": []}),
    );
    let mut translator = schema().response_translator(&request, false);
    let completion: Value = serde_json::from_slice(
        &translator
            .unary(answer.to_string().as_bytes())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let assistant = completion["choices"][0]["message"].clone();
    let call_id = assistant["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // ... sent back with the tool's result on the next turn.
    let (_, sent) = upstream(json!({
        "model": "gemini-3-flash-preview",
        "messages": [
            {"role": "user", "content": "Use the get_file tool"},
            assistant,
            {"role": "tool", "tool_call_id": call_id, "content": "{\"error\": \"not found\"}"}
        ]
    }))
    .unwrap();
    let recorded_part = &answer["candidates"][0]["content"]["parts"][0];
    assert_eq!(sent["contents"][1]["role"], "model");
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"],
        recorded_part["thoughtSignature"]
    );
    assert_eq!(
        sent["contents"][1]["parts"][0]["functionCall"],
        recorded_part["functionCall"]
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_file", "response": {"error": "not found"}})
    );
}
