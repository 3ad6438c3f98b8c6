//! Golden tests: every OpenAI chat request in `requests/` through every translating
//! schema, and every recorded provider answer (`e2e/fixtures`) back through the response
//! translator of each schema that receives that wire format. Each result is a snapshot
//! in `snapshots/`, reviewed against the provider's public API reference: a snapshot is
//! an expectation, not a copy of whatever the translator emits.
//!
//! Requests named `refuse_*` exercise the rules decided once for every schema
//! (`crate::schema::chat`): each must get the same answer from every schema.
//!
//! To review a change, run the tests with `INSTA_UPDATE=always` (or rename the
//! `.snap.new` files a failing run writes) and read the diff. `scripts/test.sh` runs with
//! `INSTA_UPDATE=no`, so a missing or changed snapshot fails.

mod responses;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

use crate::api::{ApiKind, ClientRequest};
use crate::config::resources::SchemaSpec;
use crate::schema::fixtures;
use crate::schema::{build, BackendSchema, ResponseHead, ResponseTranslator};

/// The translating schemas, each with the model id its provider would be given (the
/// backend's `modelNameOverride`; the requests all name `client-model`).
pub(super) const SCHEMAS: &[(&str, &str)] = &[
    ("Anthropic", "claude-sonnet-4-5"),
    ("GCPAnthropic", "claude-sonnet-4-5@20250929"),
    ("AWSAnthropic", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("AWSBedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("GCPVertexAI", "gemini-2.5-flash"),
];

/// Recorded answers, by the schemas whose providers answer in that wire format. The
/// streamed Gemini JSON array (no `alt=sse`) is left out: the gateway always asks for SSE.
pub(super) const ANSWERS: &[(&str, &[&str])] = &[
    (
        "anthropic/messages-text.json",
        &["Anthropic", "GCPAnthropic"],
    ),
    (
        "anthropic/messages-tool-use.json",
        &["Anthropic", "GCPAnthropic"],
    ),
    (
        "anthropic/messages-thinking.json",
        &["Anthropic", "GCPAnthropic"],
    ),
    ("anthropic/messages-cache-write-1h.json", &["Anthropic"]),
    (
        "anthropic/messages-stream-text.json",
        &["Anthropic", "GCPAnthropic"],
    ),
    (
        "anthropic/messages-stream-tool-use.json",
        &["Anthropic", "GCPAnthropic"],
    ),
    (
        "anthropic/messages-stream-thinking.json",
        &["Anthropic", "GCPAnthropic"],
    ),
    ("anthropic/messages-stream-cache-read.json", &["Anthropic"]),
    (
        "anthropic/error-400-invalid-request.json",
        &["Anthropic", "GCPAnthropic"],
    ),
    ("anthropic/error-401-authentication.json", &["Anthropic"]),
    ("bedrock/invoke-anthropic-messages.json", &["AWSAnthropic"]),
    (
        "bedrock/invoke-stream-anthropic-tool-use.json",
        &["AWSAnthropic"],
    ),
    (
        "bedrock/invoke-error-403-expired-token.json",
        &["AWSAnthropic", "AWSBedrock"],
    ),
    ("bedrock/converse-tool-use.json", &["AWSBedrock"]),
    ("bedrock/converse-cache-usage.json", &["AWSBedrock"]),
    (
        "bedrock/converse-inference-profile-arn-guardrail.json",
        &["AWSBedrock"],
    ),
    ("bedrock/converse-stream-tool-use.json", &["AWSBedrock"]),
    ("bedrock/converse-stream-cache-usage.json", &["AWSBedrock"]),
    ("bedrock/converse-stream-reasoning.json", &["AWSBedrock"]),
    (
        "bedrock/converse-error-400-invalid-model.json",
        &["AWSBedrock"],
    ),
    (
        "bedrock/converse-stream-error-400-invalid-model.json",
        &["AWSBedrock"],
    ),
    ("gemini/generate-content-text.json", &["GCPVertexAI"]),
    (
        "gemini/generate-content-function-call.json",
        &["GCPVertexAI"],
    ),
    ("gemini/stream-sse-text.json", &["GCPVertexAI"]),
    ("gemini/stream-sse-function-call.json", &["GCPVertexAI"]),
    ("gemini/error-404-model-not-found.json", &["GCPVertexAI"]),
    ("vertex/generate-content-text.json", &["GCPVertexAI"]),
    (
        "vertex/generate-content-function-call.json",
        &["GCPVertexAI"],
    ),
    (
        "vertex/generate-content-prompt-blocked-regional.json",
        &["GCPVertexAI"],
    ),
    ("vertex/stream-sse-text.json", &["GCPVertexAI"]),
    ("vertex/error-400-invalid-argument.json", &["GCPVertexAI"]),
];

pub(super) fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/schema/golden")
}

pub(super) fn schema(name: &str) -> std::sync::Arc<dyn BackendSchema> {
    let spec: SchemaSpec = serde_yaml_ng::from_str(&format!("name: {name}")).expect("spec");
    build(&spec).expect("a translating schema")
}

pub(super) fn snapshot(name: &str, text: String) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(here().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

pub(super) fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&redacted(v)).expect("JSON"),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// What differs on every run: the time a translator stamps, the ids it generates.
pub(super) fn redacted(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match (k.as_str(), &v) {
                    ("created" | "created_at", Value::Number(_)) => (k, Value::from("[now]")),
                    ("id" | "item_id", Value::String(s)) if generated(s) => {
                        (k, Value::from("[generated]"))
                    }
                    _ => (k, redacted(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        other => other,
    }
}

/// An id ending in a fresh UUID (`chatcmpl-<32 hex>`, or the bare UUID).
fn generated(id: &str) -> bool {
    let tail = id.rsplit(['-', '_']).next().unwrap_or(id);
    tail.len() == 32 && tail.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A recorded answer: its head, its body and whether it streams.
pub(super) fn recorded_answer(fixture: &str) -> (ResponseHead, Vec<u8>, bool) {
    let recorded = fixtures::load(fixture);
    (
        fixtures::response_head(&recorded),
        fixtures::response_body(&recorded),
        fixtures::is_stream(&recorded),
    )
}

/// A recorded answer through `translator`, as a snapshot shows it; `event` writes one
/// streamed event.
pub(super) fn answer_text(
    translator: &mut dyn ResponseTranslator,
    head: &ResponseHead,
    body: &[u8],
    stream: bool,
    event: fn(&str) -> String,
) -> String {
    let text = if !(200..300).contains(&head.status) {
        match translator.error(head, body) {
            Some(out) => format!("{} error\n\n{}", head.status, pretty(&out)),
            None => format!("{} error: left to the generic handling", head.status),
        }
    } else if stream {
        let out = translator.stream_chunk(body, true).unwrap_or_default();
        let events: Vec<String> = String::from_utf8_lossy(&out)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(event)
            .collect();
        format!("stream\n\n{}", events.join("\n"))
    } else {
        match translator.unary(body) {
            Ok(Some(out)) => format!("unary\n\n{}", pretty(&out)),
            Ok(None) => "unary: passes unchanged".to_string(),
            Err(e) => format!("unreadable: {e}"),
        }
    };
    format!(
        "{text}\n\nusage: {:?}\nresponse model: {:?}",
        translator.usage(),
        translator.response_model()
    )
}

#[test]
fn requests_through_every_translating_schema() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(here().join("requests"))
        .expect("requests/")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "the golden set has {} cases",
        cases.len()
    );
    for path in cases {
        let case = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let body = std::fs::read(&path).expect("request file");
        let request = ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(body))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let mut answers = Vec::new();
        for (name, model) in SCHEMAS {
            let text = match schema(name).upstream_request(&request, Some(model)) {
                Ok(upstream) => {
                    let mut text = format!("POST {}\n", upstream.path);
                    for (header, value) in &upstream.headers {
                        text += &format!("{header}: {value}\n");
                    }
                    text += "\n";
                    text += &pretty(upstream.body.as_deref().unwrap_or_default());
                    text
                }
                Err(e) => format!("{} {}\n{e}", e.status(), e.code()),
            };
            answers.push(text.clone());
            snapshot(&format!("{case}.{name}"), text);
        }
        // The `refuse_` cases are the shared rules: one answer whatever the schema.
        if case.starts_with("refuse_") {
            assert!(
                answers.iter().all(|a| *a == answers[0]),
                "{case}: {answers:#?}"
            );
        }
    }
}

#[test]
fn recorded_answers_through_their_schemas() {
    for (fixture, schemas) in ANSWERS {
        let (head, body, stream) = recorded_answer(fixture);
        let client = serde_json::json!({
            "model": "client-model", "stream": stream,
            "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { Value::Null },
            "messages": [{"role": "user", "content": "hi"}],
        });
        let request =
            ClientRequest::parse(ApiKind::ChatCompletions, Bytes::from(client.to_string()))
                .expect("client request");
        let case = fixture.trim_end_matches(".json").replace('/', ".");
        for name in *schemas {
            let mut translator = schema(name).response_translator(&request, false);
            let text = answer_text(translator.as_mut(), &head, &body, stream, |event| {
                let data = event.strip_prefix("data: ").unwrap_or(event);
                match serde_json::from_str::<Value>(data) {
                    Ok(v) => format!("data: {}", redacted(v)),
                    Err(_) => event.to_string(),
                }
            });
            snapshot(&format!("{case}.{name}"), text);
        }
    }
}
