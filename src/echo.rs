//! The built-in `demo` backend: a tiny OpenAI-compatible server on loopback that echoes
//! the last user message. It checks the API key like a real provider, so a first curl
//! with no keys still goes through the whole data path (routing, key swap, usage).

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::api::error::error_body;
use crate::config::default::DEMO_KEY;
use crate::framing::sse::write_event;

/// Binds the echo backend on an ephemeral loopback port and serves it in the background.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo backend stopped");
        }
    });
    Ok(addr)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

/// Checks the key and parses the body, as a provider would.
fn admit(headers: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
    let expected = format!("Bearer {DEMO_KEY}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        let body = error_body(
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        );
        return Err(Box::new(json_response(StatusCode::UNAUTHORIZED, body)));
    }
    serde_json::from_slice(body).map_err(|e| {
        let body = error_body(
            &format!("bad JSON: {e}"),
            "invalid_request_error",
            "invalid_json",
        );
        Box::new(json_response(StatusCode::BAD_REQUEST, body))
    })
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

async fn chat(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let req = match admit(&headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let prompt: String = messages
        .iter()
        .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
        .collect::<Vec<_>>()
        .join(" ");
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let reply = format!(
        "echo: {}",
        last_user
            .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
            .unwrap_or_default()
    );
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("demo")
        .to_string();
    let (prompt_tokens, completion_tokens) = (words(&prompt), words(&reply));
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let mut events = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        events.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        for (i, word) in reply.split(' ').enumerate() {
            let piece = if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            };
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
        if include_usage {
            events.push(json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model,
                               "choices": [], "usage": usage(prompt_tokens, completion_tokens)}));
        }
        let mut sse = Vec::new();
        for event in &events {
            write_event(&mut sse, None, event.to_string().as_bytes());
        }
        write_event(&mut sse, None, b"[DONE]");
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(sse))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let body = json!({
        "id": "chatcmpl-demo", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": usage(prompt_tokens, completion_tokens)
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

async fn completions(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let req = match admit(&headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let prompt = text_of(req.get("prompt").unwrap_or(&Value::Null));
    let reply = format!("echo: {prompt}");
    let body = json!({
        "id": "cmpl-demo", "object": "text_completion", "created": 0,
        "model": req.get("model").cloned().unwrap_or(json!("demo")),
        "choices": [{"index": 0, "text": reply, "finish_reason": "stop", "logprobs": null}],
        "usage": usage(words(&prompt), words(&reply))
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

async fn embeddings(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let req = match admit(&headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::Array(items)) => items.iter().map(text_of).collect(),
        Some(v) => vec![text_of(v)],
        None => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            // A deterministic toy embedding: byte sums in 8 buckets, normalised.
            let mut v = [0f64; 8];
            for (j, b) in text.bytes().enumerate() {
                v[j % 8] += f64::from(b);
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1.0);
            json!({"object": "embedding", "index": i, "embedding": v.iter().map(|x| x / norm).collect::<Vec<_>>()})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| words(t)).sum();
    let body = json!({"object": "list", "data": data, "model": req.get("model").cloned().unwrap_or(json!("demo")),
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_chunks_then_done() {
        let addr = start().await.unwrap();
        let answer = reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("authorization", format!("Bearer {DEMO_KEY}"))
            .body(r#"{"model":"demo","stream":true,"messages":[{"role":"user","content":"hi there"}]}"#)
            .send()
            .await
            .unwrap();
        let text = answer.text().await.unwrap();
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "echo: hi there");
    }
}
