//! Why a configuration cannot be rendered.

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    Config(String),
    #[error("{resource}: {field}: {message}\n  fix: {fix}")]
    Unsupported {
        resource: String,
        field: String,
        message: String,
        fix: String,
    },
    #[error("{0}")]
    Option(String),
    #[error("cannot write YAML: {0}")]
    Yaml(String),
}

pub(super) fn unsupported(
    resource: String,
    field: &str,
    message: String,
    fix: &str,
) -> RenderError {
    RenderError::Unsupported {
        resource,
        field: field.to_string(),
        message,
        fix: fix.to_string(),
    }
}
