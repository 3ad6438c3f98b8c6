//! llm-extproc: an Envoy external processor that makes Envoy an OpenAI-compatible LLM
//! gateway. See the README for the data path and configuration.

mod admin;
mod api;
mod auth;
mod config;
mod echo;
mod envoy;
mod extproc;
mod framing;
mod kubernetes;
mod logging;
mod memory;
mod metrics;
mod ports;
mod quota;
mod run;
mod schema;
mod secret;
mod server;
mod sync;
mod telemetry;
mod usage;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use config::Source;
use envoy::bootstrap::SidecarAddress;
use extproc::budget::DEFAULT_BODY_BYTES_IN_FLIGHT;
use extproc::Limits;
use logging::LogFormat;

const DEFAULT_MAX_BODY: u64 = 32 * 1024 * 1024;

#[derive(Parser)]
#[command(
    name = "llm-extproc",
    version,
    about = "An Envoy external processor that turns Envoy into an OpenAI-compatible LLM gateway",
    long_about = "llm-extproc is an Envoy ext_proc sidecar. Clients call one OpenAI-compatible endpoint; \
the sidecar reads the body's `model`, sets the `x-ai-eg-model` routing header, and for each upstream \
attempt rewrites the path, swaps the client's credentials for the provider's and meters token usage. \
Envoy does the routing, retries and failover between priorities.\n\n\
It reads the Envoy AI Gateway resource kinds (AIGatewayRoute, AIServiceBackend, \
BackendSecurityPolicy, Backend, Secret) from YAML files.",
    after_help = "EXAMPLES:\n  llm-extproc run                               # standalone gateway on :1975 with the demo model\n  \
llm-extproc run --config examples/openai.yaml   # your providers\n  \
llm-extproc check --config examples/            # validate a configuration\n  \
llm-extproc serve --config /etc/llm --listen /run/llm/extproc.sock --admin 0.0.0.0:1064"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `json` gives one object a line, with a
    /// `llm_extproc::request` event per answered request.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar alone, for an Envoy configured elsewhere (e.g. by Envoy Gateway).
    #[command(
        long_about = "Serve the ext_proc gRPC service (and grpc.health.v1.Health) for both filter placements \
on one socket, plus an admin server with /healthz, /readyz and /metrics. The configuration is reloaded \
when its files change; an invalid change is logged and the previous configuration kept.",
        after_help = "EXAMPLE:\n  llm-extproc serve --config ./config --listen /tmp/extproc.sock --admin 127.0.0.1:1064"
    )]
    Serve(ServeArgs),
    /// Run a standalone gateway: the sidecar plus a real Envoy listening on --port.
    #[command(
        long_about = "Render an Envoy bootstrap for the configuration, start Envoy and the sidecar, and keep Envoy's \
routes and clusters in step with configuration reloads (no Envoy restart). Envoy is found in ENVOY_BIN, \
the project's .venv, or PATH. SIGINT or SIGTERM stops both; if Envoy dies, run exits non-zero.\n\n\
Without --config it serves an embedded default: the model `demo` from a built-in echo backend (so a \
first curl works with no keys), plus OpenAI (OPENAI_API_KEY), Azure OpenAI (AZURE_OPENAI_API_KEY and \
AZURE_OPENAI_ENDPOINT) and Anthropic (ANTHROPIC_API_KEY) when their keys are in the environment.",
        after_help = "EXAMPLE:\n  llm-extproc run\n  curl -s localhost:1975/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}'"
    )]
    Run(RunArgs),
    /// Print generated configuration (the Envoy bootstrap, the rate-limit service's, or
    /// the Envoy Gateway resources).
    #[command(subcommand)]
    Render(RenderCommand),
    /// Validate a configuration and explain each problem: resource, field and fix.
    #[command(
        after_help = "EXAMPLE:\n  llm-extproc check --config ./config\n\nExit status: 0 when valid, 1 when not."
    )]
    Check(ConfigArgs),
}

#[derive(Subcommand)]
enum RenderCommand {
    /// Print the Envoy bootstrap that `run` uses, with the routes and clusters inlined
    /// as file paths under --xds-dir.
    #[command(
        after_help = "EXAMPLE:\n  llm-extproc render envoy --config ./config --xds-dir /tmp/llm > envoy.json"
    )]
    Envoy(RenderEnvoyArgs),
    /// Print the configuration of an envoyproxy/ratelimit deployment for the
    /// QuotaPolicies (for `run --rate-limit-service`, or Envoy Gateway's rate limiting).
    #[command(
        after_help = "EXAMPLE:\n  llm-extproc render ratelimit-config --config ./config > ratelimit/config/ai-gateway.yaml"
    )]
    RatelimitConfig(ConfigArgs),
    /// Print the Envoy Gateway resources that run the sidecar beside Envoy Gateway: the
    /// Gateway, HTTPRoutes, Backends, the EnvoyExtensionPolicy and EnvoyPatchPolicy of
    /// both filter placements, traffic policies and the EnvoyProxy with the sidecar.
    #[command(
        long_about = "Turn the AI resources into Envoy Gateway v1.9 resources (no Envoy AI Gateway controller \
needed). Envoy Gateway must enable the Backend API (extensionApis.enableBackend) and EnvoyPatchPolicy \
(extensionApis.enableEnvoyPatchPolicy). The sidecar reads the same AI resources from the --config-map \
ConfigMap and each referenced Secret mounted under its --secrets-dir; no key is written into the output. \
What the resources cannot express is refused by name.",
        after_help = "EXAMPLE:\n  llm-extproc render gateway --config examples/openai.yaml --gateway-namespace maas-system > gateway.yaml"
    )]
    Gateway(RenderGatewayArgs),
}

/// Who the consumer is, for QuotaPolicy client selectors.
#[derive(Args)]
struct IdentityArgs {
    /// The request header naming the consumer (set by whatever authenticated the client);
    /// client selectors on this header see the consumer.
    #[arg(long, value_name = "HEADER")]
    consumer_header: Option<String>,
    /// Label the gen_ai metrics with the consumer (`user_id`; the first 1000 consumers,
    /// later ones as `other`). Off by default: every consumer adds series.
    #[arg(long)]
    consumer_metric_attribute: bool,
}

impl IdentityArgs {
    fn identity(&self, claim: Option<&str>) -> Result<quota::identity::Identity, String> {
        let mut identity = quota::identity::Identity::new(self.consumer_header.as_deref(), claim)
            .map_err(|e| e.to_string())?;
        identity.metric_attribute = self.consumer_metric_attribute;
        Ok(identity)
    }
}

/// Where Envoy checks and charges quotas.
#[derive(Args)]
struct RateLimitArgs {
    /// An envoyproxy/ratelimit gRPC service (host:port) that replicas share; by default
    /// the sidecar counts in memory (one machine). Its configuration: `render ratelimit-config`.
    #[arg(long, value_name = "HOST:PORT")]
    rate_limit_service: Option<String>,
}

impl RateLimitArgs {
    fn service(&self) -> Result<quota::envoy::RateLimitService, String> {
        match &self.rate_limit_service {
            None => Ok(quota::envoy::RateLimitService::Embedded),
            Some(text) => quota::envoy::RateLimitService::parse(text),
        }
    }
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Files or directories of YAML resources (repeatable). Omit for the embedded default.
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Vec<PathBuf>,
    /// A directory of mounted Secrets (<dir>/<secret-name>/<key>), for Secrets no manifest defines.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn source(&self) -> Source {
        Source {
            paths: self.config.clone(),
            secrets_dir: self.secrets_dir.clone(),
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to serve ext_proc: a unix socket path, or host:port.
    #[arg(long, default_value = "/tmp/llm-extproc.sock")]
    listen: String,
    /// host:port for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:1064")]
    admin: std::net::SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body_bytes: u64,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    identity: IdentityArgs,
    /// The consumer is this claim of the JWT that Envoy's jwt_authn filter verified, as
    /// <payload_in_metadata>.<claim> (e.g. jwt_payload.sub). Envoy's ext_proc filter must
    /// forward the `envoy.filters.http.jwt_authn` metadata namespace. Client selectors see
    /// it in --consumer-header (default x-ai-eg-consumer), never what the client sent there.
    #[arg(long, value_name = "KEY.CLAIM")]
    consumer_claim: Option<String>,
}

/// How much memory request bodies may take.
#[derive(Args)]
struct MemoryArgs {
    /// Most bytes of large (1 MiB and over) request bodies held at once; a body over it
    /// gets 503 with retry-after.
    #[arg(long, default_value_t = DEFAULT_BODY_BYTES_IN_FLIGHT)]
    max_body_bytes_in_flight: u64,
}

/// The Envoy listener settings shared by `run` and `render envoy`.
#[derive(Args)]
struct ListenerArgs {
    /// The gateway's port.
    #[arg(long, default_value_t = 1975)]
    port: u16,
    /// The address the gateway listens on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Envoy's own admin port on 127.0.0.1. `run` without it: a unix socket in its run
    /// directory (envoy-admin.sock); `render envoy` without it: 9901.
    #[arg(long)]
    envoy_admin_port: Option<u16>,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body_bytes: u64,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    listener: ListenerArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    /// The sidecar's admin port (/healthz, /readyz, /metrics) on 127.0.0.1.
    #[arg(long, default_value_t = 1064)]
    admin_port: u16,
    /// Envoy's log level.
    #[arg(long, default_value = "warning")]
    envoy_log_level: String,
    /// Envoy worker threads (default: one per core).
    #[arg(long)]
    envoy_concurrency: Option<u32>,
    /// Directory for the socket, bootstrap and route files (default: a new temp directory).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    rate_limit: RateLimitArgs,
}

#[derive(Args)]
struct RenderEnvoyArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    listener: ListenerArgs,
    /// Where Envoy reaches the sidecar: a unix socket path, or host:port.
    #[arg(long, default_value = "/tmp/llm-extproc.sock")]
    sidecar: String,
    /// Directory holding routes.json and clusters.json (written too).
    #[arg(long, default_value = "/tmp/llm-extproc")]
    xds_dir: PathBuf,
    #[command(flatten)]
    rate_limit: RateLimitArgs,
}

#[derive(Args)]
struct RenderGatewayArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The Gateway to render (default: the one the AIGatewayRoutes' parentRefs name).
    #[arg(long, value_name = "NAME")]
    gateway: Option<String>,
    /// The Gateway's namespace, where its Envoy pods, the ConfigMap and the Secrets live.
    #[arg(long, default_value = "maas-system")]
    gateway_namespace: String,
    /// The GatewayClass of Envoy Gateway's controller.
    #[arg(long, default_value = "eg")]
    gateway_class: String,
    /// The Gateway listener's port.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// The sidecar's image.
    #[arg(long, default_value = concat!("llm-extproc:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// The ConfigMap holding the AI resources (the sidecar's --config).
    #[arg(long, default_value = "llm-extproc-config")]
    config_map: String,
    /// The sidecar's unix socket, in the emptyDir it shares with Envoy.
    #[arg(long, default_value = "/run/llm-extproc/extproc.sock")]
    socket_path: String,
    /// The sidecar's admin port (/healthz, /readyz, /metrics), named `metrics`.
    #[arg(long, default_value_t = 1064)]
    admin_port: u16,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body_bytes: u64,
    #[command(flatten)]
    rate_limit: RateLimitArgs,
    /// Passed on to the sidecar in the pod.
    #[command(flatten)]
    identity: IdentityArgs,
}

fn main() -> ExitCode {
    memory::tune_allocator();
    let cli = Cli::parse();
    let log_writer = logging::init(cli.log_format);
    // A message printed at exit comes after every queued log line it may explain.
    let fail = |log_writer: logging::LogWriter, message: &dyn std::fmt::Display| {
        drop(log_writer);
        eprintln!("llm-extproc: {message}");
        ExitCode::FAILURE
    };
    if matches!(cli.command, Command::Serve(_) | Command::Run(_)) {
        match telemetry::init() {
            Ok(exports) => {
                if exports.traces {
                    tracing::info!("exporting traces over OTLP/HTTP");
                    if telemetry::content::capture_enabled() {
                        tracing::warn!(
                            "spans record prompts and completions ({}): they hold what users send",
                            telemetry::content::CAPTURE_VARIABLE
                        );
                    }
                }
                if exports.metrics {
                    tracing::info!("pushing metrics over OTLP/HTTP");
                }
            }
            Err(e) => return fail(log_writer, &e),
        }
    }
    // One thread: each ext_proc message is a few microseconds of work, and a multi-thread
    // runtime spent more on waking its workers than on the work (the benchmark measured
    // 36% more requests per second on one thread).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(log_writer, &format_args!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Check(args) => check(&args),
            Command::Serve(args) => serve(args).await,
            Command::Run(args) => run_standalone(args).await,
            Command::Render(RenderCommand::Envoy(args)) => render_envoy(args),
            Command::Render(RenderCommand::RatelimitConfig(args)) => render_ratelimit_config(&args),
            Command::Render(RenderCommand::Gateway(args)) => render_gateway(args),
        }
    });
    drop(runtime);
    telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(log_writer, &message),
    }
}

fn check(args: &ConfigArgs) -> Result<(), String> {
    let config = config::load(&args.source()).map_err(|p| config::problem::report(&p))?;
    for notice in &config.not_enforced {
        println!("not enforced: {notice}");
    }
    println!(
        "configuration is valid: {} model(s), {} backend(s), {} route(s)",
        config.models.len(),
        config.backends.len(),
        config.routes.len()
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let options = server::ServeOptions {
        source: args.config.source(),
        listen: SidecarAddress::parse(&args.listen),
        admin: Some(args.admin),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_body_bytes_in_flight: args.memory.max_body_bytes_in_flight,
        },
        envoy: None,
        identity: args.identity.identity(args.consumer_claim.as_deref())?,
    };
    if options.source.paths.is_empty() {
        let demo = echo::start()
            .await
            .map_err(|e| format!("cannot start the demo backend: {e}"))?;
        config::default::set_demo_port(demo.port());
    }
    let shared = server::prepare(&options.source, options.limits, options.identity.clone())?;
    server::start(&options, shared, Box::new(|_| {})).await?;
    tracing::info!(listen = %args.listen, admin = %args.admin, "llm-extproc serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

async fn run_standalone(args: RunArgs) -> Result<(), String> {
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], args.admin_port));
    run::run(run::RunOptions {
        serve: server::ServeOptions {
            source: args.config.source(),
            listen: SidecarAddress::Unix(PathBuf::new()),
            admin: Some(admin),
            limits: Limits {
                max_body_bytes: args.listener.max_body_bytes,
                max_body_bytes_in_flight: args.memory.max_body_bytes_in_flight,
            },
            envoy: None,
            identity: args.identity.identity(None)?,
        },
        rate_limit: args.rate_limit.service()?,
        listen_address: args.listener.address,
        port: args.listener.port,
        envoy_admin_port: args.listener.envoy_admin_port,
        envoy_log_level: args.envoy_log_level,
        envoy_concurrency: args.envoy_concurrency,
        run_dir: args.run_dir,
    })
    .await
}

fn render_envoy(args: RenderEnvoyArgs) -> Result<(), String> {
    let source = args.config.source();
    if source.paths.is_empty() {
        config::default::set_demo_port(0);
    }
    let config = config::load(&source).map_err(|p| config::problem::report(&p))?;
    std::fs::create_dir_all(&args.xds_dir).map_err(|e| e.to_string())?;
    envoy::xds_files::write(&config, &args.xds_dir).map_err(|e| e.to_string())?;
    let bootstrap = envoy::bootstrap::render(&envoy::bootstrap::BootstrapOptions {
        listen_address: args.listener.address,
        port: args.listener.port,
        envoy_admin: envoy::bootstrap::EnvoyAdmin::Port(
            args.listener.envoy_admin_port.unwrap_or(9901),
        ),
        run_token: None,
        sidecar: SidecarAddress::parse(&args.sidecar),
        xds_dir: args.xds_dir,
        max_body_bytes: args.listener.max_body_bytes,
        rate_limit: args.rate_limit.service()?,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&bootstrap).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn render_ratelimit_config(args: &ConfigArgs) -> Result<(), String> {
    let source = args.source();
    if source.paths.is_empty() {
        config::default::set_demo_port(0);
    }
    let config = config::load(&source).map_err(|p| config::problem::report(&p))?;
    print!("{}", quota::ratelimit_config::render(&config.quotas));
    Ok(())
}

fn render_gateway(args: RenderGatewayArgs) -> Result<(), String> {
    let source = args.config.source();
    if source.paths.is_empty() {
        return Err("render gateway needs --config (the resources the sidecar will read)".into());
    }
    let (resources, config) = kubernetes::load(&source)?;
    // The Gateway attachment is what this renders, not a notice.
    for notice in config
        .not_enforced
        .iter()
        .filter(|n| n.field != "spec.parentRefs")
    {
        eprintln!("not enforced: {notice}");
    }
    let options = kubernetes::RenderOptions {
        gateway_name: args.gateway,
        gateway_namespace: args.gateway_namespace,
        gateway_class: args.gateway_class,
        port: args.port,
        image: args.image,
        config_map: args.config_map,
        socket_path: args.socket_path,
        admin_port: args.admin_port,
        max_body_bytes: args.max_body_bytes,
        rate_limit_service: args.rate_limit.rate_limit_service,
        consumer_header: args.identity.consumer_header.clone(),
        consumer_metric_attribute: args.identity.consumer_metric_attribute,
    };
    // Refused here as `serve` in the pod would refuse it.
    args.identity.identity(None)?;
    let text = kubernetes::render(&resources, &config, &options).map_err(|e| e.to_string())?;
    for notice in kubernetes::notices(&resources, &options) {
        eprintln!("note: {notice}");
    }
    print!("{text}");
    Ok(())
}
