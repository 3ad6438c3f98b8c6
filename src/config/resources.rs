//! The user-facing resource kinds, as serde types.
//!
//! These mirror the CRD schemas of Envoy AI Gateway (`AIGatewayRoute`, `AIServiceBackend`,
//! `BackendSecurityPolicy`), Envoy Gateway (`Backend`) and Kubernetes (`Secret`). Every struct
//! denies unknown fields so that a misspelt field is an error with a suggestion, not a silently
//! ignored setting. Kubernetes-only fields (`parentRefs`, `status`, …) are accepted and ignored.

// Fields that exist only so that the full schema is accepted (and misspellings caught)
// are never read; that is intended.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `metadata` of any object. Only `name` and `namespace` matter here.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub _other: BTreeMap<String, Value>,
}

/// A reference to another object by name (and optionally namespace).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

// ---------------------------------------------------------------- AIGatewayRoute

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AIGatewayRouteSpec {
    #[serde(default)]
    pub rules: Vec<RouteRule>,
    #[serde(default)]
    pub llm_request_costs: Vec<LlmRequestCost>,
    #[serde(default)]
    pub parent_refs: Option<Value>,
    #[serde(default)]
    pub hostnames: Option<Value>,
    /// Deprecated in the CRD, accepted for old manifests.
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub target_refs: Option<Value>,
    #[serde(default)]
    pub filter_config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    #[serde(default)]
    pub backend_refs: Vec<RouteBackendRef>,
    #[serde(default)]
    pub timeouts: Option<RouteTimeouts>,
    #[serde(default)]
    pub models_owned_by: Option<String>,
    #[serde(default)]
    pub models_created_at: Option<String>,
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
    #[serde(default, rename = "type")]
    pub match_type: HeaderMatchType,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum HeaderMatchType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteBackendRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub model_name_override: Option<String>,
    #[serde(default)]
    pub header_mutation: Option<HeaderMutation>,
    #[serde(default)]
    pub body_mutation: Option<BodyMutation>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMutation {
    #[serde(default)]
    pub set: Vec<HeaderValue>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Top-level JSON fields of the provider request body to set or remove.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyMutation {
    #[serde(default)]
    pub set: Vec<BodyField>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyField {
    pub path: String,
    /// JSON text, e.g. `"\"scale\""` or `0.2`.
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTimeouts {
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub backend_request: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmRequestCost {
    pub metadata_key: String,
    #[serde(rename = "type")]
    pub cost_type: String,
    #[serde(default)]
    pub cel: Option<String>,
}

// ---------------------------------------------------------------- AIServiceBackend

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AIServiceBackendSpec {
    pub schema: SchemaSpec,
    pub backend_ref: ObjectRef,
    #[serde(default)]
    pub header_mutation: Option<HeaderMutation>,
    #[serde(default)]
    pub body_mutation: Option<BodyMutation>,
    /// Deprecated in the CRD: the policy now points at the backend with `targetRefs`.
    #[serde(default)]
    pub backend_security_policy_ref: Option<ObjectRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemaSpec {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
}

// ---------------------------------------------------------------- BackendSecurityPolicy

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSecurityPolicySpec {
    #[serde(rename = "type")]
    pub policy_type: String,
    #[serde(default)]
    pub target_refs: Vec<ObjectRef>,
    #[serde(default, rename = "apiKey")]
    pub api_key: Option<SecretRefHolder>,
    #[serde(default, rename = "azureAPIKey")]
    pub azure_api_key: Option<SecretRefHolder>,
    #[serde(default, rename = "anthropicAPIKey")]
    pub anthropic_api_key: Option<SecretRefHolder>,
    #[serde(default)]
    pub aws_credentials: Option<AwsCredentials>,
    #[serde(default)]
    pub azure_credentials: Option<AzureCredentials>,
    #[serde(default)]
    pub gcp_credentials: Option<GcpCredentials>,
    #[serde(default)]
    pub credential_override: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRefHolder {
    pub secret_ref: ObjectRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentials {
    pub region: String,
    #[serde(default)]
    pub credentials_file: Option<AwsCredentialsFile>,
    /// OIDC exchange settings, read by `auth::oidc` (which refuses the fields it does not use).
    #[serde(default)]
    pub oidc_exchange_token: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentialsFile {
    pub secret_ref: ObjectRef,
    #[serde(default)]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureCredentials {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    #[serde(default)]
    pub client_secret_ref: Option<ObjectRef>,
    #[serde(default)]
    pub oidc_exchange_token: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpCredentials {
    pub project_name: String,
    pub region: String,
    #[serde(default)]
    pub credentials_file: Option<SecretRefHolder>,
    #[serde(default)]
    pub workload_identity_federation_config: Option<Value>,
}

// ---------------------------------------------------------------- Backend (Envoy Gateway)

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSpec {
    #[serde(default)]
    pub endpoints: Vec<BackendEndpoint>,
    #[serde(default)]
    pub tls: Option<BackendTls>,
    #[serde(default, rename = "type")]
    pub backend_type: Option<String>,
    #[serde(default)]
    pub app_protocols: Option<Value>,
    #[serde(default)]
    pub fallback: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendEndpoint {
    #[serde(default)]
    pub fqdn: Option<HostPort>,
    #[serde(default)]
    pub ip: Option<IpPort>,
    #[serde(default)]
    pub unix: Option<Value>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPort {
    pub hostname: String,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPort {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTls {
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default)]
    pub well_known_ca_certificates: Option<String>,
    #[serde(default, rename = "autoSNIFromEndpointHostname")]
    pub auto_sni_from_endpoint_hostname: Option<bool>,
    #[serde(default)]
    pub alpn_protocols: Option<Value>,
    #[serde(default)]
    pub ca_certificate_refs: Option<Value>,
    #[serde(default)]
    pub client_certificate_ref: Option<Value>,
    #[serde(default)]
    pub ciphers: Option<Value>,
    #[serde(default)]
    pub ecdh_curves: Option<Value>,
    #[serde(default)]
    pub fingerprints: Option<Value>,
    #[serde(default)]
    pub max_version: Option<String>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub signature_algorithms: Option<Value>,
}

// ---------------------------------------------------------------- Secret

/// A Kubernetes Secret: `data` is base64, `stringData` is plain text.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretBody {
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, rename = "type")]
    pub secret_type: Option<String>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

// ---------------------------------------------------------------- QuotaPolicy

/// `QuotaPolicy` (aigateway.envoyproxy.io/v1alpha1): token budgets for AIServiceBackends.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<ObjectRef>,
    #[serde(default)]
    pub per_model_quotas: Vec<PerModelQuota>,
    #[serde(default)]
    pub service_quota: Option<ServiceQuota>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerModelQuota {
    pub model_name: String,
    pub quota: ModelQuota,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelQuota {
    #[serde(default)]
    pub cost_expression: Option<String>,
    #[serde(default)]
    pub default_bucket: Option<QuotaValue>,
    #[serde(default)]
    pub bucket_rules: Vec<BucketRule>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceQuota {
    #[serde(default)]
    pub cost_expression: Option<String>,
    pub quota: QuotaValue,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaValue {
    pub duration: String,
    pub limit: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketRule {
    #[serde(default)]
    pub client_selectors: Vec<ClientSelector>,
    pub quota: QuotaValue,
    #[serde(default)]
    pub shadow_mode: bool,
}

/// Envoy Gateway's `RateLimitSelectCondition`; only `headers` are served (as the CRD
/// says of QuotaPolicy), the rest is refused by name at load.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientSelector {
    #[serde(default)]
    pub headers: Vec<SelectorHeader>,
    #[serde(default)]
    pub methods: Option<Value>,
    #[serde(default)]
    pub path: Option<Value>,
    #[serde(default, rename = "sourceCIDR")]
    pub source_cidr: Option<Value>,
    #[serde(default)]
    pub query_params: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorHeader {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default, rename = "type")]
    pub match_type: SelectorMatchType,
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum SelectorMatchType {
    #[default]
    Exact,
    RegularExpression,
    Distinct,
}
