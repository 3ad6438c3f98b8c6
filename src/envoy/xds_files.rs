//! Writes the route and cluster files Envoy watches. Each file is replaced by a rename,
//! which is what Envoy's `watched_directory` reacts to and which never shows Envoy a
//! half-written file. Clusters are written before routes, so a new route never points
//! at a cluster Envoy does not have yet.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::resources::{clusters, discovery_response, route_configuration};
use crate::config::GatewayConfig;

static VERSION: AtomicU64 = AtomicU64::new(0);

pub fn write(config: &GatewayConfig, dir: &Path) -> std::io::Result<()> {
    let version = VERSION.fetch_add(1, Ordering::Relaxed) + 1;
    write_atomic(
        dir,
        "clusters.json",
        &discovery_response(version, clusters(config)),
    )?;
    write_atomic(
        dir,
        "routes.json",
        &discovery_response(version, vec![route_configuration(config)]),
    )
}

fn write_atomic(dir: &Path, name: &str, value: &serde_json::Value) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    // Unchanged resources are not rewritten: Envoy would reload them for nothing. The
    // version line differs on every write, so compare the resources only.
    if let Ok(old) = std::fs::read(&path) {
        if serde_json::from_slice::<serde_json::Value>(&old)
            .ok()
            .and_then(|v| v.get("resources").cloned())
            .as_ref()
            == value.get("resources")
        {
            return Ok(());
        }
    }
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
