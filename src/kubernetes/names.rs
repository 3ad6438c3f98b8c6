//! The names Envoy Gateway v1.9 gives the xDS resources it generates, which the
//! EnvoyPatchPolicy addresses. Each is quoted from envoyproxy/gateway at v1.9.0, with
//! the `XDSNameSchemeV2` runtime flag off (its default; with it on, listeners are named
//! `tcp-<port>` and would not be found).

/// The Cluster (and, for IP endpoints, ClusterLoadAssignment) of an HTTPRoute rule:
/// `irRouteDestinationName` in internal/gatewayapi/helpers.go.
pub fn route_cluster(namespace: &str, route: &str, rule: usize) -> String {
    format!("httproute/{namespace}/{route}/rule/{rule}")
}

/// The locality (`locality.region`) holding the endpoints of one backendRef of a rule:
/// `irDestinationSettingName` (helpers.go), which `buildWeightedLocalities`
/// (internal/xds/translator/cluster.go) writes as the region.
pub fn backend_locality(cluster: &str, backend_ref: usize) -> String {
    format!("{cluster}/backend/{backend_ref}")
}

/// The xDS Listener and RouteConfiguration of a Gateway listener: the IR listener name
/// `<namespace>/<gateway>/<listener>` (`xdsListenerName` and `routeConfigName` in
/// internal/xds/translator/listener.go).
pub fn listener(gateway_namespace: &str, gateway: &str, listener: &str) -> String {
    format!("{gateway_namespace}/{gateway}/{listener}")
}

/// The HCM filter of an EnvoyExtensionPolicy's first extProc:
/// `perRouteFilterName(EnvoyFilterExtProc, irConfigNameForExtProc(policy, 0))`
/// (internal/xds/translator/extproc.go, internal/gatewayapi/envoyextensionpolicy.go).
/// Envoy Gateway adds it `disabled: true` and enables it on each route of the target.
pub fn extproc_filter(policy_namespace: &str, policy: &str) -> String {
    format!(
        "envoy.filters.http.ext_proc/envoyextensionpolicy/{policy_namespace}/{policy}/extproc/0"
    )
}

/// The cluster of that extProc's backendRefs: `irIndexedExtServiceDestinationName`
/// (internal/gatewayapi/ext_service.go), lower case.
pub fn extproc_cluster(policy_namespace: &str, policy: &str) -> String {
    format!("envoyextensionpolicy/{policy_namespace}/{policy}/extproc/0").to_lowercase()
}

/// The `:authority` Envoy Gateway sends to an extProc backendRef without a port:
/// `<name>.<namespace>` (`buildExtProc`, internal/gatewayapi/envoyextensionpolicy.go).
pub fn extproc_authority(namespace: &str, backend: &str) -> String {
    format!("{backend}.{namespace}")
}

/// The HTTP router filter, last in every HCM.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_envoy_gateway_v1_9() {
        // As in internal/gatewayapi/testdata/envoyextensionpolicy-with-extproc-*.out.yaml
        // and internal/xds/translator/testdata/out/xds-ir/ext-proc.listeners.yaml.
        assert_eq!(
            extproc_cluster("default", "policy-for-http-route"),
            "envoyextensionpolicy/default/policy-for-http-route/extproc/0"
        );
        assert_eq!(
            extproc_filter("envoy-gateway", "policy-for-gateway-1"),
            "envoy.filters.http.ext_proc/envoyextensionpolicy/envoy-gateway/policy-for-gateway-1/extproc/0"
        );
        let cluster = route_cluster("default", "httproute-1", 0);
        assert_eq!(cluster, "httproute/default/httproute-1/rule/0");
        assert_eq!(
            backend_locality(&cluster, 1),
            "httproute/default/httproute-1/rule/0/backend/1"
        );
        assert_eq!(
            listener("envoy-gateway", "gateway-1", "http"),
            "envoy-gateway/gateway-1/http"
        );
    }
}
