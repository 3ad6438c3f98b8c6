//! The embedded default configuration for `run` without `--config`.
//!
//! It always serves the model `demo` from the built-in echo backend (so a first curl works
//! with no keys, through the full data path: key swap, usage and all), plus the real
//! providers whose keys are in the environment.

use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};

use super::load::{parse_text, Resources};
use super::problem::Problem;

/// The key the echo backend expects; the gateway injects it like any provider key.
pub const DEMO_KEY: &str = "sk-llm-extproc-demo";
pub const DEMO_MODEL: &str = "demo";

static DEMO_PORT: AtomicU16 = AtomicU16::new(0);

/// Tells the default configuration where the echo backend listens.
pub fn set_demo_port(port: u16) {
    DEMO_PORT.store(port, Ordering::Relaxed);
}

struct Provider {
    name: &'static str,
    schema: String,
    policy: String,
    host: String,
    port: u16,
    models: Vec<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn models_from(var: &str, default: &[&str]) -> Vec<String> {
    match env(var) {
        Some(list) => list
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect(),
        None => default.iter().map(|m| m.to_string()).collect(),
    }
}

/// The echo backend (always) and every provider whose keys are in the environment, in
/// failover order.
fn providers() -> Vec<Provider> {
    [
        Some(demo()),
        openai(),
        azure(),
        anthropic(),
        bedrock(),
        vertex(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn demo() -> Provider {
    Provider {
        name: "demo",
        schema: "name: OpenAI".into(),
        policy: format!("type: APIKey\n  apiKey: {{secretRef: {{name: demo}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: demo}}\nstringData: {{apiKey: {DEMO_KEY}}}"),
        host: "127.0.0.1".into(),
        port: DEMO_PORT.load(Ordering::Relaxed),
        models: vec![DEMO_MODEL.into()],
    }
}

fn openai() -> Option<Provider> {
    let key = env("OPENAI_API_KEY")?;
    Some(Provider {
        name: "openai",
        schema: "name: OpenAI".into(),
        policy: secret_policy("APIKey", "apiKey", "openai", &key),
        host: "api.openai.com".into(),
        port: 443,
        models: models_from(
            "OPENAI_MODELS",
            &[
                "gpt-4o-mini",
                "gpt-4o",
                "gpt-4.1",
                "gpt-4.1-mini",
                "gpt-5",
                "gpt-5-mini",
                "text-embedding-3-small",
            ],
        ),
    })
}

fn azure() -> Option<Provider> {
    let (key, endpoint) = (env("AZURE_OPENAI_API_KEY")?, env("AZURE_OPENAI_ENDPOINT")?);
    let host = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let version = env("AZURE_OPENAI_API_VERSION").unwrap_or_else(|| "2025-01-01-preview".into());
    Some(Provider {
        name: "azure",
        schema: format!("name: AzureOpenAI\n    version: {version:?}"),
        policy: secret_policy("AzureAPIKey", "azureAPIKey", "azure", &key),
        host,
        port: 443,
        models: models_from("AZURE_OPENAI_DEPLOYMENTS", &["gpt-4o-mini"]),
    })
}

fn anthropic() -> Option<Provider> {
    let key = env("ANTHROPIC_API_KEY")?;
    Some(Provider {
        name: "anthropic",
        schema: "name: Anthropic".into(),
        policy: secret_policy("AnthropicAPIKey", "anthropicAPIKey", "anthropic", &key),
        host: "api.anthropic.com".into(),
        port: 443,
        models: models_from(
            "ANTHROPIC_MODELS",
            &["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"],
        ),
    })
}

fn bedrock() -> Option<Provider> {
    let (id, secret) = (env("AWS_ACCESS_KEY_ID")?, env("AWS_SECRET_ACCESS_KEY")?);
    let region = env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let mut file =
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n");
    if let Some(token) = env("AWS_SESSION_TOKEN") {
        file.push_str(&format!("aws_session_token = {token}\n"));
    }
    Some(Provider {
            name: "bedrock",
            schema: "name: AWSBedrock".into(),
            policy: file_policy(
                &format!(
                    "type: AWSCredentials\n  awsCredentials: {{region: {}, credentialsFile: {{secretRef: {{name: bedrock}}}}}}",
                    quote(&region)
                ),
                "bedrock",
                "credentials",
                &file,
            ),
            host: format!("bedrock-runtime.{region}.amazonaws.com"),
            port: 443,
            models: models_from(
                "BEDROCK_MODELS",
                &[
                    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                    "us.anthropic.claude-haiku-4-5-20251001-v1:0",
                    "amazon.titan-embed-text-v2:0",
                ],
            ),
    })
}

fn vertex() -> Option<Provider> {
    let project = env("GOOGLE_CLOUD_PROJECT").or_else(|| env("GCP_PROJECT"))?;
    let key_file = std::fs::read_to_string(env("GOOGLE_APPLICATION_CREDENTIALS")?).ok()?;
    let region = env("GOOGLE_CLOUD_LOCATION").unwrap_or_else(|| "us-central1".into());
    Some(Provider {
            name: "vertex",
            schema: "name: GCPVertexAI".into(),
            policy: file_policy(
                &format!(
                    "type: GCPCredentials\n  gcpCredentials: {{projectName: {}, region: {}, credentialsFile: {{secretRef: {{name: vertex}}}}}}",
                    quote(&project),
                    quote(&region)
                ),
                "vertex",
                "service_account.json",
                &key_file,
            ),
            // The `global` location has no regional host.
            host: if region == "global" {
                "aiplatform.googleapis.com".into()
            } else {
                format!("{region}-aiplatform.googleapis.com")
            },
            port: 443,
            models: models_from(
                "VERTEX_MODELS",
                &["gemini-2.5-flash", "gemini-2.5-pro", "text-embedding-005"],
            ),
    })
}

/// A value as a YAML scalar: JSON string quoting, which YAML reads verbatim.
fn quote(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// A policy whose Secret holds a file (credentials file, key JSON) under `key`.
fn file_policy(spec: &str, name: &str, key: &str, file: &str) -> String {
    format!(
        "{spec}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{{}: {}}}",
        quote(key),
        quote(file)
    )
}

fn secret_policy(policy_type: &str, field: &str, name: &str, key: &str) -> String {
    let quoted = quote(key);
    format!("type: {policy_type}\n  {field}: {{secretRef: {{name: {name}}}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{apiKey: {quoted}}}")
}

/// The default configuration as resource documents. A model offered by several
/// providers gets one rule with the providers as failover priorities, in the order above.
pub fn yaml() -> String {
    let providers = providers();
    let mut docs = Vec::new();
    for p in &providers {
        let endpoint = if p.host.parse::<std::net::IpAddr>().is_ok() {
            format!("ip: {{address: {}, port: {}}}", p.host, p.port)
        } else {
            format!("fqdn: {{hostname: {}, port: {}}}", p.host, p.port)
        };
        docs.push(format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {n}}}\nspec:\n  endpoints:\n  - {endpoint}\n---\n\
             apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {n}}}\nspec:\n  schema:\n    {schema}\n  backendRef: {{name: {n}, kind: Backend, group: gateway.envoyproxy.io}}\n---\n\
             apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {n}}}\nspec:\n  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {n}}}]\n  {policy}",
            n = p.name, schema = p.schema, policy = p.policy
        ));
    }
    let mut models: Vec<&String> = providers.iter().flat_map(|p| &p.models).collect();
    models.sort();
    models.dedup();
    let mut rules = String::new();
    for model in models {
        let quoted = serde_json::Value::from(model.as_str()).to_string();
        rules.push_str(&format!("  - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {quoted}}}]}}]\n    backendRefs:\n"));
        for (priority, p) in providers
            .iter()
            .filter(|p| p.models.contains(model))
            .enumerate()
        {
            rules.push_str(&format!(
                "    - {{name: {}, priority: {priority}}}\n",
                p.name
            ));
        }
    }
    docs.push(format!(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: default}}\nspec:\n  llmRequestCosts:\n  - {{metadataKey: llm_input_token, type: InputToken}}\n  - {{metadataKey: llm_output_token, type: OutputToken}}\n  - {{metadataKey: llm_total_token, type: TotalToken}}\n  rules:\n{rules}"
    ));
    docs.join("\n---\n")
}

/// The default configuration, parsed.
pub fn resources() -> Result<Resources, Vec<Problem>> {
    let mut resources = Resources::default();
    let mut problems = Vec::new();
    parse_text(
        &yaml(),
        Path::new("<embedded default>"),
        &mut resources,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_resolves_with_demo_model() {
        set_demo_port(1);
        let res = resources().expect("default parses");
        let config = super::super::resolve::resolve(&res, None).expect("default resolves");
        assert!(config.models.contains_key(DEMO_MODEL));
    }

    #[test]
    fn file_policies_resolve() {
        let file = "[default]\naws_access_key_id = AKID\naws_secret_access_key = s\n";
        let yaml = format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: bedrock}}\nspec:\n  endpoints:\n  - fqdn: {{hostname: bedrock-runtime.us-east-1.amazonaws.com, port: 443}}\n---\n\
             apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: bedrock}}\nspec:\n  schema:\n    name: AWSBedrock\n  backendRef: {{name: bedrock, kind: Backend, group: gateway.envoyproxy.io}}\n---\n\
             apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: bedrock}}\nspec:\n  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}}]\n  {}",
            file_policy(
                "type: AWSCredentials\n  awsCredentials: {region: \"us-east-1\", credentialsFile: {secretRef: {name: bedrock}}}",
                "bedrock",
                "credentials",
                file
            )
        );
        let mut res = Resources::default();
        let mut problems = Vec::new();
        parse_text(&yaml, Path::new("t"), &mut res, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let config = super::super::resolve::resolve(&res, None);
        assert!(config.is_ok(), "{:?}", config.err());
    }
}
