//! Resolves resource documents into the runtime [`GatewayConfig`], checking every
//! reference. Each problem names the resource, the field and the fix; nothing that is
//! wrong is silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::load::{Document, Resources};
use super::model::*;
use super::problem::{did_you_mean, Problem};
use super::resources::{self, BackendSecurityPolicySpec};
use super::secrets::{self, SecretLookupError, SecretValue};
use crate::api::request::validate_model;
use crate::auth::{self, Credential};
use crate::schema;

/// Default route timeout, as in Envoy AI Gateway.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn resolve(res: &Resources, secrets_dir: Option<&Path>) -> Result<GatewayConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    check_duplicates(res, &mut problems);
    let credentials = resolve_policies(res, secrets_dir, &mut problems);
    let backends = resolve_backends(res, &credentials, &mut problems);
    let mut config = GatewayConfig {
        backends: backends.clone(),
        ..Default::default()
    };
    for doc in &res.routes {
        resolve_route(doc, &backends, &mut config, &mut problems);
    }
    mark_router_resolved(&mut config);
    name_clusters(&mut config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Finds the rules whose selection depends on the model alone (Envoy's route order: the
/// first rule whose conditions all hold wins). Such a rule with one backend can be served
/// from the router level. A rule that also looks at other client headers, or at the model
/// through a regular expression, leaves the choice to Envoy for every model it might take.
fn mark_router_resolved(config: &mut GatewayConfig) {
    let mut decided: BTreeMap<String, Option<(usize, usize)>> = BTreeMap::new();
    let mut open_ended = false; // a rule earlier in order may take any model
    for (ri, route) in config.routes.iter().enumerate() {
        for (ui, rule) in route.rules.iter().enumerate() {
            for conds in &rule.matches {
                let exact_model = conds
                    .iter()
                    .find(|c| c.name == MODEL_HEADER && !c.regex)
                    .map(|c| c.value.clone());
                let model_only = conds.len() == 1 && exact_model.is_some();
                match exact_model {
                    Some(model) if !open_ended => {
                        // The first rule to mention a model decides it, if the model alone decides.
                        decided
                            .entry(model)
                            .or_insert(model_only.then_some((ri, ui)));
                    }
                    Some(_) => {}
                    None => open_ended = true,
                }
            }
        }
    }
    let mut targets = BTreeMap::new();
    for (ri, route) in config.routes.iter_mut().enumerate() {
        for (ui, rule) in route.rules.iter_mut().enumerate() {
            let mut models = rule.matches.iter().map(|conds| match conds.as_slice() {
                [c] if c.name == MODEL_HEADER && !c.regex => Some(c.value.as_str()),
                _ => None,
            });
            let all_decided =
                models.all(|m| m.is_some_and(|m| decided.get(m) == Some(&Some((ri, ui)))));
            rule.router_resolved = all_decided && rule.backend_refs.len() == 1;
            if rule.router_resolved {
                for conds in &rule.matches {
                    if let (Some(c), Some(r)) = (conds.first(), rule.backend_refs.first()) {
                        targets.insert(c.value.clone(), r.ref_key.clone());
                    }
                }
            }
        }
    }
    config.router_targets = targets;
}

/// Names each rule's cluster after what it contains (backends, endpoints, TLS, whether it
/// has the upstream filter). When a reload changes a rule, its cluster gets a new name:
/// Envoy keeps serving a changed cluster's old version until the new one has warmed up
/// (DNS included) while new routes apply at once, so with a reused name a new route could
/// send a new backend's credential to an old backend's host. A new name makes that window
/// answer 503 instead.
fn name_clusters(config: &mut GatewayConfig) {
    use std::hash::{Hash, Hasher};
    for route in &mut config.routes {
        for rule in &mut route.rules {
            let mut hasher = std::hash::DefaultHasher::new();
            rule.router_resolved.hash(&mut hasher);
            for r in &rule.backend_refs {
                (&r.ref_key, &r.backend.name, r.priority, r.weight).hash(&mut hasher);
                for e in &r.backend.endpoints {
                    (&e.host, e.port).hash(&mut hasher);
                }
                if let Some(tls) = &r.backend.tls {
                    (&tls.sni, tls.insecure_skip_verify).hash(&mut hasher);
                }
            }
            rule.cluster = format!("{}/{:016x}", rule.cluster, hasher.finish());
        }
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

fn what<T>(kind: &str, doc: &Document<T>) -> String {
    format!("{kind} {}/{}", doc.namespace(), doc.meta.name)
}

fn check_duplicates(res: &Resources, problems: &mut Vec<Problem>) {
    fn check<T>(kind: &str, docs: &[Document<T>], problems: &mut Vec<Problem>) {
        let mut seen = BTreeSet::new();
        for d in docs {
            if !seen.insert((d.namespace().to_string(), d.meta.name.clone())) {
                problems.push(Problem::new(
                    &d.file,
                    &what(kind, d),
                    "metadata.name",
                    "defined more than once".into(),
                    "give each resource of a kind a unique name in its namespace".into(),
                ));
            }
        }
    }
    check("AIGatewayRoute", &res.routes, problems);
    check("AIServiceBackend", &res.backends, problems);
    check("BackendSecurityPolicy", &res.policies, problems);
    check("Backend", &res.envoy_backends, problems);
    check("Secret", &res.secrets, problems);
}

// ------------------------------------------------------------------ policies

/// The credential of each AIServiceBackend (by full name) that a policy targets.
fn resolve_policies(
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

// ------------------------------------------------------------------ backends

fn resolve_backends(
    res: &Resources,
    credentials: &BTreeMap<String, Arc<dyn Credential>>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Backend>> {
    let schema_names: Vec<&str> = schema::REGISTRY.iter().map(|(n, _)| *n).collect();
    let eg_names: Vec<&str> = res
        .envoy_backends
        .iter()
        .map(|b| b.meta.name.as_str())
        .collect();
    let mut out = BTreeMap::new();
    for doc in &res.backends {
        let w = what("AIServiceBackend", doc);
        let ns = doc.namespace();
        let schema = match schema::build(&doc.spec.schema) {
            Ok(s) => Some(s),
            Err(why) => {
                let fix = if schema_names.contains(&doc.spec.schema.name.as_str()) {
                    why.clone()
                } else {
                    did_you_mean(&doc.spec.schema.name, schema_names.iter().copied())
                        .unwrap_or_else(|| format!("use one of {}", schema_names.join(", ")))
                };
                let field = if schema_names.contains(&doc.spec.schema.name.as_str()) {
                    "spec.schema.version"
                } else {
                    "spec.schema.name"
                };
                problems.push(Problem::new(&doc.file, &w, field, why, fix));
                None
            }
        };
        let bref = &doc.spec.backend_ref;
        if let Some(kind) = bref.kind.as_deref().filter(|k| *k != "Backend") {
            problems.push(Problem::new(
                &doc.file,
                &w,
                "spec.backendRef.kind",
                format!("kind `{kind}` is not supported standalone"),
                "point backendRef at an Envoy Gateway `Backend`".into(),
            ));
            continue;
        }
        let bns = bref.namespace.as_deref().unwrap_or(ns);
        let Some(eg) = res
            .envoy_backends
            .iter()
            .find(|b| b.meta.name == bref.name && b.namespace() == bns)
        else {
            let fix = did_you_mean(&bref.name, eg_names.iter().copied()).unwrap_or_else(|| {
                format!("define a Backend named `{}` with its endpoints", bref.name)
            });
            problems.push(Problem::new(
                &doc.file,
                &w,
                "spec.backendRef.name",
                format!("Backend `{bns}/{}` does not exist", bref.name),
                fix,
            ));
            continue;
        };
        let Some((endpoints, tls)) = backend_endpoints(eg, res, problems) else {
            continue;
        };
        let Some(schema) = schema else { continue };
        let name = full_name(&doc.meta.name, ns);
        let credential = credentials
            .get(&name)
            .cloned()
            .unwrap_or_else(|| Arc::new(auth::NoCredential));
        let header_mutation = header_edits(
            doc.spec.header_mutation.as_ref(),
            &doc.file,
            &w,
            "spec.headerMutation",
            problems,
        );
        out.insert(
            name.clone(),
            Arc::new(Backend {
                name,
                schema,
                endpoints,
                tls,
                credential,
                header_mutation,
            }),
        );
    }
    out
}

fn backend_endpoints(
    doc: &Document<resources::BackendSpec>,
    res: &Resources,
    problems: &mut Vec<Problem>,
) -> Option<(Vec<Endpoint>, Option<TlsSettings>)> {
    let w = what("Backend", doc);
    let mut endpoints = Vec::new();
    for (i, e) in doc.spec.endpoints.iter().enumerate() {
        let endpoint = match (&e.fqdn, &e.ip) {
            (Some(f), None) => Endpoint {
                host: f.hostname.clone(),
                port: f.port,
            },
            (None, Some(ip)) => Endpoint {
                host: ip.address.clone(),
                port: ip.port,
            },
            _ => {
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("spec.endpoints[{i}]"),
                    "needs exactly one of `fqdn` or `ip`".into(),
                    "write `fqdn: {hostname, port}` or `ip: {address, port}`".into(),
                ));
                return None;
            }
        };
        if endpoint.host.is_empty()
            || !endpoint
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_[]".contains(&b))
        {
            problems.push(Problem::new(
                &doc.file,
                &w,
                &format!("spec.endpoints[{i}]"),
                format!("`{}` is not a host name or IP address", endpoint.host),
                "fix the hostname".into(),
            ));
            return None;
        }
        endpoints.push(endpoint);
    }
    let Some(first) = endpoints.first() else {
        problems.push(Problem::new(
            &doc.file,
            &w,
            "spec.endpoints",
            "is empty".into(),
            "add an `fqdn` or `ip` endpoint".into(),
        ));
        return None;
    };
    // TLS when the Backend says so, when a BackendTLSPolicy targets it, or on port 443.
    let policy_sni = res
        .tls_policies
        .iter()
        .find(|(ns, name, _)| ns == doc.namespace() && *name == doc.meta.name)
        .map(|(_, _, host)| host.clone());
    let tls = match (&doc.spec.tls, policy_sni) {
        (Some(t), _) => Some(TlsSettings {
            sni: t.sni.clone().unwrap_or_else(|| first.host.clone()),
            insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
        }),
        (None, Some(host)) => Some(TlsSettings {
            sni: host.unwrap_or_else(|| first.host.clone()),
            insecure_skip_verify: false,
        }),
        (None, None) if first.port == 443 => Some(TlsSettings {
            sni: first.host.clone(),
            insecure_skip_verify: false,
        }),
        (None, None) => None,
    };
    Some((endpoints, tls))
}

/// `headerMutation`, checked: names must be HTTP tokens and values free of line breaks,
/// since they become request headers.
fn header_edits(
    m: Option<&resources::HeaderMutation>,
    file: &Path,
    what: &str,
    field: &str,
    problems: &mut Vec<Problem>,
) -> HeaderEdits {
    let Some(m) = m else {
        return HeaderEdits::default();
    };
    let token = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    for (i, h) in m.set.iter().enumerate() {
        if !token(&h.name) || h.value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            problems.push(Problem::new(
                file,
                what,
                &format!("{field}.set[{i}]"),
                format!(
                    "`{}` is not a valid header name and value",
                    h.name.escape_default()
                ),
                "use a plain header name (no `:` pseudo-headers) and a value without line breaks"
                    .into(),
            ));
        }
    }
    for (i, name) in m.remove.iter().enumerate() {
        if !token(name) {
            problems.push(Problem::new(
                file,
                what,
                &format!("{field}.remove[{i}]"),
                format!("`{}` is not a valid header name", name.escape_default()),
                "use a plain header name".into(),
            ));
        }
    }
    HeaderEdits {
        set: m
            .set
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}

// ------------------------------------------------------------------ routes

fn resolve_route(
    doc: &Document<resources::AIGatewayRouteSpec>,
    backends: &BTreeMap<String, Arc<Backend>>,
    config: &mut GatewayConfig,
    problems: &mut Vec<Problem>,
) {
    let w = what("AIGatewayRoute", doc);
    let ns = doc.namespace();
    let route_name = format!("{ns}/{}", doc.meta.name);
    let known_backends: Vec<&str> = backends
        .keys()
        .map(|k| k.split('.').next().unwrap_or(k))
        .collect();
    let mut rules = Vec::new();
    for (ri, rule) in doc.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let mut matches = Vec::new();
        for (mi, m) in rule.matches.iter().enumerate() {
            let mut conds = Vec::new();
            for (hi, h) in m.headers.iter().enumerate() {
                let field = format!("{at}.matches[{mi}].headers[{hi}]");
                let name = h.name.to_ascii_lowercase();
                let regex = h.match_type == resources::HeaderMatchType::RegularExpression;
                if name == MODEL_HEADER && !regex {
                    if let Err(e) = validate_model(&h.value) {
                        problems.push(Problem::new(
                            &doc.file,
                            &w,
                            &format!("{field}.value"),
                            e.to_string(),
                            "use the model name clients send".into(),
                        ));
                        continue;
                    }
                    let created = rule
                        .models_created_at
                        .as_deref()
                        .and_then(parse_rfc3339)
                        .unwrap_or(0);
                    let owned_by = rule
                        .models_owned_by
                        .clone()
                        .unwrap_or_else(|| "Envoy AI Gateway".into());
                    config
                        .models
                        .entry(h.value.clone())
                        .or_insert(ModelInfo { owned_by, created });
                }

                if h.value.bytes().any(|b| b.is_ascii_control()) {
                    problems.push(Problem::new(
                        &doc.file,
                        &w,
                        &format!("{field}.value"),
                        "contains control characters".into(),
                        "remove them".into(),
                    ));
                    continue;
                }
                conds.push(HeaderCondition {
                    name,
                    value: h.value.clone(),
                    regex,
                });
            }
            matches.push(conds);
        }
        if matches.is_empty() {
            // A rule without matches takes every request that reaches it.
            matches.push(Vec::new());
        }
        if matches
            .iter()
            .any(|conds| !conds.iter().any(|c| c.name == MODEL_HEADER && !c.regex))
        {
            config.routes_any_model = true;
        }
        if rule.backend_refs.is_empty() {
            problems.push(Problem::new(
                &doc.file,
                &w,
                &format!("{at}.backendRefs"),
                "is empty".into(),
                "add at least one AIServiceBackend reference".into(),
            ));
            continue;
        }
        let mut refs = Vec::new();
        let mut targets = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let field = format!("{at}.backendRefs[{bi}]");
            if let Some(kind) = b.kind.as_deref().filter(|k| *k != "AIServiceBackend") {
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("{field}.kind"),
                    format!("kind `{kind}` is not supported standalone"),
                    "reference an AIServiceBackend".into(),
                ));
                continue;
            }
            let bns = b.namespace.as_deref().unwrap_or(ns);
            let Some(backend) = backends.get(&full_name(&b.name, bns)) else {
                let fix = did_you_mean(&b.name, known_backends.iter().copied())
                    .unwrap_or_else(|| format!("define an AIServiceBackend named `{}`", b.name));
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("{field}.name"),
                    format!(
                        "AIServiceBackend `{bns}/{}` does not exist (or is invalid, see above)",
                        b.name
                    ),
                    fix,
                ));
                continue;
            };
            if let Some(o) = &b.model_name_override {
                if let Err(e) = validate_model(o) {
                    problems.push(Problem::new(
                        &doc.file,
                        &w,
                        &format!("{field}.modelNameOverride"),
                        e.to_string(),
                        "use the provider's model name".into(),
                    ));
                    continue;
                }
            }
            if b.weight == Some(0) {
                continue; // Gateway API: weight 0 takes no traffic
            }
            let ref_key = format!("{route_name}/rule/{ri}/ref/{bi}");
            let mut header_mutation = backend.header_mutation.clone();
            let own = header_edits(
                b.header_mutation.as_ref(),
                &doc.file,
                &w,
                &format!("{field}.headerMutation"),
                problems,
            );
            header_mutation.set.extend(own.set);
            header_mutation.remove.extend(own.remove);
            targets.push((
                ref_key.clone(),
                BackendRefTarget {
                    backend: backend.clone(),
                    model_name_override: b.model_name_override.clone(),
                    route: route_name.clone(),
                    header_mutation,
                },
            ));
            refs.push(RuleBackendRef {
                ref_key,
                backend: backend.clone(),
                priority: b.priority.unwrap_or(0),
                weight: b.weight.unwrap_or(1),
            });
        }
        if refs.is_empty() {
            problems.push(Problem::new(
                &doc.file,
                &w,
                &format!("{at}.backendRefs"),
                "no backend reference can take traffic (all are invalid or have weight 0)".into(),
                "give at least one backendRef a positive weight".into(),
            ));
            continue;
        }
        let timeouts = rule.timeouts.as_ref();
        let request_timeout = match timeouts
            .and_then(|t| t.request.as_deref())
            .map(parse_duration)
        {
            Some(Some(d)) => d,
            Some(None) => {
                problems.push(Problem::new(
                    &doc.file,
                    &w,
                    &format!("{at}.timeouts.request"),
                    "is not a duration".into(),
                    "write e.g. 60s, 5m or 500ms".into(),
                ));
                DEFAULT_REQUEST_TIMEOUT
            }
            None => DEFAULT_REQUEST_TIMEOUT,
        };
        let backend_request_timeout = match timeouts.and_then(|t| t.backend_request.as_deref()) {
            Some(text) => {
                let parsed = parse_duration(text);
                if parsed.is_none() {
                    problems.push(Problem::new(
                        &doc.file,
                        &w,
                        &format!("{at}.timeouts.backendRequest"),
                        "is not a duration".into(),
                        "write e.g. 30s, 2m or 500ms".into(),
                    ));
                }
                parsed
            }
            None => None,
        };
        let stream_idle_timeout = match rule.stream_idle_timeout.as_deref() {
            Some(text) => {
                let parsed = parse_duration(text);
                if parsed.is_none() {
                    problems.push(Problem::new(
                        &doc.file,
                        &w,
                        &format!("{at}.streamIdleTimeout"),
                        "is not a duration".into(),
                        "write e.g. 30s, 2m or 500ms".into(),
                    ));
                }
                parsed
            }
            None => None,
        };
        config.backend_refs.extend(targets);
        rules.push(Rule {
            cluster: format!("{route_name}/rule/{ri}"),
            matches,
            backend_refs: refs,
            request_timeout,
            request_timeout_set: timeouts.is_some_and(|t| t.request.is_some()),
            backend_request_timeout,
            stream_idle_timeout,
            router_resolved: false,
        });
    }
    let mut costs = Vec::new();
    for (ci, c) in doc.spec.llm_request_costs.iter().enumerate() {
        let kind = match c.cost_type.as_str() {
            "InputToken" => CostKind::Input,
            "CachedInputToken" => CostKind::CachedInput,
            "CacheCreationInputToken" => CostKind::CacheCreationInput,
            "OutputToken" => CostKind::Output,
            "TotalToken" => CostKind::Total,
            "ReasoningToken" => CostKind::Reasoning,
            other => {
                problems.push(Problem::new(&doc.file, &w, &format!("spec.llmRequestCosts[{ci}].type"),
                    format!("cost type `{other}` is not supported by this build"),
                    "use InputToken, CachedInputToken, CacheCreationInputToken, OutputToken, TotalToken or ReasoningToken".into()));
                continue;
            }
        };
        costs.push(RequestCost {
            metadata_key: c.metadata_key.clone(),
            kind,
        });
    }
    config.routes.push(Route {
        name: route_name,
        rules,
        costs,
    });
}

/// Parses a Gateway API duration: `1h`, `5m`, `30s`, `500ms`, or combinations (`1m30s`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        total += unit.checked_mul(u32::try_from(n).ok()?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// Seconds since the epoch of an RFC 3339 timestamp's date and time (UTC; offset ignored).
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.get(..8)?.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Provider-sent text: out-of-range fields are refused before any arithmetic.
    let in_range = (0..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=31).contains(&day)
        && (0..24).contains(&hh)
        && (0..60).contains(&mm)
        && (0..=60).contains(&ss);
    if !in_range {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let mut res = Resources::default();
        let mut problems = Vec::new();
        super::super::load::parse_text(yaml, Path::new("t.yaml"), &mut res, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        match resolve(&res, None) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    const BASE: &str = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: [{ip: {address: 127.0.0.1, port: 1}}]}\n---\n\
        apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\nspec: {schema: {name: OpenAI}, backendRef: {name: b}}\n---\n";

    fn policy(name: &str, secret: &str) -> String {
        format!("apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}}}\n\
                 spec: {{type: APIKey, targetRefs: [{{name: b}}], apiKey: {{secretRef: {{name: {secret}}}}}}}\n---\n")
    }

    #[test]
    fn a_secret_value_with_a_line_break_is_refused() {
        let p = problems(&format!("{BASE}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{apiKey: \"sk-1\\r\\nx-evil: 1\"}}\n", policy("p", "s")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("line break") && !p[0].contains("sk-1"),
            "{p:?}"
        );
    }

    #[test]
    fn an_aws_credentials_file_without_the_profile_is_named_without_its_keys() {
        let aws = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {name: p}\n\
                   spec: {type: AWSCredentials, targetRefs: [{name: b}], awsCredentials: {region: us-east-1, credentialsFile: {secretRef: {name: s}, profile: prod}}}\n---\n";
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {credentials: \"[default]\\naws_access_key_id = AKIDX\\naws_secret_access_key = SECRETX\\n\"}\n";
        let p = problems(&format!("{BASE}{aws}{secret}"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("has no `[prod]` profile"), "{p:?}");
        assert!(
            !p[0].contains("SECRETX") && !p[0].contains("AKIDX"),
            "{p:?}"
        );
        let ok = secret.replace("[default]", "[prod]");
        assert!(problems(&format!("{BASE}{aws}{ok}")).is_empty());
    }

    #[test]
    fn two_policies_for_one_backend_are_refused() {
        let p = problems(&format!("{BASE}{}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{apiKey: k}}\n", policy("p1", "s"), policy("p2", "s")));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("already authenticated by policy `p1`"),
            "{p:?}"
        );
    }

    #[test]
    fn weight_zero_refs_and_bad_header_mutations() {
        let route = |refs: &str, extra: &str| {
            format!("{BASE}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
            spec: {{rules: [{{matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}], backendRefs: [{refs}]{extra}}}]}}\n")
        };
        assert!(problems(&route("{name: b, weight: 0}, {name: b, priority: 1}", "")).is_empty());
        let p = problems(&route("{name: b, weight: 0}", ""));
        assert!(p[0].contains("weight 0"), "{p:?}");
        let p = problems(&route(
            "{name: b, headerMutation: {set: [{name: \":path\", value: /x}]}}",
            "",
        ));
        assert!(p[0].contains("not a valid header name"), "{p:?}");
        let p = problems(&route("{name: b}", ", timeouts: {backendRequest: soon}"));
        assert!(p[0].contains("timeouts.backendRequest"), "{p:?}");
    }

    fn cluster_names(yaml: &str) -> Vec<String> {
        let mut res = Resources::default();
        let mut problems = Vec::new();
        super::super::load::parse_text(yaml, Path::new("t.yaml"), &mut res, &mut problems);
        let config = resolve(&res, None).expect("resolves");
        config
            .routes
            .iter()
            .flat_map(|r| r.rules.iter().map(|rule| rule.cluster.clone()))
            .collect()
    }

    #[test]
    fn a_changed_rule_gets_a_new_cluster_name() {
        let route = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\n\
            spec: {rules: [{matches: [{headers: [{name: x-ai-eg-model, value: m}]}], backendRefs: [{name: b}]}]}\n";
        let before = cluster_names(&format!("{BASE}{route}"));
        assert_eq!(
            before,
            cluster_names(&format!("{BASE}{route}")),
            "stable for the same config"
        );
        let moved = BASE.replace("port: 1", "port: 2");
        let after = cluster_names(&format!("{moved}{route}"));
        assert_ne!(before, after);
        assert!(before[0].starts_with("default/r/rule/0/"));
    }

    fn gcp_policy(gcp: &str, secret: Option<&str>) -> String {
        let mut yaml = format!("{BASE}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: gp}}\n\
             spec: {{type: GCPCredentials, targetRefs: [{{name: b}}], gcpCredentials: {gcp}}}\n");
        if let Some(data) = secret {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: sa}}\nstringData: {{{data}}}\n"
            ));
        }
        yaml
    }

    const GCP: &str =
        "{projectName: my-project, region: us-central1, credentialsFile: {secretRef: {name: sa}}}";

    fn key_entry(text: &str) -> String {
        format!(
            "service_account.json: {}",
            serde_json::to_string(text).unwrap()
        )
    }

    #[test]
    fn gcp_service_account_key_is_checked() {
        let good =
            crate::auth::google_token::tests::key_file("https://oauth2.googleapis.com/token");
        assert!(problems(&gcp_policy(GCP, Some(&key_entry(&good)))).is_empty());

        let p = problems(&gcp_policy(GCP, Some("key.json: x")));
        assert!(
            p[0].contains("Secret `default/sa` has no `service_account.json` key"),
            "{p:?}"
        );
        let p = problems(&gcp_policy(GCP, Some(&key_entry("not json"))));
        assert!(
            p[0].contains("Secret `default/sa`: `service_account.json` is not JSON"),
            "{p:?}"
        );
        let mut missing: serde_json::Value = serde_json::from_str(&good).unwrap();
        missing.as_object_mut().unwrap().remove("token_uri");
        let p = problems(&gcp_policy(GCP, Some(&key_entry(&missing.to_string()))));
        assert!(p[0].contains("lacks `token_uri`"), "{p:?}");
        assert!(p.iter().all(|p| !p.contains("PRIVATE KEY")), "{p:?}");

        let p = problems(&gcp_policy(
            "{projectName: \"a/b\", region: us-central1, credentialsFile: {secretRef: {name: sa}}}",
            Some(&key_entry(&good)),
        ));
        assert!(p[0].contains("projectName"), "{p:?}");
        let p = problems(&gcp_policy("{projectName: p, region: r}", None));
        assert!(
            p[0].contains("credentialsFile") && p[0].contains("missing"),
            "{p:?}"
        );
        assert!(problems(&gcp_policy(
            "{projectName: p, region: r, workloadIdentityFederationConfig: {projectID: x}}",
            None
        ))
        .is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
    }
}
