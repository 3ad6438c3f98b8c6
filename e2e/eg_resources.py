"""Envoy Gateway resources written by hand, shaped per the v1.9 CRDs (../shared/crds) and the
issue's description of what `render gateway` emits: the simulator's own test input, which keeps
its end-to-end tests running whatever `render gateway` does (or whether the binary has it).

`gateway_resources` takes the models as the AI configuration routes them: one HTTPRoute per
AIGatewayRoute, one rule per model, one backendRef per provider (priority 1 as a fallback
Backend). A rule of one backend is decided at the router level (the sidecar builds the
provider request there and names the backend in `x-llm-extproc-backend`, which the route
requires); a rule of several gets the upstream-level ext_proc and the endpoint metadata by
EnvoyPatchPolicy, as the issue describes.
"""

import yaml

GATEWAY_NS = "maas-system"
GATEWAY = "envoy-ai-gateway-basic"
EXTPROC_POLICY = "llm-extproc"
# Envoy Gateway's names for what the patch refers to (see eg_xds.py).
LISTENER = f"{GATEWAY_NS}/{GATEWAY}/http"
EXTPROC_CLUSTER = f"envoyextensionpolicy/{GATEWAY_NS}/{EXTPROC_POLICY}/extproc/0"
ROUTER_FILTER = f"envoy.filters.http.ext_proc/{EXTPROC_CLUSTER}"
EXTPROC_AUTHORITY = f"llm-extproc.{GATEWAY_NS}"  # envoyextensionpolicy.go: "<backend>.<namespace>"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


def _backend(name, endpoint, fallback=False):
    spec = {"endpoints": [endpoint]}
    if fallback:
        spec["fallback"] = True
    return {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def _upstream_filters():
    """The upstream-level filters of `llm-extproc run`'s clusters (src/envoy/resources.rs)."""
    return [
        {"name": "envoy.filters.http.ext_proc", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            # Envoy's default :authority is the cluster name, whose "/" the sidecar's HTTP/2
            # server refuses (PROTOCOL_ERROR): the authority Envoy Gateway gives the router level.
            "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER, "authority": EXTPROC_AUTHORITY}, "timeout": "30s",
                             "initial_metadata": [{"key": "x-llm-extproc-placement", "value": "upstream"}]},
            "message_timeout": "10s",
            "processing_mode": {"request_header_mode": "SEND", "request_body_mode": "NONE", "request_trailer_mode": "SKIP",
                                "response_header_mode": "SKIP", "response_body_mode": "NONE", "response_trailer_mode": "SKIP"},
            "request_attributes": [
                "xds.upstream_host_metadata.filter_metadata['aigateway.envoy.io']['per_route_rule_backend_name']",
                "xds.upstream_host_metadata.filter_metadata['aigateway.envoy.io']['backend_name']"],
            "metadata_options": {"receiving_namespaces": {"untyped": ["io.envoy.ai_gateway"]},
                                 "forwarding_namespaces": {"untyped": ["io.envoy.ai_gateway"]}}}},
        {"name": "envoy.filters.http.header_mutation", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"append": {
                "header": {"key": "content-length", "value": "%DYNAMIC_METADATA(io.envoy.ai_gateway:content_length)%"},
                "append_action": "ADD_IF_ABSENT"}}]}}},
        {"name": "envoy.filters.http.upstream_codec", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}},
    ]


def gateway_resources(route, rules, socket_path, buffer_limit="34Mi"):
    """`route`: the AIGatewayRoute's name (namespace default). `rules`: [(model, [(backend, endpoint, priority, host)])]
    where endpoint is a Backend endpoint ({"fqdn": …} or {"ip": …}) and host the provider's Host."""
    docs = [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "envoy-gateway"},
         "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": GATEWAY, "namespace": GATEWAY_NS},
         "spec": {"gatewayClassName": "envoy-gateway", "listeners": [
             {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        _backend("llm-extproc", {"unix": {"path": str(socket_path)}}) | {"metadata": {"name": "llm-extproc", "namespace": GATEWAY_NS}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy",
         "metadata": {"name": EXTPROC_POLICY, "namespace": GATEWAY_NS},
         "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}],
                  "extProc": [{"backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "llm-extproc"}],
                               "failOpen": False, "messageTimeout": "10s",
                               "processingMode": {"request": {"body": "FullDuplexStreamed"}, "response": {"body": "Streamed"}},
                               "metadata": {"writableNamespaces": ["io.envoy.ai_gateway"]}}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "BackendTrafficPolicy",
         "metadata": {"name": "llm-retries", "namespace": GATEWAY_NS},
         "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}],
                  "retry": {"numRetries": 1, "numAttemptsPerPriority": 1,
                            "retryOn": {"triggers": ["connect-failure", "reset", "5xx"]}}}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "ClientTrafficPolicy",
         "metadata": {"name": "llm-buffer", "namespace": GATEWAY_NS},
         "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}],
                  "connection": {"bufferLimit": buffer_limit}}},
        # Models no rule takes: the sidecar answers them itself, this is the net under it. It is
        # also the route a request matches before the sidecar set x-ai-eg-model, so the
        # router-level ext_proc (enabled per route by Envoy Gateway) runs on it.
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "llm-unknown-model", "namespace": GATEWAY_NS},
         "spec": {"parentRefs": [{"name": GATEWAY, "sectionName": "http"}],
                  "rules": [{"filters": [{"type": "ExtensionRef", "extensionRef": {
                      "group": "gateway.envoyproxy.io", "kind": "HTTPRouteFilter", "name": "llm-unknown-model"}}]}]}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "HTTPRouteFilter",
         "metadata": {"name": "llm-unknown-model", "namespace": GATEWAY_NS},
         "spec": {"directResponse": {"statusCode": 404, "contentType": "application/json", "body": {
             "type": "Inline", "inline": '{"error":{"message":"model not served","type":"invalid_request_error","code":"model_not_found"}}'}}}},
        {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "HTTPRouteFilter",
         "metadata": {"name": "llm-host-from-backend", "namespace": "default"},
         "spec": {"urlRewrite": {"hostname": {"type": "Backend"}}}},
    ]
    http_rules, patches, backends = [], [
        {"type": LISTENER_TYPE, "name": LISTENER, "operation": {
            "op": "add",
            "jsonPath": f"$.default_filter_chain.filters[0].typed_config.http_filters[?(@.name=='{ROUTER_FILTER}')].typed_config",
            "path": "/send_body_without_waiting_for_header_response", "value": True}},
        # The router-level replaced body loses its content-length: restored right after the filter.
        {"type": LISTENER_TYPE, "name": LISTENER, "operation": {
            "op": "add", "path": "/default_filter_chain/filters/0/typed_config/http_filters/1", "value": {
                "name": "envoy.filters.http.header_mutation", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                    "mutations": {"request_mutations": [{"append": {
                        "header": {"key": "content-length", "value": "%DYNAMIC_METADATA(io.envoy.ai_gateway:request_content_length)%"},
                        "append_action": "ADD_IF_ABSENT"}}]}}}}},
    ], {}
    for ri, (model, refs) in enumerate(rules):
        headers = [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]
        rule = {"matches": [{"headers": headers}], "timeouts": {"request": "60s"},
                "filters": [{"type": "RequestHeaderModifier",
                             "requestHeaderModifier": {"remove": ["x-llm-extproc-backend", "x-llm-extproc-stream"]}}],
                "backendRefs": []}
        cluster = f"httproute/default/{route}/rule/{ri}"
        for bi, (backend, endpoint, priority, host) in enumerate(refs):
            endpoint = dict(endpoint, hostname=host) if "ip" in endpoint else endpoint
            backends[backend] = _backend(backend, endpoint, fallback=priority > 0)
            rule["backendRefs"].append({"group": "gateway.envoyproxy.io", "kind": "Backend", "name": backend})
            if len(refs) > 1:
                where = "load_assignment/" if "fqdn" in endpoint else ""
                patches.append({"type": ENDPOINT_TYPE if not where else CLUSTER_TYPE, "name": cluster, "operation": {
                    "op": "add", "path": f"/{where}endpoints/{bi}/lb_endpoints/0/metadata/filter_metadata/aigateway.envoy.io",
                    "value": {"per_route_rule_backend_name": f"default/{route}/rule/{ri}/ref/{bi}",
                              "backend_name": f"{backend}.default"}}})
        if len(refs) == 1:
            headers.append({"type": "Exact", "name": "x-llm-extproc-backend", "value": f"{refs[0][0]}.default"})
            rule["filters"].append({"type": "URLRewrite", "urlRewrite": {"hostname": refs[0][3]}})
        else:
            rule["filters"].append({"type": "ExtensionRef", "extensionRef": {
                "group": "gateway.envoyproxy.io", "kind": "HTTPRouteFilter", "name": "llm-host-from-backend"}})
            patches.append({"type": CLUSTER_TYPE, "name": cluster, "operation": {
                "op": "add", "path": "/typed_extension_protocol_options", "value": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http_protocol_options": {}},
                        "http_filters": _upstream_filters()}}}})
        http_rules.append(rule)
    docs.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": route, "namespace": "default"},
                 "spec": {"parentRefs": [{"name": GATEWAY, "namespace": GATEWAY_NS, "sectionName": "http"}],
                          "rules": http_rules}})
    docs.extend(backends.values())
    docs.append({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyPatchPolicy",
                 "metadata": {"name": "llm-extproc", "namespace": GATEWAY_NS},
                 "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY},
                          "type": "JSONPatch", "jsonPatches": patches}})
    return docs


def dump(docs):
    return yaml.safe_dump_all(docs, sort_keys=False)
