//! The admin HTTP server: `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::envoy::admin_client::{encode_overflows, EnvoyAdminClient};
use crate::extproc::Shared;

pub struct AdminState {
    pub shared: Arc<Shared>,
    /// Set once the ext_proc server accepts connections.
    pub ready: AtomicBool,
    /// `run`'s Envoy, asked for its overflow counters on each scrape.
    pub envoy: Option<EnvoyAdminClient>,
}

pub async fn serve(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(())
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut body = state.shared.metrics.encode(state.shared.store.len());
    if let Some(envoy) = &state.envoy {
        match envoy.overflows().await {
            // The Prometheus text format has no end marker: the family goes last.
            Some(overflows) => body.push_str(&encode_overflows(&overflows)),
            None => tracing::debug!("Envoy's admin did not answer; no overflow counters"),
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}
