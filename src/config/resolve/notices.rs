//! Fields the gateway reads but does not act on standalone, named rather than silently
//! dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::super::load::Resources;
use super::super::model::Backend;
use super::super::problem::Problem;
use super::{full_name, what};

/// AIServiceBackends whose schema or credential this build reads but does not serve:
/// they answer 503 naming it; `check`, `serve` and `run` name them at start.
pub(super) fn unserved_backends(
    res: &Resources,
    backends: &BTreeMap<String, Arc<Backend>>,
    notices: &mut Vec<Problem>,
) {
    for doc in &res.backends {
        let Some(backend) = backends.get(&full_name(&doc.meta.name, doc.namespace())) else {
            continue;
        };
        let mut unserved = Vec::new();
        if let Some(schema) = backend.schema.not_served() {
            unserved.push(("spec.schema.name", format!("schema `{schema}`")));
        }
        if let Some(policy) = backend.credential.not_served() {
            unserved.push(("BackendSecurityPolicy", format!("credential {policy}")));
        }
        for (field, what_) in unserved {
            notices.push(Problem::new(
                &doc.file,
                &what("AIServiceBackend", doc),
                field,
                format!("{what_} is read but not served by this build: requests to this backend get 503"),
                "use a served schema or credential type (see the README's provider table)".into(),
            ));
        }
    }
}

/// AIGatewayRoute fields that only a Kubernetes install acts on.
pub(super) fn route_fields(res: &Resources, notices: &mut Vec<Problem>) {
    for doc in &res.routes {
        let spec = &doc.spec;
        let fields = [
            (
                "spec.parentRefs",
                spec.parent_refs.is_some(),
                "the Gateway attachment",
            ),
            (
                "spec.targetRefs",
                spec.target_refs.is_some(),
                "the Gateway attachment",
            ),
            (
                "spec.filterConfig",
                spec.filter_config.is_some(),
                "the sidecar's own settings apply",
            ),
            (
                "spec.schema",
                spec.schema.is_some(),
                "deprecated: each AIServiceBackend's schema applies",
            ),
        ];
        for (field, set, why) in fields {
            if set {
                notices.push(Problem::new(
                    &doc.file,
                    &what("AIGatewayRoute", doc),
                    field,
                    format!("is read but not enforced ({why})"),
                    "remove it, or rely on it only under Envoy Gateway".into(),
                ));
            }
        }
    }
}
