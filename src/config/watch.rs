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
    let watched = WatchSet::new(&source);
    // Absolute, as the set compares them: events carry the path as it was watched.
    let dirs = watched.dirs();
    let secrets_dir = watched.secrets_dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event {
            // Other files in a watched directory (the gateway's own log, editor swap files)
            // are not ours: they must not cost a reload.
            if !matches!(e.kind, notify::EventKind::Access(_))
                && e.paths.iter().any(|p| watched.is_config_path(p))
            {
                let _ = tx.send(());
            }
        }
    })?;
    // Watch directories, not files: editors and Kubernetes replace files by renaming, which
    // would end a watch on the file itself, and a named directory may gain files.
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    if let Some(dir) = &secrets_dir {
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

/// The paths whose change can affect the configuration, made absolute once (events carry
/// the watched directory joined with the file name), so that an event costs no syscall.
struct WatchSet {
    /// Files named by `--config`.
    files: Vec<PathBuf>,
    /// Directories named by `--config`: their `*.yaml`, `*.yml` and `*.json` files.
    dirs: Vec<PathBuf>,
    secrets_dir: Option<PathBuf>,
}

/// The symlink a Kubernetes volume swaps atomically when a mounted ConfigMap or Secret
/// changes; the files the configuration names point through it.
const KUBERNETES_DATA_LINK: &str = "..data";

impl WatchSet {
    fn new(source: &Source) -> Self {
        let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) = source
            .paths
            .iter()
            .map(|p| absolute(p))
            .partition(|p| p.is_dir());
        WatchSet {
            files,
            dirs,
            secrets_dir: source.secrets_dir.as_deref().map(absolute),
        }
    }

    /// The directories to watch: each named directory, and the directory of each named file.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .chain(self.dirs.iter().cloned())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Whether a changed path can affect the configuration: a named file, a config file in
    /// a named directory, a Kubernetes volume's data link next to either, or anything under
    /// the secrets directory.
    fn is_config_path(&self, path: &Path) -> bool {
        if self
            .secrets_dir
            .as_deref()
            .is_some_and(|d| path.starts_with(d))
        {
            return true;
        }
        let data_link = path.file_name().is_some_and(|n| n == KUBERNETES_DATA_LINK);
        let parent = path.parent();
        self.files
            .iter()
            .any(|f| f == path || (data_link && f.parent() == parent))
            || self.dirs.iter().any(|d| {
                parent == Some(d.as_path()) && (data_link || super::load::is_config_file(path))
            })
    }
}

/// `path` made absolute against the working directory (symlinks are kept: a Kubernetes
/// mount's names must stay the names the events carry).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
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
            for notice in &config.not_enforced {
                tracing::warn!("not enforced: {notice}");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configuration_paths_count() {
        let dir = std::env::temp_dir().join(format!("llm-watch-{}", std::process::id()));
        let conf_dir = dir.join("conf.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let file = dir.join("config.yaml");
        std::fs::write(&file, "").unwrap();
        let set = WatchSet::new(&Source {
            paths: vec![file.clone(), conf_dir.clone()],
            secrets_dir: Some(dir.join("secrets")),
        });
        assert_eq!(set.dirs(), [dir.clone(), conf_dir.clone()]);
        for yes in [
            file.clone(),
            dir.join("..data"),
            conf_dir.join("new.yaml"),
            conf_dir.join("..data"),
            dir.join("secrets/openai/apiKey"),
        ] {
            assert!(set.is_config_path(&yes), "{}", yes.display());
        }
        for no in [
            dir.join("gateway.log"),
            dir.join("other.yaml"),
            dir.join("..config.yaml.swp"),
            dir.join(".config.yaml.tmp"),
            conf_dir.join("gateway.log"),
            conf_dir.join("sub/x.yaml"),
            // The kubelet's steps before the swap: the new payload and the link to it.
            conf_dir.join("..2026_12_01_14_00_00.123456789/new.yaml"),
            conf_dir.join("..data_tmp"),
            dir.join("..data_tmp"),
        ] {
            assert!(!set.is_config_path(&no), "{}", no.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_paths_match_the_events_of_their_absolute_watch() {
        let set = WatchSet::new(&Source {
            paths: vec![PathBuf::from("config.yaml")],
            secrets_dir: Some(PathBuf::from("secrets")),
        });
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(set.dirs(), std::slice::from_ref(&cwd));
        assert!(set.is_config_path(&cwd.join("config.yaml")));
        assert!(set.is_config_path(&cwd.join("secrets/s/apiKey")));
        assert_eq!(set.secrets_dir, Some(cwd.join("secrets")));
    }
}
