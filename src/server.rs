//! `serve`: the sidecar alone. The gRPC ext_proc and health services on a unix socket or
//! TCP address, the admin server, and hot reload.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::{self, AdminState};
use crate::config::{self, watch, GatewayConfig, Source};
use crate::envoy::admin_client::EnvoyAdminClient;
use crate::envoy::bootstrap::SidecarAddress;
use crate::extproc::store::{RequestStore, DEFAULT_MAX_IN_FLIGHT};
use crate::extproc::{Limits, Service, Shared};
use crate::metrics::Metrics;
use crate::ports;
use crate::quota::service::EmbeddedRateLimit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;

pub struct ServeOptions {
    pub source: Source,
    pub listen: SidecarAddress,
    pub admin: Option<std::net::SocketAddr>,
    pub limits: Limits,
    /// `run`: the Envoy it started, whose circuit-breaker overflows `/metrics` shows.
    pub envoy: Option<EnvoyAdminClient>,
    /// Who the consumer is, for quota buckets.
    pub identity: crate::quota::identity::Identity,
}

/// Validates the configuration and builds the shared state, or reports every problem.
pub fn prepare(
    source: &Source,
    limits: Limits,
    identity: crate::quota::identity::Identity,
) -> Result<Arc<Shared>, String> {
    let config: GatewayConfig = config::load(source).map_err(|p| config::problem::report(&p))?;
    for notice in &config.not_enforced {
        tracing::warn!("not enforced: {notice}");
    }
    if let Some(text) = identity.describe() {
        tracing::info!("{text}");
    }
    Ok(Arc::new(Shared {
        config: Arc::new(ArcSwap::from_pointee(config)),
        store: RequestStore::new(DEFAULT_MAX_IN_FLIGHT),
        metrics: Arc::new(Metrics::default()),
        limits,
        body_budget: crate::extproc::budget::BodyBudget::new(limits.max_body_bytes_in_flight),
        identity,
    }))
}

/// Starts the gRPC and admin servers in the background, and the config watcher.
pub async fn start(
    options: &ServeOptions,
    shared: Arc<Shared>,
    on_reload: watch::OnReload,
) -> Result<(), String> {
    let admin_state = Arc::new(AdminState {
        shared: shared.clone(),
        ready: Default::default(),
        envoy: options.envoy.clone(),
    });
    if let Some(addr) = options.admin {
        admin::serve(addr, admin_state.clone())
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => ports::PortTaken {
                    port: addr.port(),
                    flag: "--admin",
                    purpose: "the sidecar's admin",
                    holder: ports::Holder::of(addr.port()),
                }
                .to_string(),
                _ => format!("cannot listen on admin address {addr}: {e}"),
            })?;
    }
    if !options.source.paths.is_empty() || options.source.secrets_dir.is_some() {
        watch::spawn(options.source.clone(), shared.config.clone(), on_reload)
            .map_err(|e| format!("cannot watch the configuration files: {e}"))?;
    }
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ExternalProcessorServer<Service>>()
        .await;
    // Request bodies arrive as one message: allow what the body limit allows.
    let max_message = usize::try_from(options.limits.max_body_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let ext_proc = ExternalProcessorServer::new(Service::new(shared.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    // Envoy's rate-limit filter asks the same socket (the embedded quota counters).
    let rate_limit =
        RateLimitServiceServer::from_arc(EmbeddedRateLimit::new(shared.config.clone()));
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(ext_proc)
        .add_service(rate_limit);
    match &options.listen {
        SidecarAddress::Unix(path) => {
            remove_stale_socket(path)?;
            let listener = UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            // Whoever can talk to the socket can ask for provider credentials: owner only.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
            tokio::spawn(async move {
                if let Err(e) = router
                    .serve_with_incoming(UnixListenerStream::new(listener))
                    .await
                {
                    tracing::error!(error = %e, "ext_proc server stopped");
                }
            });
        }
        SidecarAddress::Tcp { host, port } => {
            if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") {
                tracing::warn!(%host, "ext_proc listens beyond loopback without authentication: whoever reaches it can obtain provider credentials; prefer a unix socket");
            }
            let listener = tokio::net::TcpListener::bind((host.as_str(), *port))
                .await
                .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming(incoming).await {
                    tracing::error!(error = %e, "ext_proc server stopped");
                }
            });
        }
    }
    admin_state.ready.store(true, Ordering::Release);
    Ok(())
}

/// Removes a socket file a sidecar that died (a `kill -9`, a container restart) left
/// behind, which would make bind fail; refuses when a live sidecar still answers on it.
fn remove_stale_socket(path: &std::path::Path) -> Result<(), String> {
    if !path.exists() {
        return Ok(());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!(
            "{} is in use by a running process (another sidecar?); stop it or choose another --listen",
            path.display()
        ));
    }
    std::fs::remove_file(path)
        .map_err(|e| format!("cannot remove the stale {}: {e}", path.display()))
}
