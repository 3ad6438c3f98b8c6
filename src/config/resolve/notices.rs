//! Fields the gateway reads but does not act on standalone, named rather than silently
//! dropped.

use super::super::load::Resources;
use super::super::problem::Problem;
use super::what;

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
                "spec.hostnames",
                spec.hostnames.is_some(),
                "every host name is served",
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
