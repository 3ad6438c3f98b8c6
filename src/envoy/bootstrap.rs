//! The Envoy bootstrap: the listener with the router-level ext_proc, the sidecar's
//! cluster, and file-based RDS and CDS for everything that a reload may change.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::quota::envoy::{rate_limit_cluster, rate_limit_filter, RateLimitService};

use super::resources::{
    circuit_breakers, ext_proc_filter, EXTPROC_CLUSTER, ROUTE_CONFIG_NAME, SIDECAR_MAX_STREAMS,
};

/// How the sidecar is reached from Envoy.
#[derive(Debug, Clone)]
pub enum SidecarAddress {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl SidecarAddress {
    /// Parses `--listen`: a `host:port`, or else a unix socket path.
    pub fn parse(s: &str) -> SidecarAddress {
        if let Some((host, port)) = s.rsplit_once(':') {
            if let Ok(port) = port.parse::<u16>() {
                if !host.contains('/') {
                    return SidecarAddress::Tcp {
                        host: host.trim_matches(['[', ']']).to_string(),
                        port,
                    };
                }
            }
        }
        SidecarAddress::Unix(PathBuf::from(s.strip_prefix("unix:").unwrap_or(s)))
    }
}

/// Where Envoy's own admin interface listens.
#[derive(Debug, Clone)]
pub enum EnvoyAdmin {
    /// 127.0.0.1 and this port.
    Port(u16),
    /// A unix socket (`admin.address.pipe`, works on Envoy 1.40): `run`'s default, so
    /// that two gateways on one machine never collide on an admin port.
    Socket(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub listen_address: String,
    pub port: u16,
    pub envoy_admin: EnvoyAdmin,
    /// Written into the node's metadata, where Envoy's admin `/server_info` shows it:
    /// `run` tells its own Envoy from one an earlier gateway left behind.
    pub run_token: Option<String>,
    pub sidecar: SidecarAddress,
    /// The directory holding `routes.json` and `clusters.json`.
    pub xds_dir: PathBuf,
    pub max_body_bytes: u64,
    /// Where the rate-limit filter checks and charges quotas.
    pub rate_limit: RateLimitService,
}

/// The node metadata key holding [`BootstrapOptions::run_token`].
pub const RUN_TOKEN_METADATA: &str = "llm_extproc_run";

pub fn render(o: &BootstrapOptions) -> Value {
    let sidecar_address = match &o.sidecar {
        SidecarAddress::Unix(path) => json!({"pipe": {"path": path}}),
        SidecarAddress::Tcp { host, port } => {
            json!({"socket_address": {"address": host, "port_value": port}})
        }
    };
    // Room above the sidecar's own limit, so that the sidecar (which answers with a JSON
    // 413 naming the limit) decides, not Envoy's buffer.
    let buffer_limit = o
        .max_body_bytes
        .saturating_add(1 << 20)
        .min(u32::MAX as u64);
    let file_source = |name: &str| -> Value {
        json!({
            "path_config_source": {"path": o.xds_dir.join(name), "watched_directory": {"path": o.xds_dir}},
            "resource_api_version": "V3"
        })
    };
    let admin_address = match &o.envoy_admin {
        EnvoyAdmin::Port(port) => {
            json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
        }
        // Owner only: the admin interface can stop Envoy and change its state.
        EnvoyAdmin::Socket(path) => json!({"pipe": {"path": path, "mode": 0o600}}),
    };
    let mut node = json!({"id": "llm-extproc", "cluster": "llm-extproc"});
    if let Some(token) = &o.run_token {
        node["metadata"] = json!({RUN_TOKEN_METADATA: token});
    }
    let mut bootstrap = json!({
        "node": node,
        "admin": {"address": admin_address},
        "dynamic_resources": {"cds_config": file_source("clusters.json")},
        "static_resources": {
            "listeners": [{
                "name": "llm",
                "address": {"socket_address": {"address": o.listen_address, "port_value": o.port}},
                "per_connection_buffer_limit_bytes": buffer_limit,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "llm",
                        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": file_source("routes.json")},
                        "http_filters": [
                            ext_proc_filter(false),
                            restore_request_length(),
                            rate_limit_filter(&o.rate_limit, EXTPROC_CLUSTER),
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ],
                        "local_reply_config": local_reply_config(),
                        "access_log": access_log(),
                        // LLM streams pause while the model thinks; the route timeout bounds the whole.
                        "stream_idle_timeout": "300s"
                    }
                }]}]
            }],
            "clusters": [{
                "name": EXTPROC_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                // The sidecar never retries (ext_proc has no retries), hence 0.
                "circuit_breakers": circuit_breakers(SIDECAR_MAX_STREAMS, 0),
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "load_assignment": {"cluster_name": EXTPROC_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sidecar_address}}]}]}
            }]
        }
    });
    if let (Some(cluster), Some(Value::Array(clusters))) = (
        rate_limit_cluster(&o.rate_limit),
        bootstrap.pointer_mut("/static_resources/clusters"),
    ) {
        clusters.push(cluster);
    }
    bootstrap
}

/// The router-level ext_proc replaces the request body in its header phase, and Envoy
/// then drops content-length (providers want one): restored from the length the sidecar
/// put in dynamic metadata.
pub fn restore_request_length() -> Value {
    let value = format!(
        "%DYNAMIC_METADATA(io.envoy.ai_gateway:{})%",
        crate::extproc::router::REQUEST_LENGTH_METADATA
    );
    json!({
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"append": {
                "header": {"key": "content-length", "value": value},
                "append_action": "ADD_IF_ABSENT"
            }}]}
        }
    })
}

/// Envoy's own error replies as OpenAI-style JSON. Each mapper picks replies by their
/// response code details (CEL): the sidecar's own replies are JSON already and carry
/// details starting `llm_extproc`; `ext_proc_error…` means the processor itself failed.
pub fn local_reply_config() -> Value {
    let cel = |expression: &str| {
        json!({"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": expression
            }
        }})
    };
    let error = |message: &str, error_type: &str, code: &str| {
        json!({
            "json_format": {"error": {"message": message, "type": error_type, "param": null, "code": code}},
            "content_type": "application/json"
        })
    };
    let anthropic = |message: &str, error_type: &str| {
        json!({
            "json_format": {"type": "error", "error": {"type": error_type, "message": message}},
            "content_type": "application/json"
        })
    };
    // Anthropic SDK clients (the Messages API) get Anthropic's error shape, decided by
    // the client's API, never by the path a provider gets: the sidecar marks every
    // request in the same answer that rewrites its path (an OpenAI client of a Claude
    // backend is sent to `/v1/messages`). Only a request the sidecar never marked (it
    // was unreachable, or the request did not get that far) is judged by its path,
    // which then is still the client's. CEL
    // absorbs the error of a missing key in `||`.
    let messages =
        "(metadata.filter_metadata['io.envoy.ai_gateway']['client_api'] == 'messages' \
        || (!('io.envoy.ai_gateway' in metadata.filter_metadata) \
            && (request.path.startsWith('/v1/messages') || request.path.startsWith('/anthropic/'))))";
    let mut mappers = crate::quota::envoy::reply_mappers(messages);
    let rest = json!([
        {
            "filter": cel(&format!("response.code_details.startsWith('ext_proc_error') && {messages}")),
            "status_code": 503,
            "body_format_override": anthropic("the gateway's request processor is unavailable", "overloaded_error")
        },
        {
            "filter": cel(&format!("response.code == 404 && response.code_details == 'direct_response' && {messages}")),
            "body_format_override": anthropic("model `%REQ(X-AI-EG-MODEL)%` is not served by this gateway; %LOCAL_REPLY_BODY%", "not_found_error")
        },
        {
            "filter": cel(&format!("!response.code_details.startsWith('llm_extproc') && !response.code_details.startsWith('ext_proc') && {messages}")),
            "body_format_override": anthropic("%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)", "api_error")
        },
        {
            // The sidecar is unreachable or failed: fail closed, never pass the request on.
            "filter": cel("response.code_details.startsWith('ext_proc_error')"),
            "status_code": 503,
            "body_format_override": error("the gateway's request processor is unavailable", "service_unavailable", "processor_unavailable")
        },
        {
            // The catch-all route: a model no rule takes (the sidecar lets a model through
            // when a rule matches models by regular expression, which only Envoy evaluates).
            "filter": cel("response.code == 404 && response.code_details == 'direct_response'"),
            "body_format_override": error("model `%REQ(X-AI-EG-MODEL)%` is not served by this gateway; %LOCAL_REPLY_BODY%", "invalid_request_error", "model_not_found")
        },
        {
            // Every other reply Envoy makes itself (no healthy upstream, timeouts, body over
            // the buffer limit, the unknown-model route): its text becomes the message.
            "filter": cel("!response.code_details.startsWith('llm_extproc') && !response.code_details.startsWith('ext_proc')"),
            "body_format_override": error("%LOCAL_REPLY_BODY%", "gateway_error", "%RESPONSE_CODE_DETAILS%")
        }
    ]);
    if let Value::Array(rest) = rest {
        mappers.extend(rest);
    }
    json!({"mappers": mappers})
}

/// One line per request on stdout, with what the sidecar metered.
fn access_log() -> Value {
    let format = json!({
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "model": "%REQ(X-AI-EG-MODEL)%",
        "backend": "%DYNAMIC_METADATA(io.envoy.ai_gateway:backend_name)%",
        "upstream": "%UPSTREAM_HOST%",
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "input_tokens": "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_input_token)%",
        "output_tokens": "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_output_token)%",
        "total_tokens": "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%",
        // Microseconds from Envoy sending a phase's headers to the sidecar to its answer
        // (each phase is answered once, at its headers, when its body has been read).
        "ext_proc_request_us": "%FILTER_STATE(envoy.filters.http.ext_proc:FIELD:request_header_latency_us)%",
        "ext_proc_response_us": "%FILTER_STATE(envoy.filters.http.ext_proc:FIELD:response_header_latency_us)%",
        "upstream_ms": "%RESPONSE_DURATION%",
        // Everything the sidecar set: every llmRequestCosts key, the quota charges.
        "ai_gateway": "%DYNAMIC_METADATA(io.envoy.ai_gateway)%"
    });
    json!([{
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": format}
        }
    }])
}

/// Writes the bootstrap to `path` as JSON.
pub fn write(o: &BootstrapOptions, path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&render(o)).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
