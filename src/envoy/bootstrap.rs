//! The Envoy bootstrap: the listener with the router-level ext_proc, the sidecar's
//! cluster, and file-based RDS and CDS for everything that a reload may change.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::resources::{ext_proc_filter, EXTPROC_CLUSTER, ROUTE_CONFIG_NAME};

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

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub listen_address: String,
    pub port: u16,
    pub envoy_admin_port: u16,
    pub sidecar: SidecarAddress,
    /// The directory holding `routes.json` and `clusters.json`.
    pub xds_dir: PathBuf,
    pub max_body_bytes: u64,
}

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
    json!({
        "node": {"id": "llm-extproc", "cluster": "llm-extproc"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": o.envoy_admin_port}}},
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
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ],
                        "local_reply_config": local_reply_config(),
                        // LLM streams pause while the model thinks; the route timeout bounds the whole.
                        "stream_idle_timeout": "300s"
                    }
                }]}]
            }],
            "clusters": [{
                "name": EXTPROC_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "load_assignment": {"cluster_name": EXTPROC_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sidecar_address}}]}]}
            }]
        }
    })
}

/// Envoy's own error replies (sidecar unreachable, no healthy upstream, timeouts, …) as
/// OpenAI-style JSON.
fn local_reply_config() -> Value {
    json!({
        "body_format": {
            "json_format": {
                "error": {
                    "message": "%LOCAL_REPLY_BODY%",
                    "type": "gateway_error",
                    "code": "%RESPONSE_CODE_DETAILS%"
                }
            },
            "content_type": "application/json"
        }
    })
}

/// Writes the bootstrap to `path` as JSON.
pub fn write(o: &BootstrapOptions, path: &Path) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&render(o)).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
