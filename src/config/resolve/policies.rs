//! BackendSecurityPolicies: the credential of each AIServiceBackend a policy targets,
//! with every Secret it reads checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::super::load::{Document, Resources};
use super::super::problem::{did_you_mean, Problem};
use super::super::resources::{self, BackendSecurityPolicySpec};
use super::super::secrets::{self, SecretLookupError, SecretValue};
use super::{full_name, what};
use crate::auth::{self, Credential};

/// The credential of each AIServiceBackend (by full name) that a policy targets.
pub(super) fn resolve_policies(
    res: &Resources,
    secrets_dir: Option<&Path>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<dyn Credential>> {
    const TYPES: &[&str] = &[
        "APIKey",
        "AWSCredentials",
        "AzureAPIKey",
        "AzureCredentials",
        "GCPCredentials",
        "AnthropicAPIKey",
    ];
    let backend_names: Vec<String> = res.backends.iter().map(|b| b.meta.name.clone()).collect();
    let mut out: BTreeMap<String, Arc<dyn Credential>> = BTreeMap::new();
    let mut targeted: BTreeMap<String, String> = BTreeMap::new();
    for doc in &res.policies {
        let w = what("BackendSecurityPolicy", doc);
        let spec = &doc.spec;
        if spec.credential_override.is_some() {
            // Refused, never ignored: ignoring it would send the configured credential
            // where the operator asked for the caller's (or for a 401 without one).
            problems.push(Problem::new(
                &doc.file,
                &w,
                "spec.credentialOverride",
                "per-request credentials (credentialOverride) are not supported by llm-extproc".into(),
                "remove credentialOverride; the policy's configured credential is then used for every request".into(),
            ));
            continue;
        }
        let credential: Option<Arc<dyn Credential>> = match spec.policy_type.as_str() {
            "APIKey" => api_key_secret(
                res,
                secrets_dir,
                doc,
                &w,
                "apiKey",
                spec.api_key.as_ref(),
                problems,
            )
            .map(|key| Arc::new(auth::api_key::ApiKey { key }) as Arc<dyn Credential>),
            "AzureAPIKey" => api_key_secret(
                res,
                secrets_dir,
                doc,
                &w,
                "azureAPIKey",
                spec.azure_api_key.as_ref(),
                problems,
            )
            .map(|key| Arc::new(auth::azure_api_key::AzureApiKey { key }) as Arc<dyn Credential>),
            "AnthropicAPIKey" => api_key_secret(
                res,
                secrets_dir,
                doc,
                &w,
                "anthropicAPIKey",
                spec.anthropic_api_key.as_ref(),
                problems,
            )
            .map(|key| {
                Arc::new(auth::anthropic_api_key::AnthropicApiKey { key }) as Arc<dyn Credential>
            }),
            "AWSCredentials" => aws_credentials(res, secrets_dir, doc, &w, problems),
            "GCPCredentials" => gcp_credentials(res, secrets_dir, doc, &w, problems),
            "AzureCredentials" => {
                check_rotating_policy(res, secrets_dir, doc, &w, problems);
                Some(Arc::new(auth::NotYetSupported {
                    policy_type: spec.policy_type.clone(),
                }))
            }
            other => {
                let fix = did_you_mean(other, TYPES.iter().copied())
                    .unwrap_or_else(|| format!("use one of {}", TYPES.join(", ")));
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    "spec.type",
                    format!("unknown type `{other}`"),
                    fix,
                ));
                None
            }
        };
        if spec.target_refs.is_empty() {
            problems.push(Problem::new(
                &doc.file,
                &w,
                "spec.targetRefs",
                "is empty".into(),
                "name the AIServiceBackend(s) this policy authenticates, under targetRefs".into(),
            ));
        }
        for (i, target) in spec.target_refs.iter().enumerate() {
            let ns = target.namespace.as_deref().unwrap_or(doc.namespace());
            let exists = res
                .backends
                .iter()
                .any(|b| b.meta.name == target.name && b.namespace() == ns);
            if !exists {
                let fix = did_you_mean(&target.name, backend_names.iter().map(String::as_str))
                    .unwrap_or_else(|| "define that AIServiceBackend or fix the name".into());
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("spec.targetRefs[{i}].name"),
                    format!("AIServiceBackend `{ns}/{}` does not exist", target.name),
                    fix,
                ));
                continue;
            }
            let backend = full_name(&target.name, ns);
            if let Some(other) = targeted.insert(backend.clone(), doc.meta.name.clone()) {
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("spec.targetRefs[{i}]"),
                    format!(
                        "AIServiceBackend `{ns}/{}` is already authenticated by policy `{other}`",
                        target.name
                    ),
                    "keep one BackendSecurityPolicy per AIServiceBackend".into(),
                ));
            }
            if let Some(c) = &credential {
                out.insert(backend, c.clone());
            }
        }
    }
    out
}

/// Reads the API key Secret of an `APIKey`-like policy. The Secret must hold `apiKey`.
fn api_key_secret(
    res: &Resources,
    secrets_dir: Option<&Path>,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    field: &str,
    holder: Option<&resources::SecretRefHolder>,
    problems: &mut Vec<Problem>,
) -> Option<SecretValue> {
    let Some(holder) = holder else {
        problems.push(Problem::new(
            &doc.file,
            w,
            &format!("spec.{field}"),
            "missing".into(),
            format!(
                "type {} needs `{field}.secretRef` naming the Secret that holds the key",
                doc.spec.policy_type
            ),
        ));
        return None;
    };
    let field = format!("spec.{field}.secretRef");
    secret_key(
        res,
        secrets_dir,
        doc,
        w,
        &field,
        &holder.secret_ref,
        "apiKey",
        problems,
    )
}

/// A Secret value that becomes a header: [`secret_text`], single-line printable ASCII.
#[allow(clippy::too_many_arguments)]
fn secret_key(
    res: &Resources,
    secrets_dir: Option<&Path>,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    field: &str,
    secret_ref: &resources::ObjectRef,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<SecretValue> {
    let value = secret_text(res, secrets_dir, doc, w, field, secret_ref, key, problems)?;
    if !value
        .expose()
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        let ns = secret_ref.namespace.as_deref().unwrap_or(doc.namespace());
        // The value becomes a header: a line break in it could inject headers.
        problems.push(Problem::new(
            &doc.file,
            w,
            field,
            format!("Secret `{ns}/{}`: `{key}` contains a line break or a non-ASCII or control character", secret_ref.name),
            format!("store the bare credential in `{key}`"),
        ));
        return None;
    }
    Some(value)
}

/// A non-empty Secret value, or a problem naming the Secret, the key and the fix.
#[allow(clippy::too_many_arguments)]
fn secret_text(
    res: &Resources,
    secrets_dir: Option<&Path>,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    field: &str,
    secret_ref: &resources::ObjectRef,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<SecretValue> {
    let ns = secret_ref.namespace.as_deref().unwrap_or(doc.namespace());
    let name = &secret_ref.name;
    match secrets::lookup(res, secrets_dir, ns, name, key) {
        Ok(v) if v.expose().is_empty() => {
            problems.push(Problem::new(
                &doc.file,
                w,
                field,
                format!("Secret `{ns}/{name}` has an empty `{key}`"),
                format!("put the credential in the Secret's `{key}`"),
            ));
            None
        }
        Ok(v) => Some(v),
        Err(SecretLookupError::NoSecret) => {
            let names = res.secrets.iter().map(|s| s.meta.name.as_str());
            let fix = did_you_mean(name, names).unwrap_or_else(|| {
                format!("define Secret `{name}` with a `{key}` entry (a Secret manifest, or a file {key} in a mounted secrets directory)")
            });
            problems.push(Problem::new(
                &doc.file,
                w,
                field,
                format!("Secret `{ns}/{name}` does not exist"),
                fix,
            ));
            None
        }
        Err(SecretLookupError::NoKey { present }) => {
            let has = if present.is_empty() {
                "no keys".to_string()
            } else {
                format!(
                    "only {}",
                    present
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let fix = if present.is_empty() {
                format!("add `{key}` to the Secret's data or stringData")
            } else {
                format!(
                    "rename the Secret's data key to `{key}` (BackendSecurityPolicy `{}` of type {} reads `{key}`)",
                    doc.meta.name, doc.spec.policy_type
                )
            };
            problems.push(Problem::new(
                &doc.file,
                w,
                field,
                format!(
                    "Secret `{ns}/{name}` has no `{key}` key ({has}); policy `{}` needs `{key}`",
                    doc.meta.name
                ),
                fix,
            ));
            None
        }
        Err(SecretLookupError::BadValue(why)) => {
            problems.push(Problem::new(
                &doc.file,
                w,
                field,
                format!("Secret `{ns}/{name}`: {why}"),
                "store the key as base64 in data, or as text in stringData".into(),
            ));
            None
        }
    }
}

/// An `AWSCredentials` policy with a credentials file; OIDC federation is validated and
/// served by a later issue (503 until then).
fn aws_credentials(
    res: &Resources,
    secrets_dir: Option<&Path>,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn Credential>> {
    let not_yet = || -> Option<Arc<dyn Credential>> {
        Some(Arc::new(auth::NotYetSupported {
            policy_type: "AWSCredentials with oidcExchangeToken".into(),
        }))
    };
    let (Some(aws), Some(file)) = (
        &doc.spec.aws_credentials,
        doc.spec
            .aws_credentials
            .as_ref()
            .and_then(|a| a.credentials_file.as_ref()),
    ) else {
        check_rotating_policy(res, secrets_dir, doc, w, problems);
        return not_yet();
    };
    let field = "spec.awsCredentials.credentialsFile.secretRef";
    let text = secret_text(
        res,
        secrets_dir,
        doc,
        w,
        field,
        &file.secret_ref,
        "credentials",
        problems,
    )?;
    match auth::aws_credentials::AwsCredentials::from_file(
        text.expose(),
        file.profile.as_deref(),
        &aws.region,
    ) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            problems.push(Problem::new(
                &doc.file,
                w,
                field,
                format!("the credentials file in Secret `{}` {e}", file.secret_ref.name),
                "store an AWS shared credentials file (aws_access_key_id, aws_secret_access_key under [profile]) in the Secret's `credentials`".into(),
            ));
            None
        }
    }
}

/// Validates the shape of the policy types whose credentials later issues serve.
fn check_rotating_policy(
    res: &Resources,
    secrets_dir: Option<&Path>,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    problems: &mut Vec<Problem>,
) {
    let spec = &doc.spec;
    let missing = |field: &str, fix: &str, problems: &mut Vec<Problem>| {
        problems.push(Problem::new(
            &doc.file,
            w,
            field,
            "missing".into(),
            fix.into(),
        ));
    };
    match spec.policy_type.as_str() {
        "AWSCredentials" => match &spec.aws_credentials {
            None => missing(
                "spec.awsCredentials",
                "type AWSCredentials needs `awsCredentials` with `region`",
                problems,
            ),
            Some(aws) => {
                if aws.credentials_file.is_none() && aws.oidc_exchange_token.is_none() {
                    missing(
                        "spec.awsCredentials.credentialsFile",
                        "set `credentialsFile.secretRef` (or `oidcExchangeToken`)",
                        problems,
                    );
                }
                if let Some(file) = &aws.credentials_file {
                    secret_key(
                        res,
                        secrets_dir,
                        doc,
                        w,
                        "spec.awsCredentials.credentialsFile.secretRef",
                        &file.secret_ref,
                        "credentials",
                        problems,
                    );
                }
            }
        },
        "AzureCredentials" => match &spec.azure_credentials {
            None => missing(
                "spec.azureCredentials",
                "type AzureCredentials needs `azureCredentials` with clientID and tenantID",
                problems,
            ),
            Some(az) => {
                if let Some(r) = &az.client_secret_ref {
                    secret_key(
                        res,
                        secrets_dir,
                        doc,
                        w,
                        "spec.azureCredentials.clientSecretRef",
                        r,
                        "client-secret",
                        problems,
                    );
                } else if az.oidc_exchange_token.is_none() {
                    missing(
                        "spec.azureCredentials.clientSecretRef",
                        "set `clientSecretRef` (or `oidcExchangeToken`)",
                        problems,
                    );
                }
            }
        },
        _ => {}
    }
}

/// The `GCPCredentials` credential: a service account key file from
/// `credentialsFile.secretRef` (key `service_account.json`). Workload identity
/// federation is validated but not served yet (its attempts answer 503).
fn gcp_credentials(
    res: &Resources,
    secrets_dir: Option<&Path>,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn Credential>> {
    let problem = |field: &str, message: String, fix: &str, problems: &mut Vec<Problem>| {
        problems.push(Problem::new(&doc.file, w, field, message, fix.into()));
    };
    let Some(gcp) = &doc.spec.gcp_credentials else {
        problem(
            "spec.gcpCredentials",
            "missing".into(),
            "type GCPCredentials needs `gcpCredentials` with projectName, region and credentialsFile",
            problems,
        );
        return None;
    };
    let mut valid = true;
    for (field, value) in [("projectName", &gcp.project_name), ("region", &gcp.region)] {
        let path_safe = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !path_safe {
            valid = false;
            problem(
                &format!("spec.gcpCredentials.{field}"),
                format!("{value:?} is not a GCP {field}"),
                "use the project ID and the region (e.g. us-central1, or global) as Google writes them",
                problems,
            );
        }
    }
    let file = match (
        &gcp.credentials_file,
        &gcp.workload_identity_federation_config,
    ) {
        (Some(_), Some(_)) => {
            problem(
                "spec.gcpCredentials",
                "sets both credentialsFile and workloadIdentityFederationConfig".into(),
                "keep one of them",
                problems,
            );
            return None;
        }
        (None, Some(_)) => {
            return valid.then(|| {
                Arc::new(auth::NotYetSupported {
                    policy_type: "GCPCredentials (workload identity federation)".into(),
                }) as Arc<dyn Credential>
            })
        }
        (None, None) => {
            problem(
                "spec.gcpCredentials.credentialsFile",
                "missing".into(),
                "set `credentialsFile.secretRef` naming the Secret with the service account key in `service_account.json`",
                problems,
            );
            return None;
        }
        (Some(file), None) => file,
    };
    const KEY: &str = "service_account.json";
    let field = "spec.gcpCredentials.credentialsFile.secretRef";
    let text = secret_text(
        res,
        secrets_dir,
        doc,
        w,
        field,
        &file.secret_ref,
        KEY,
        problems,
    )?;
    let secret = format!(
        "{}/{}",
        file.secret_ref
            .namespace
            .as_deref()
            .unwrap_or(doc.namespace()),
        file.secret_ref.name
    );
    let key = match auth::google_token::ServiceAccountKey::parse(&text) {
        Ok(key) => key,
        Err(why) => {
            problem(
                field,
                format!("Secret `{secret}`: `{KEY}` {why}"),
                "store the service account key file downloaded from Google Cloud (IAM > Service accounts > Keys) under `service_account.json`",
                problems,
            );
            return None;
        }
    };
    let exchange = match auth::google_token::TokenExchange::new(key) {
        Ok(exchange) => exchange,
        Err(why) => {
            problem(field, why.to_string(), "report this as a bug", problems);
            return None;
        }
    };
    valid.then(|| {
        Arc::new(auth::gcp_credentials::GcpCredentials::new(
            exchange,
            &gcp.project_name,
            &gcp.region,
        )) as Arc<dyn Credential>
    })
}
