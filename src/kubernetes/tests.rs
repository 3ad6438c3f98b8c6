use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::config::Source;

fn options() -> RenderOptions {
    RenderOptions {
        gateway_name: None,
        gateway_namespace: "maas-system".into(),
        gateway_class: "eg".into(),
        port: 80,
        // Fixed, so that the snapshots do not change with the crate's version.
        image: "llm-extproc:test".into(),
        config_map: "llm-extproc-config".into(),
        socket_path: "/run/llm-extproc/extproc.sock".into(),
        admin_port: 1064,
        max_body_bytes: 32 << 20,
        rate_limit_service: None,
        consumer_header: None,
        consumer_metric_attribute: false,
    }
}

#[test]
fn the_consumer_options_reach_the_sidecar_in_the_pod() {
    let with_consumer = RenderOptions {
        consumer_header: Some("x-team".into()),
        consumer_metric_attribute: true,
        ..options()
    };
    let text = render_files(&[repo("examples/openai.yaml")], &with_consumer).unwrap();
    let proxy = documents(&text)
        .into_iter()
        .find(|d| d["kind"] == "EnvoyProxy")
        .unwrap();
    let containers = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["initContainers"];
    let args: Vec<&str> = containers[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let header = args.iter().position(|a| *a == "--consumer-header").unwrap();
    assert_eq!(args[header + 1], "x-team");
    assert!(args.contains(&"--consumer-metric-attribute"));
    // And not by default.
    let plain = render_files(&[repo("examples/openai.yaml")], &options()).unwrap();
    assert!(!plain.contains("--consumer-"));
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn load_files(paths: &[PathBuf]) -> Result<(Resources, crate::config::GatewayConfig), String> {
    load(&Source {
        paths: paths.to_vec(),
        secrets_dir: None,
    })
}

/// A file of the repository, loaded as `render gateway --config` loads it.
fn load_repo(path: &str) -> (Resources, crate::config::GatewayConfig) {
    load_files(&[repo(path)]).expect("the repository's file loads")
}

fn render_files(paths: &[PathBuf], options: &RenderOptions) -> Result<String, String> {
    let (resources, config) = load_files(paths)?;
    render(&resources, &config, options).map_err(|e| e.to_string())
}

fn render_text(yaml: &str, options: &RenderOptions) -> Result<String, String> {
    let dir =
        std::env::temp_dir().join(format!("llm-render-gateway-{}-{:x}", std::process::id(), {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            yaml.hash(&mut h);
            h.finish()
        }));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = render_files(&[file], options);
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .collect()
}

fn snapshot(name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(repo("src/kubernetes/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn the_guides_openai_example_golden() {
    let text = render_files(&[repo("examples/openai.yaml")], &options()).expect("renders");
    snapshot("gateway-openai", &text);
}

#[test]
fn multi_backend_failover_golden() {
    let mut o = options();
    o.rate_limit_service = Some("ratelimit.maas-system.svc.cluster.local:8081".into());
    let text = render_files(&[repo("src/kubernetes/testdata/failover.yaml")], &o).expect("renders");
    snapshot("gateway-failover", &text);
}

#[test]
fn rendering_is_deterministic() {
    let path = repo("src/kubernetes/testdata/failover.yaml");
    let first = render_files(std::slice::from_ref(&path), &options()).unwrap();
    let second = render_files(&[path], &options()).unwrap();
    assert_eq!(first, second);
}

const SECRET_VALUES: [&str; 4] = [
    "sk-live-0penAI-value-that-must-not-leak",
    "azure-value-that-must-not-leak",
    "AKIAMUSTNOTLEAK0000",
    "aws-secret-value-that-must-not-leak",
];

#[test]
fn no_secret_value_reaches_the_output() {
    let aws_file = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        SECRET_VALUES[2], SECRET_VALUES[3]
    );
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let extra = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: openai-key, namespace: maas-system}}\n\
         stringData: {{apiKey: {}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: azure-key, namespace: maas-system}}\n\
         data: {{apiKey: {}}}\n---\n\
         apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: bedrock, namespace: maas-system}}\n\
         spec: {{schema: {{name: AWSBedrock}}, backendRef: {{name: bedrock, kind: Backend, group: gateway.envoyproxy.io}}}}\n---\n\
         apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: bedrock, namespace: maas-system}}\n\
         spec: {{endpoints: [{{fqdn: {{hostname: bedrock-runtime.us-east-1.amazonaws.com, port: 443}}}}]}}\n---\n\
         apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: aws, namespace: maas-system}}\n\
         spec: {{targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}}], type: AWSCredentials,\n\
         awsCredentials: {{region: us-east-1, credentialsFile: {{secretRef: {{name: aws-creds}}}}}}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: aws-creds, namespace: maas-system}}\ndata: {{credentials: {}}}\n",
        SECRET_VALUES[0],
        b64(SECRET_VALUES[1]),
        b64(&aws_file)
    );
    let yaml = format!("{}---\n{extra}", include_str!("testdata/failover.yaml"));
    let text = render_text(&yaml, &options()).expect("renders");
    for value in SECRET_VALUES {
        assert!(!text.contains(value), "`{value}` leaked into the output");
        assert!(!text.contains(&b64(value)), "base64 of `{value}` leaked");
    }
    assert!(!text.contains(&b64(&aws_file)));
    // The Secrets are mounted by name instead.
    for name in ["openai-key", "azure-key", "aws-creds"] {
        assert!(
            text.contains(&format!("secretName: {name}")),
            "{name} is not mounted"
        );
    }
}

fn refused(yaml: &str) -> String {
    render_text(yaml, &options()).expect_err("refused")
}

const BACKENDS: &str = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: a}\n\
spec: {schema: {name: OpenAI}, backendRef: {name: a, kind: Backend, group: gateway.envoyproxy.io}}\n---\n\
apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\n\
spec: {schema: {name: OpenAI}, backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}}\n---\n\
apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: c}\n\
spec: {schema: {name: OpenAI}, backendRef: {name: c, kind: Backend, group: gateway.envoyproxy.io}}\n---\n\
apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: a}\nspec: {endpoints: [{fqdn: {hostname: a.example.com, port: 443}}]}\n---\n\
apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: [{fqdn: {hostname: b.example.com, port: 443}}]}\n---\n\
apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: c}\nspec: {endpoints: [{ip: {address: 10.1.1.1, port: 80}}]}\n---\n";

fn route(parent: &str, rule: &str) -> String {
    format!(
        "{BACKENDS}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
         spec:\n  parentRefs: [{parent}]\n  rules:\n  - matches: [{{headers: [{{name: x-ai-eg-model, value: m}}]}}]\n{rule}"
    )
}

#[test]
fn what_envoy_gateway_cannot_express_is_refused_by_name() {
    let gw = "{name: gw}";
    let cases = [
        (
            route(
                gw,
                "    streamIdleTimeout: 30s\n    backendRefs: [{name: a}]\n",
            ),
            "streamIdleTimeout",
        ),
        (
            route(
                gw,
                "    backendRefs: [{name: a}, {name: b, priority: 1}, {name: c, priority: 2}]\n",
            ),
            "uses 3 priorities",
        ),
        (
            route(gw, "    backendRefs: [{name: a}, {name: c, priority: 1}]\n"),
            "mixes hostname (fqdn) and IP endpoints",
        ),
        (
            // Envoy Gateway would try the second rule first: it has more header matches.
            route(
                gw,
                "    backendRefs: [{name: a}, {name: b, priority: 1}]\n  - matches: [{headers: [{name: x-ai-eg-model, value: m}, {name: x-tier, value: gold}]}]\n    backendRefs: [{name: b}]\n",
            ),
            "can take requests that rule `rule-0`",
        ),
        (
            format!(
                "{}  - name: Mini\n    matches: [{{headers: [{{name: x-ai-eg-model, value: n}}]}}]\n    backendRefs: [{{name: b}}]\n",
                route(gw, "    backendRefs: [{name: a}]\n")
            ),
            "`Mini` is not a Gateway API section name",
        ),
        (
            route(
                "{name: gw, sectionName: https}",
                "    backendRefs: [{name: a}]\n",
            ),
            "spec.parentRefs[0]",
        ),
    ];
    for (yaml, expected) in cases {
        let error = refused(&yaml);
        assert!(error.contains(expected), "{expected}: {error}");
        assert!(error.contains("fix:"), "{error}");
    }
}

#[test]
fn a_route_of_another_gateway_is_refused() {
    let yaml = format!(
        "{}\n---\n{}",
        route("{name: gw}", "    backendRefs: [{name: a}]\n"),
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: other}\n\
         spec:\n  parentRefs: [{name: gw2}]\n  rules:\n  - matches: [{headers: [{name: x-ai-eg-model, value: n}]}]\n    backendRefs: [{name: b}]\n"
    );
    assert!(refused(&yaml).contains("several Gateways (gw, gw2)"));
    let mut o = options();
    o.gateway_name = Some("gw".into());
    let error = render_text(&yaml, &o).expect_err("refused");
    assert!(error.contains("names Gateway `gw2`"), "{error}");
    let mut o = options();
    o.gateway_namespace = "elsewhere".into();
    let yaml = route(
        "{name: gw, namespace: maas-system}",
        "    backendRefs: [{name: a}]\n",
    );
    let error = render_text(&yaml, &o).expect_err("refused");
    assert!(error.contains("`maas-system/gw`"), "{error}");
}

#[test]
fn a_route_over_the_http_route_limits_is_refused() {
    let rules: String = (0..16)
        .map(|i| format!("  - matches: [{{headers: [{{name: x-ai-eg-model, value: m{i}}}]}}]\n    backendRefs: [{{name: a}}]\n"))
        .collect();
    let yaml = format!(
        "{BACKENDS}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}"
    );
    let error = refused(&yaml);
    assert!(
        error.contains("has 16 rules; an HTTPRoute holds 16"),
        "{error}"
    );
    let fifteen: String = rules.lines().take(30).map(|l| format!("{l}\n")).collect();
    let yaml = format!(
        "{BACKENDS}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{fifteen}"
    );
    render_text(&yaml, &options()).expect("15 rules fit");
}

#[test]
fn routes_with_different_hostnames_are_refused() {
    let yaml = format!(
        "{}---\n{}",
        route("{name: gw}", "    backendRefs: [{name: a}]\n"),
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: other}\n\
         spec:\n  parentRefs: [{name: gw}]\n  hostnames: [api.example.com]\n  rules:\n  - matches: [{headers: [{name: x-ai-eg-model, value: n}]}]\n    backendRefs: [{name: b}]\n"
    );
    let error = refused(&yaml);
    assert!(error.contains("spec.hostnames"), "{error}");
    // Exclusive rules in order, and a more specific rule first, are fine.
    let yaml = route(
        "{name: gw}",
        "    backendRefs: [{name: a}]\n  - matches: [{headers: [{name: x-ai-eg-model, value: n}]}]\n    backendRefs: [{name: b}]\n",
    );
    render_text(&yaml, &options()).expect("exclusive rules render");
    // A router-resolved rule has the binding header too: as specific as a later rule
    // with one more condition, and first in its HTTPRoute, as in the files.
    let yaml = route(
        "{name: gw}",
        "    backendRefs: [{name: a}]\n  - matches: [{headers: [{name: x-ai-eg-model, value: m}, {name: x-tier, value: gold}]}]\n    backendRefs: [{name: b}]\n",
    );
    render_text(&yaml, &options()).expect("same specificity, in order");
}

#[test]
fn the_socket_path_must_fit_a_unix_socket() {
    let yaml = route("{name: gw}", "    backendRefs: [{name: a}]\n");
    let mut o = options();
    o.socket_path = format!("/run/{}/s.sock", "x".repeat(96));
    assert_eq!(o.socket_path.len(), 108);
    let error = render_text(&yaml, &o).expect_err("too long");
    assert!(error.contains("at most 107 bytes"), "{error}");
    o.socket_path = "/s.sock".into();
    assert!(render_text(&yaml, &o)
        .expect_err("no directory")
        .contains("directory of its own"));
    o.socket_path = format!("/run/{}/s.sock", "x".repeat(95));
    render_text(&yaml, &o).expect("fits");
}

/// The rendered EnvoyPatchPolicy's operations, by the resource they patch.
fn patches(text: &str) -> Vec<Value> {
    let policy = documents(text)
        .into_iter()
        .find(|d| d["kind"] == "EnvoyPatchPolicy")
        .expect("an EnvoyPatchPolicy");
    policy["spec"]["jsonPatches"].as_array().unwrap().clone()
}

fn op<'a>(patches: &'a [Value], name: &str, contains: &str) -> &'a Value {
    patches
        .iter()
        .find(|p| p["name"] == name && p["operation"].to_string().contains(contains))
        .map(|p| &p["operation"])
        .unwrap_or_else(|| panic!("no patch of {name} with {contains}"))
}

/// The xDS Envoy Gateway generates for the failover config (its shapes, as in its
/// translator's testdata), with the rendered patch values put where the patches put
/// them, accepted by the real Envoy: the filter JSON the render patches in is valid.
#[test]
fn the_patched_filters_pass_envoy_validation() {
    let mut o = options();
    o.rate_limit_service = Some("ratelimit.maas-system.svc.cluster.local:8081".into());
    let text = render_files(&[repo("src/kubernetes/testdata/failover.yaml")], &o).expect("renders");
    let ops = patches(&text);
    let listener = "maas-system/ai-gateway/http";
    let extproc_name = names::extproc_filter("maas-system", "ai-gateway-llm-extproc");
    let extproc_cluster = names::extproc_cluster("maas-system", "ai-gateway-llm-extproc");
    let send_body = op(&ops, listener, "send_body_without_waiting");
    assert_eq!(send_body["value"], json!(true));
    // Envoy Gateway's ext_proc for the EnvoyExtensionPolicy (`extProcConfig`), patched.
    let router_ext_proc = json!({
        "name": extproc_name,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": extproc_cluster, "authority": "ai-gateway-llm-extproc.maas-system"}, "timeout": "10s"},
            "message_timeout": "10s",
            "metadata_options": {"receiving_namespaces": {"untyped": ["io.envoy.ai_gateway"]}},
            "processing_mode": {
                "request_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED", "request_trailer_mode": "SEND",
                "response_header_mode": "SEND", "response_body_mode": "STREAMED", "response_trailer_mode": "SKIP"
            },
            "send_body_without_waiting_for_header_response": send_body["value"]
        }
    });
    let restore = &op(&ops, listener, "header_mutation")["value"];
    let rate_limit = &op(&ops, listener, "v3.RateLimit\"")["value"];
    let local_reply = &op(&ops, listener, "local_reply_config")["value"];
    let per_route = &op(&ops, listener, "RateLimitPerRoute")["value"];
    let enable =
        json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}});
    let route = |cluster: &str, model: &str| {
        json!({
            "name": format!("{cluster}/match/0/*"),
            "match": {"prefix": "/", "headers": [{"name": "x-ai-eg-model", "string_match": {"exact": model}}]},
            "route": {"cluster": cluster, "auto_host_rewrite": true},
            "typed_per_filter_config": {extproc_name.clone(): enable, "envoy.filters.http.ratelimit": per_route}
        })
    };
    let tls_cluster = |rule: usize, hosts: [&str; 2]| {
        let name = names::route_cluster("maas-system", "llm", rule);
        let filters = &op(&ops, &name, "http_filters")["value"];
        let localities: Vec<Value> = hosts
            .iter()
            .enumerate()
            .map(|(j, host)| {
                let region = names::backend_locality(&name, j);
                let metadata = &op(&ops, &name, &region)["value"];
                json!({
                    "locality": {"region": region}, "priority": j,
                    "lb_endpoints": [{
                        "endpoint": {"address": {"socket_address": {"address": host, "port_value": 443}}},
                        "metadata": {"filter_metadata": {
                            "envoy.transport_socket_match": {"name": format!("{name}/tls/{j}")},
                            "aigateway.envoy.io": metadata
                        }}
                    }]
                })
            })
            .collect();
        let matches: Vec<Value> = hosts.iter().enumerate().map(|(j, host)| json!({
            "name": format!("{name}/tls/{j}"), "match": {"name": format!("{name}/tls/{j}")},
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {"validation_context": {"trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}}}
            }}
        })).collect();
        json!({
            "name": name, "type": "STRICT_DNS", "connect_timeout": "10s",
            "load_assignment": {"cluster_name": name, "endpoints": localities},
            "transport_socket_matches": matches,
            // Envoy Gateway's `dummyTransportSocket` (cluster.go): auto_config needs a
            // TLS socket on the cluster; the matches above take effect.
            "transport_socket": {"name": "dummy.transport_socket", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {}
            }},
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "auto_config": {"http_protocol_options": {}},
                "http_filters": filters
            }}
        })
    };
    // Rule 2 (IP endpoints): EDS in Envoy Gateway; inline here, with the patched
    // ClusterLoadAssignment's metadata, since --mode validate has no EDS server.
    let ip_name = names::route_cluster("maas-system", "llm", 2);
    let ip_options = &op(&ops, &ip_name, "typed_extension_protocol_options")["value"];
    let ip_localities: Vec<Value> = [["10.0.0.10"].as_slice(), &["10.0.0.11", "10.0.0.12"]]
        .iter()
        .enumerate()
        .map(|(j, hosts)| {
            let region = names::backend_locality(&ip_name, j);
            let metadata = &op(&ops, &ip_name, &region)["value"];
            json!({"locality": {"region": region}, "priority": j, "lb_endpoints": hosts.iter().map(|h| json!({
                "endpoint": {"address": {"socket_address": {"address": h, "port_value": 8000}}},
                "metadata": metadata
            })).collect::<Vec<_>>()})
        })
        .collect();
    let ratelimit_cluster = &op(&ops, "ratelimit", "STRICT_DNS")["value"];
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": listener,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "default_filter_chain": {"filters": [{
                    "name": names::HCM_FILTER,
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http-10080",
                        "route_config": {"name": listener, "virtual_hosts": [{
                            "name": "maas-system/ai-gateway/http/*", "domains": ["*"],
                            "routes": [route(&names::route_cluster("maas-system", "llm", 0), "gpt-4o"),
                                       route(&names::route_cluster("maas-system", "llm", 1), "gpt-4o-mini"),
                                       route(&ip_name, "local")]
                        }]},
                        "http_filters": [router_ext_proc, restore, rate_limit,
                            {"name": names::ROUTER_FILTER, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                        "local_reply_config": local_reply
                    }
                }]}
            }],
            "clusters": [
                {
                    "name": extproc_cluster, "type": "STATIC", "connect_timeout": "10s",
                    "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }},
                    "load_assignment": {"cluster_name": extproc_cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": "/run/llm-extproc/extproc.sock"}}}}]}]}
                },
                tls_cluster(0, ["api.openai.com", "example.openai.azure.com"]),
                tls_cluster(1, ["example.openai.azure.com", "api.openai.com"]),
                {
                    "name": ip_name, "type": "STATIC", "connect_timeout": "10s",
                    "load_assignment": {"cluster_name": ip_name, "endpoints": ip_localities},
                    "typed_extension_protocol_options": ip_options
                },
                ratelimit_cluster
            ]
        }
    });
    let dir = std::env::temp_dir().join(format!("llm-render-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, serde_json::to_string_pretty(&bootstrap).unwrap()).unwrap();
    let envoy = crate::run::find_envoy().expect("Envoy 1.40 (see the README's setup)");
    let out = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&path)
        .output()
        .expect("runs envoy");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "envoy --mode validate refused the patched xDS:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_upstream_filter_reaches_the_sidecar_through_envoy_gateways_extproc_cluster() {
    let text = render_files(&[repo("src/kubernetes/testdata/failover.yaml")], &options()).unwrap();
    let ops = patches(&text);
    let cluster = names::route_cluster("maas-system", "llm", 0);
    let filters = &op(&ops, &cluster, "http_filters")["value"];
    assert_eq!(
        filters[0]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"],
        json!("envoyextensionpolicy/maas-system/ai-gateway-llm-extproc/extproc/0")
    );
    assert_eq!(
        filters[2]["name"],
        json!("envoy.filters.http.upstream_codec")
    );
    // With Envoy Gateway's authority for the router level: Envoy's default, the cluster
    // name, holds `/`, which the sidecar's HTTP/2 server refuses (found by
    // e2e/test_kubernetes_xds.py on Envoy 1.40).
    let authority = json!("ai-gateway-llm-extproc.maas-system");
    assert_eq!(
        filters[0]["typed_config"]["grpc_service"]["envoy_grpc"]["authority"],
        authority
    );
    // Otherwise the same filters `run` puts on its clusters, but for the cluster name.
    let mut run = crate::envoy::resources::upstream_filters(
        "envoyextensionpolicy/maas-system/ai-gateway-llm-extproc/extproc/0",
    );
    run[0]["typed_config"]["grpc_service"]["envoy_grpc"]["authority"] = authority.clone();
    assert_eq!(filters, &run);
    // Without an external service, the sidecar counts the quotas, on the same cluster
    // and authority.
    let rate_limit = &op(&ops, "maas-system/ai-gateway/http", "v3.RateLimit\"")["value"];
    let grpc = &rate_limit["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"];
    assert_eq!(
        grpc["cluster_name"],
        json!("envoyextensionpolicy/maas-system/ai-gateway-llm-extproc/extproc/0")
    );
    assert_eq!(grpc["authority"], authority);
}

/// `timeouts.backendRequest` bounds each attempt (per_try_timeout) as in `run`: in the
/// BackendTrafficPolicy, not in the HTTPRoute, where Envoy Gateway would make it the
/// whole request's timeout (found by e2e/test_kubernetes_xds.py).
#[test]
fn the_backend_request_timeout_bounds_each_attempt() {
    let text = render_files(&[repo("src/kubernetes/testdata/failover.yaml")], &options()).unwrap();
    let docs = documents(&text);
    let route = docs.iter().find(|d| d["kind"] == "HTTPRoute").unwrap();
    let rule = &route["spec"]["rules"][2];
    assert_eq!(rule["name"], json!("rule-2"));
    assert_eq!(rule["timeouts"], json!({"request": "120s"}));
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "BackendTrafficPolicy" && d["metadata"]["name"] == "llm-rule-2")
        .unwrap();
    assert_eq!(
        policy["spec"]["retry"]["perRetry"],
        json!({"timeout": "30s"})
    );
}

/// The fallback's endpoints carry the reference key whose target, in the same
/// configuration the sidecar loads, holds the modelNameOverride.
#[test]
fn endpoint_metadata_names_the_reference_that_carries_the_model_override() {
    let (resources, config) = load_repo("src/kubernetes/testdata/failover.yaml");
    let text = render(&resources, &config, &options()).unwrap();
    let ops = patches(&text);
    let cluster = names::route_cluster("maas-system", "llm", 0);
    let fallback = op(&ops, &cluster, &names::backend_locality(&cluster, 1));
    assert_eq!(
        fallback["path"],
        json!("/metadata/filter_metadata/aigateway.envoy.io")
    );
    let key = fallback["value"]["per_route_rule_backend_name"]
        .as_str()
        .unwrap();
    assert_eq!(
        fallback["value"]["backend_name"],
        json!("azure.maas-system")
    );
    let target = &config.backend_refs[key];
    assert_eq!(target.backend.name, "azure.maas-system");
    assert_eq!(
        target.model_name_override.as_deref(),
        Some("gpt-4o-deployment")
    );
    // IP endpoints (EDS) have no metadata of their own yet: the whole message is added.
    let ip = names::route_cluster("maas-system", "llm", 2);
    let eds = ops
        .iter()
        .find(|p| {
            p["name"] == json!(ip) && p["operation"]["jsonPath"].to_string().contains("backend/1")
        })
        .unwrap();
    assert_eq!(
        eds["type"],
        json!("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")
    );
    assert_eq!(eds["operation"]["path"], json!("/metadata"));
}

/// A Backend that one route uses as a fallback and a later route as a primary: the
/// first route's fallback points at the `fallback: true` copy.
#[test]
fn a_backend_that_is_primary_in_a_later_route_gets_a_fallback_copy() {
    let yaml = format!(
        "{}---\n{}",
        route(
            "{name: gw}",
            "    backendRefs: [{name: a}, {name: b, priority: 1}]\n"
        ),
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: later}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches: [{headers: [{name: x-ai-eg-model, value: n}]}]\n    backendRefs: [{name: b}]\n"
    );
    let docs = documents(&render_text(&yaml, &options()).expect("renders"));
    let refs_of = |route: &str| -> Vec<Value> {
        let r = docs
            .iter()
            .find(|d| d["kind"] == "HTTPRoute" && d["metadata"]["name"] == route)
            .unwrap();
        r["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].clone())
            .collect()
    };
    assert_eq!(refs_of("r"), [json!("a"), json!("b-fallback")]);
    assert_eq!(refs_of("later"), [json!("b")]);
    let backend = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "Backend" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("Backend {name}"))["spec"]["fallback"]
            .clone()
    };
    assert_eq!(backend("b-fallback"), json!(true));
    assert_eq!(backend("b"), Value::Null);
}

/// A rule without header conditions ties with the unknown-model rule (404) that ends every
/// other HTTPRoute; Envoy Gateway orders such ties between HTTPRoutes by age
/// (internal/gatewayapi/sort.go sorts stably; routes come in creation order), so an older
/// route's 404 can take what the files send to the catch-all. One route alone is fine:
/// within an HTTPRoute its rules keep their order.
#[test]
fn a_catch_all_rule_beside_another_route_is_refused() {
    let catch_all = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: later}\n\
         spec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: a}, {name: b, priority: 1}]\n";
    let yaml = format!(
        "{}---\n{catch_all}",
        route("{name: gw}", "    backendRefs: [{name: b}]\n")
    );
    let error = refused(&yaml);
    assert!(
        error.contains("AIGatewayRoute default/later: rule `rule-0`"),
        "{error}"
    );
    assert!(error.contains("unknown-model"), "{error}");
    // Alone, the catch-all comes before its own route's unknown-model rule.
    let alone = format!("{BACKENDS}{catch_all}");
    render_text(&alone, &options()).expect("a catch-all in the only route renders");
}

/// The sidecar finds mounted Secrets by name (`--secrets-dir <dir>/<name>/<key>`), and the
/// Envoy pods mount them from the Gateway's namespace: two Secrets of one name would give
/// both backends one key, and a Secret elsewhere is mounted from the Gateway's namespace.
#[test]
fn secrets_of_one_name_in_two_namespaces_are_refused() {
    let policy = |name: &str, backend: &str, secret_ref: &str| {
        format!(
            "---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}}}\n\
             spec: {{targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend}}}], type: APIKey, apiKey: {{secretRef: {secret_ref}}}}}\n"
        )
    };
    let base = route(
        "{name: gw}",
        "    backendRefs: [{name: a}]\n  - matches: [{headers: [{name: x-ai-eg-model, value: n}]}]\n    backendRefs: [{name: b}]\n",
    );
    let yaml = format!(
        "{base}{}{}",
        policy("pa", "a", "{name: key}"),
        policy("pb", "b", "{name: key, namespace: maas-system}")
    );
    let error = refused(&yaml);
    assert!(
        error.contains("BackendSecurityPolicy default/pb: spec.apiKey.secretRef"),
        "{error}"
    );
    assert!(
        error.contains("`maas-system/key`") && error.contains("`default/key`"),
        "{error}"
    );
    // One Secret for both is fine, and named as mounted from the Gateway's namespace.
    let yaml = format!(
        "{base}{}{}",
        policy("pa", "a", "{name: key}"),
        policy("pb", "b", "{name: key}")
    );
    render_text(&yaml, &options()).expect("one Secret for two backends renders");
    let (resources, _) = load_repo("examples/openai.yaml");
    let notes = notices(&resources, &options());
    assert!(
        notes.contains(
            &"BackendSecurityPolicy default/envoy-ai-gateway-basic-openai-apikey: spec.apiKey.secretRef: \
              Secret `default/envoy-ai-gateway-basic-openai-apikey` is mounted from the Gateway's namespace \
              as `maas-system/envoy-ai-gateway-basic-openai-apikey` (a pod mounts only Secrets of its own \
              namespace): create it there"
                .to_string()
        ),
        "{notes:?}"
    );
    let (resources, _) = load_repo("deploy/examples/openai/resources.yaml");
    assert!(notices(&resources, &options()).is_empty());
}

/// Envoy Gateway runs one Envoy replica unless told otherwise (`DefaultDeploymentReplicas`,
/// api/v1alpha1/shared_types.go): a budget of `minAvailable: 1` over it allows no eviction,
/// and every node drain (cluster upgrades too) waits on the Envoy pod forever.
#[test]
fn the_envoy_pod_budget_lets_a_node_drain() {
    let text = render_files(&[repo("examples/openai.yaml")], &options()).unwrap();
    let proxy = documents(&text)
        .into_iter()
        .find(|d| d["kind"] == "EnvoyProxy")
        .unwrap();
    let kubernetes = &proxy["spec"]["provider"]["kubernetes"];
    let replicas = kubernetes["envoyDeployment"]["replicas"]
        .as_u64()
        .unwrap_or(1);
    let budget = &kubernetes["envoyPDB"];
    let evictable = match (
        budget["minAvailable"].as_u64(),
        budget["maxUnavailable"].as_u64(),
    ) {
        (Some(min), None) => replicas > min,
        (None, Some(max)) => max >= 1,
        other => panic!("an envoyPDB with one of minAvailable or maxUnavailable: {other:?}"),
    };
    assert!(
        evictable,
        "{budget} over {replicas} replica(s) allows no eviction"
    );
}

/// The sidecar shares the Envoy pod's network namespace: its admin port cannot be one
/// that Envoy Gateway's containers bind (internal/xds/bootstrap/bootstrap.go,
/// internal/cmd/envoy/shutdown_manager.go, and the listener's port, shifted by 10000
/// under 1024 in internal/gatewayapi/listener.go), or one of them fails to start.
#[test]
fn the_admin_port_must_not_be_one_envoy_binds() {
    let yaml = route("{name: gw}", "    backendRefs: [{name: a}]\n");
    for (admin, port, taken) in [
        (19001, 80, "Envoy's stats"),
        (19003, 80, "Envoy's readiness"),
        (19002, 80, "shutdown manager"),
        (10080, 80, "Gateway listener"),
        (8443, 8443, "Gateway listener"),
        (0, 80, "1 to 65535"),
    ] {
        let mut o = options();
        o.admin_port = admin;
        o.port = port;
        let error = render_text(&yaml, &o).expect_err("refused");
        assert!(
            error.contains("--admin-port") && error.contains(taken),
            "{admin}: {error}"
        );
    }
    let mut o = options();
    o.port = 0;
    let error = render_text(&yaml, &o).expect_err("refused");
    assert!(error.contains("--port"), "{error}");
    let mut o = options();
    o.admin_port = 9090;
    o.port = 8080;
    render_text(&yaml, &o).expect("free ports render");
}

/// The rendered names add suffixes (`-unknown-model`, `-<rule>`, `-fallback`) to names
/// that may already be near Kubernetes' 253 characters: the API server would refuse them.
#[test]
fn a_rendered_name_over_kubernetes_limit_is_refused() {
    let long = "r".repeat(245);
    let yaml = route("{name: gw}", "    backendRefs: [{name: a}]\n").replace(
        "metadata: {name: r}",
        &format!("metadata: {{name: {long}}}"),
    );
    let error = refused(&yaml);
    assert!(
        error.contains(&format!("HTTPRouteFilter `{long}-host-rewrite`")),
        "{error}"
    );
    assert!(
        error.contains(&format!("AIGatewayRoute default/{long}")),
        "{error}"
    );
}

/// An AIGatewayRoute rule may hold 128 matches and 128 backendRefs; an HTTPRoute rule 64
/// matches and 16 backendRefs (gateway-api-standard-crds.yaml), and 128 matches in all
/// (its CEL rule, `<= 128`).
#[test]
fn a_rule_over_the_http_route_rule_limits_is_refused() {
    let rule_with = |matches: usize, backends: usize| {
        let m: Vec<String> = (0..matches)
            .map(|i| format!("{{headers: [{{name: x-ai-eg-model, value: m{i}}}]}}"))
            .collect();
        let b: Vec<String> = (0..backends).map(|_| "{name: a}".to_string()).collect();
        format!(
            "{BACKENDS}apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{}]\n    backendRefs: [{}]\n",
            m.join(", "),
            b.join(", ")
        )
    };
    let error = refused(&rule_with(65, 1));
    assert!(
        error.contains("spec.rules[0].matches") && error.contains("64"),
        "{error}"
    );
    let error = refused(&rule_with(1, 17));
    assert!(
        error.contains("spec.rules[0].backendRefs") && error.contains("16"),
        "{error}"
    );
    render_text(&rule_with(64, 16), &options()).expect("at the limits");
}

/// `--rate-limit-service` only shapes the QuotaPolicies' patches: without one it would be
/// dropped without a word, a bad value too.
#[test]
fn a_rate_limit_service_without_quotas_is_refused() {
    let mut o = options();
    o.rate_limit_service = Some("ratelimit.maas-system.svc.cluster.local:8081".into());
    let error = render_files(&[repo("deploy/examples/openai/resources.yaml")], &o)
        .expect_err("nothing uses it");
    assert!(
        error.contains("--rate-limit-service") && error.contains("QuotaPolicy"),
        "{error}"
    );
    o.rate_limit_service = Some("no-port".into());
    let error =
        render_files(&[repo("src/kubernetes/testdata/failover.yaml")], &o).expect_err("bad value");
    assert!(error.contains("must be host:port"), "{error}");
}

/// The `--config` files are what the sidecar reads, from the ConfigMap: a Secret manifest
/// among them would put its key in that ConfigMap, and win over the mounted Secret (the
/// sidecar reads manifests first), so that rotating the Secret changes nothing.
#[test]
fn a_secret_manifest_in_the_config_is_named() {
    let (resources, _) = load_repo("examples/openai.yaml");
    let notes = notices(&resources, &options());
    assert!(
        notes.iter().any(|n| n.starts_with(
            "Secret default/envoy-ai-gateway-basic-openai-apikey is in the --config files"
        ) && n.contains("ConfigMap `llm-extproc-config`")),
        "{notes:?}"
    );
    // The placeholders that stand in for Secrets kept in the cluster are not named.
    let (resources, _) = load_repo("deploy/examples/openai/resources.yaml");
    assert_eq!(notices(&resources, &options()), Vec::<String>::new());
}

/// The provider gets its own Host, and not the client's as x-forwarded-host, which Envoy
/// Gateway appends on a host rewrite by default (internal/xds/translator/route.go
/// `AppendXForwardedHost`): `run` sends none.
#[test]
fn the_client_host_is_not_forwarded_to_the_provider() {
    let text = render_files(&[repo("examples/openai.yaml")], &options()).unwrap();
    let filter = documents(&text)
        .into_iter()
        .find(|d| d["kind"] == "HTTPRouteFilter" && d["spec"].get("urlRewrite").is_some())
        .unwrap();
    assert_eq!(
        filter["spec"]["urlRewrite"],
        json!({"hostname": {"type": "Backend"}, "appendXForwardedHost": false})
    );
}
