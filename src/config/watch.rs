//! Hot reload: watch the config files, reload on change, swap atomically.
//!
//! Requests hold the `Arc<GatewayConfig>` they started with, so in-flight requests finish
//! on the old configuration. A new configuration that fails validation is logged and
//! ignored; the old one stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{load, problem, GatewayConfig, Source};

/// The live configuration.
pub type SharedConfig = Arc<ArcSwap<GatewayConfig>>;

/// Called after each successful reload (e.g. to give Envoy the new routes and clusters).
pub type OnReload = Box<dyn Fn(&Arc<GatewayConfig>) + Send + Sync>;

/// Watches `source` and swaps `shared` on every valid change, until the process ends.
pub fn spawn(source: Source, shared: SharedConfig, on_reload: OnReload) -> notify::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let relevant = source.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            // Other files in a watched directory (logs, editor swap files) are not ours.
            if !matches!(e.kind, notify::EventKind::Access(_))
                && e.paths.iter().any(|p| is_config_path(&relevant, p))
            {
                let _ = tx.send(());
            }
        }
    })?;
    // Watch directories, not files: editors and Kubernetes replace files by renaming, which
    // would end a watch on the file itself.
    for dir in watched_dirs(&source) {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    if let Some(dir) = &source.secrets_dir {
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    tokio::spawn(async move {
        let _watcher = watcher; // kept alive with the task
        while rx.recv().await.is_some() {
            // Let a burst of events (write, rename, chmod) settle into one reload.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            reload(&source, &shared, &on_reload);
        }
    });
    Ok(())
}

/// Whether a changed path can affect the configuration: a named file, a config file in a
/// named directory, or anything under the secrets directory.
fn is_config_path(source: &Source, path: &Path) -> bool {
    if source
        .secrets_dir
        .as_deref()
        .is_some_and(|d| path.starts_with(d))
    {
        return true;
    }
    source.paths.iter().any(|p| {
        if p.is_dir() {
            path.parent() == Some(p.as_path()) && super::load::is_config_file(path)
        } else {
            // Kubernetes mounts swap a `..data` symlink; compare by file name in the directory.
            path == p
                || (path.parent() == p.parent() && path.file_name() == p.file_name())
                || path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        }
    })
}

fn watched_dirs(source: &Source) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = source
        .paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
            }
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Loads the configuration again and swaps it in if it is valid.
pub fn reload(source: &Source, shared: &SharedConfig, on_reload: &OnReload) {
    match load(source) {
        Ok(config) => {
            let config = Arc::new(config);
            shared.store(config.clone());
            tracing::info!(
                models = config.models.len(),
                backends = config.backends.len(),
                "configuration reloaded"
            );
            on_reload(&config);
        }
        Err(problems) => {
            tracing::error!(
                "configuration change rejected, keeping the previous configuration: {}",
                problem::report(&problems)
            );
        }
    }
}
