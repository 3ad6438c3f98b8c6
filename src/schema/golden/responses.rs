//! Golden tests for Responses API clients of the translating schemas: every request in
//! `responses_requests/` through each schema, and every recorded answer back as a
//! response object or its events. Snapshots are named `responses.<case>.<schema>`.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::Value;

use super::{
    answer_text, here, pretty, recorded_answer, redacted, schema, snapshot, ANSWERS, SCHEMAS,
};
use crate::api::{ApiKind, ClientRequest};

#[test]
fn responses_requests_through_every_translating_schema() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(here().join("responses_requests"))
        .expect("responses_requests/")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    for path in cases {
        let case = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let body = std::fs::read(&path).expect("request file");
        let request = ClientRequest::parse(ApiKind::Responses, Bytes::from(body))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        for (name, model) in SCHEMAS {
            let text = match schema(name).upstream_request(&request, Some(model)) {
                Ok(upstream) => format!(
                    "POST {}\n\n{}",
                    upstream.path,
                    pretty(upstream.body.as_deref().unwrap_or_default())
                ),
                Err(e) => format!("{} {}\n{e}", e.status(), e.code()),
            };
            if case.starts_with("refuse_") {
                assert!(
                    text.starts_with("422") || text.starts_with("400"),
                    "{case}.{name}: {text}"
                );
            }
            snapshot(&format!("responses.{case}.{name}"), text);
        }
    }
}

/// One streamed event as `event: <type>` and its data, ids and times redacted.
fn event_text(event: &str) -> String {
    event
        .lines()
        .map(|line| match line.strip_prefix("data: ") {
            Some(data) => match serde_json::from_str::<Value>(data) {
                Ok(v) => format!("data: {}", redacted(v)),
                Err(_) => line.to_string(),
            },
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn recorded_answers_as_responses() {
    for (fixture, schemas) in ANSWERS {
        let (head, body, stream) = recorded_answer(fixture);
        let client = serde_json::json!({
            "model": "client-model", "stream": stream, "input": "hi",
            "instructions": "Be brief.", "max_output_tokens": 4096,
        });
        let request = ClientRequest::parse(ApiKind::Responses, Bytes::from(client.to_string()))
            .expect("client request");
        let case = fixture.trim_end_matches(".json").replace('/', ".");
        for name in *schemas {
            let mut translator = schema(name).response_translator(&request, false);
            let text = answer_text(translator.as_mut(), &head, &body, stream, event_text);
            snapshot(&format!("responses.{case}.{name}"), text);
        }
    }
}
