//! A fast fake OpenAI upstream for the benchmark (`scripts/bench.sh`): answers every POST
//! with a fixed chat completion, as quickly as axum can, so the benchmark measures the
//! gateway rather than the upstream.
//!
//! Usage: bench_upstream <port>

use axum::routing::post;
use axum::Router;

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1755137933,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18080);
    let app = Router::new().fallback(post(|| async {
        ([("content-type", "application/json")], ANSWER)
    }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
