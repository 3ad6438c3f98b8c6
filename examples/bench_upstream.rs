//! A fast fake provider upstream for the benchmark (`scripts/bench.sh`): answers every POST
//! with fixed bytes chosen by path, as quickly as axum can, so the benchmark measures the
//! gateway rather than the upstream.
//!
//! - `/v1/chat/completions`: an OpenAI chat completion;
//! - `/v1/messages`: an Anthropic Messages answer, or an Anthropic SSE stream when the body
//!   says `"stream":true`;
//! - `/model/{id}/converse`: a Bedrock Converse answer (text only);
//! - `/model/{id}/converse-stream`: a Bedrock ConverseStream AWS event-stream body, encoded
//!   once at startup.
//!
//! With an `x-bench-event-interval-ms: N` header, the Anthropic stream is sent slowly: the
//! events up to the first text delta at once (so time-to-first-token is the gateway's
//! alone), then one event every N ms (so many streams stay open at once, for the scale
//! figures of `e2e/bench.py --scale`).
//!
//! Request bodies of any size are read (axum's 2 MB default limit is off), for the CPU
//! per request at large bodies.
//!
//! Any other path is a 404. It is a speed fixture, not a fake provider: it checks neither
//! API keys nor SigV4 signatures, and reads the request body only to find the stream flag
//! (the e2e fakes in `e2e/` check what the providers check).
//!
//! Usage: bench_upstream <port>

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;

const OPENAI: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1755137933,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

const ANTHROPIC: &str = r#"{"id":"msg_01BenchXo8bUbKQ3Z9pEyMeA","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":12}}"#;

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"model":"claude-3-5-haiku-20241022","id":"msg_01BenchXo8bUbKQ3Z9pEyMeA","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
    "event: ping\n",
    r#"data: {"type": "ping"}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello!"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" How can I help"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" you today?"}}"#,
    "\n\n",
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":12}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

const CONVERSE: &str = r#"{"metrics":{"latencyMs":312},"output":{"message":{"content":[{"text":"Hello! How can I help you today?"}],"role":"assistant"}},"stopReason":"end_turn","usage":{"inputTokens":9,"outputTokens":12,"totalTokens":21}}"#;

/// The ConverseStream events, in order: (`:event-type`, JSON payload).
const CONVERSE_STREAM_EVENTS: [(&str, &str); 7] = [
    ("messageStart", r#"{"role":"assistant"}"#),
    (
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"Hello!"}}"#,
    ),
    (
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":" How can I help"}}"#,
    ),
    (
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":" you today?"}}"#,
    ),
    ("contentBlockStop", r#"{"contentBlockIndex":0}"#),
    ("messageStop", r#"{"stopReason":"end_turn"}"#),
    (
        "metadata",
        r#"{"metrics":{"latencyMs":312},"usage":{"inputTokens":9,"outputTokens":12,"totalTokens":21}}"#,
    ),
];

static CONVERSE_STREAM: OnceLock<Bytes> = OnceLock::new();

fn encode_converse_stream() -> Bytes {
    let mut out = Vec::new();
    for (event, payload) in CONVERSE_STREAM_EVENTS {
        let message = Message::new(payload.as_bytes().to_vec())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        write_message_to(&message, &mut out).expect("encoding a fixed event");
    }
    Bytes::from(out)
}

/// Whether a JSON body asks for a stream (`"stream":true`, with or without a space).
fn wants_stream(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"stream\":";
    body.windows(KEY.len()).enumerate().any(|(at, w)| {
        w == KEY
            && body[at + KEY.len()..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b't')
    })
}

/// The slow mode's interval between events, from `x-bench-event-interval-ms`.
fn event_interval(headers: &HeaderMap) -> Option<Duration> {
    let ms = headers.get("x-bench-event-interval-ms")?.to_str().ok()?;
    ms.parse().ok().map(Duration::from_millis)
}

/// The Anthropic stream, its first events up to the first text delta at once, then one
/// event per `interval`.
fn slow_anthropic_stream(interval: Duration) -> Response {
    let events: Vec<String> = ANTHROPIC_STREAM
        .split_inclusive("\n\n")
        .map(str::to_owned)
        .collect();
    let first_token = events
        .iter()
        .position(|e| e.contains("text_delta"))
        .expect("the fixed stream has a text delta");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    tokio::spawn(async move {
        let (at_once, later) = events.split_at(first_token + 1);
        if tx.send(Ok(Bytes::from(at_once.concat()))).await.is_err() {
            return;
        }
        for event in later {
            tokio::time::sleep(interval).await;
            if tx.send(Ok(Bytes::from(event.clone()))).await.is_err() {
                return; // the client went away
            }
        }
    });
    (
        [("content-type", "text/event-stream; charset=utf-8")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

async fn answer(uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    if let Some(interval) = event_interval(&headers) {
        if path == "/v1/messages" && wants_stream(&body) {
            return slow_anthropic_stream(interval);
        }
    }
    match path {
        "/v1/chat/completions" => ([("content-type", "application/json")], OPENAI).into_response(),
        "/v1/messages" if wants_stream(&body) => (
            [("content-type", "text/event-stream; charset=utf-8")],
            ANTHROPIC_STREAM,
        )
            .into_response(),
        "/v1/messages" => ([("content-type", "application/json")], ANTHROPIC).into_response(),
        _ if path.starts_with("/model/") && path.ends_with("/converse") => {
            ([("content-type", "application/json")], CONVERSE).into_response()
        }
        _ if path.starts_with("/model/") && path.ends_with("/converse-stream") => (
            [("content-type", "application/vnd.amazon.eventstream")],
            CONVERSE_STREAM.get().expect("encoded at startup").clone(),
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "bench_upstream: unknown path").into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18080);
    CONVERSE_STREAM.get_or_init(encode_converse_stream);
    let app = Router::new()
        .fallback(post(answer))
        .layer(DefaultBodyLimit::disable());
    // No Nagle: a slow stream's headers and first events are separate writes, and Nagle
    // held the second for Envoy's delayed ACK (40 ms) once the connection was busy.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await
}
