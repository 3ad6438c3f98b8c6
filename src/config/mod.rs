//! Configuration: the resource kinds, their validation, and hot reload.

pub mod body_edits;
pub mod default;
pub mod hostnames;
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
    let (resources, files) = if source.paths.is_empty() {
        (
            default::resources()?,
            vec![PathBuf::from("<embedded default>")],
        )
    } else {
        let files = load::config_files(&source.paths)?;
        (load::load_files(&files)?, files)
    };
    let config = resolve::resolve(&resources, source.secrets_dir.as_deref())?;
    if serves_nothing(&config) {
        // An empty file (or one emptied while serving) is a mistake, not a wish to answer
        // every request with 404: refuse it, and a reload keeps what it has.
        return Err(vec![no_routes_problem(&source.paths, &files)]);
    }
    Ok(config)
}

/// No rule of any route can take a request.
fn serves_nothing(config: &GatewayConfig) -> bool {
    config.routes.iter().all(|route| route.rules.is_empty())
}

fn no_routes_problem(paths: &[PathBuf], files: &[PathBuf]) -> Problem {
    let read = if files.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!(
            "read: none (no *.yaml, *.yml or *.json in {})",
            named.join(", ")
        )
    } else {
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        format!("read: {}", names.join(", "))
    };
    Problem {
        file: format!("files {read}"),
        resource: String::new(),
        field: String::new(),
        message: "no AIGatewayRoute with rules: this configuration would answer every request with 404".into(),
        fix: "add an AIGatewayRoute with at least one rule (see examples/openai.yaml), or point --config at the files that have one".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("llm-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.yaml");
        std::fs::write(&file, "").unwrap();
        for paths in [vec![file.clone()], vec![dir.clone()]] {
            let problems = load(&Source {
                paths,
                secrets_dir: None,
            })
            .expect_err("an empty configuration is refused");
            let text = problem::report(&problems);
            assert!(text.contains("no AIGatewayRoute with rules"), "{text}");
            assert!(text.contains(&file.display().to_string()), "{text}");
        }
        std::fs::remove_file(&file).unwrap();
        let problems = load(&Source {
            paths: vec![dir.clone()],
            secrets_dir: None,
        })
        .expect_err("an empty directory is refused");
        assert!(
            problem::report(&problems).contains("read: none (no *.yaml"),
            "{problems:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_embedded_default_still_loads() {
        default::set_demo_port(1);
        let config = load(&Source::default()).expect("the default serves the demo model");
        assert!(config.models.contains_key(default::DEMO_MODEL));
    }
}
