//! Configuration: the resource kinds, their validation, and hot reload.

pub mod default;
pub mod load;
pub mod model;
pub mod problem;
pub mod resolve;
pub mod resources;
pub mod secrets;
pub mod watch;

pub use model::*;
pub use problem::Problem;

use std::path::PathBuf;

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Files or directories of resource documents. Empty means the embedded default.
    pub paths: Vec<PathBuf>,
    /// A directory of mounted Secrets (`<dir>/<secret-name>/<key>`), consulted for Secrets
    /// that no manifest defines.
    pub secrets_dir: Option<PathBuf>,
}

/// Loads, validates and resolves the configuration from `source`.
pub fn load(source: &Source) -> Result<GatewayConfig, Vec<Problem>> {
    let resources = if source.paths.is_empty() {
        default::resources()?
    } else {
        load::load_paths(&source.paths)?
    };
    resolve::resolve(&resources, source.secrets_dir.as_deref())
}
