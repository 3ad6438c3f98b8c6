"""deploy/ and examples/ validate strictly against the CRDs and the Kubernetes schemas,
built by the real `kubectl kustomize`; what a cluster would refuse fails here."""

import subprocess
import sys

import pytest
import yaml

import k8s_manifests as km

ROOT = km.ROOT
STATIC = [ROOT / "deploy", ROOT / "examples"]


def test_the_crd_copy_is_the_shared_set():
    shared = ROOT.parent / "shared" / "crds"
    if not shared.is_dir():
        pytest.skip("no ../shared/crds beside this clone to compare the copy with")
    # A copy, so that a clone validates on its own.
    assert sorted(p.name for p in km.CRD_DIR.iterdir()) == sorted(p.name for p in shared.iterdir())
    for p in shared.iterdir():
        assert (km.CRD_DIR / p.name).read_bytes() == p.read_bytes(), p.name


def test_deploy_and_examples_validate():
    report, checked = km.validate(STATIC)
    assert report == []
    # Each static file and each build's output, ConfigMap contents included.
    assert checked >= 25


def test_every_kustomization_builds_with_kubectl():
    dirs = sorted(p.parent for p in (ROOT / "deploy").rglob("kustomization.yaml"))
    assert [d.relative_to(ROOT).as_posix() for d in dirs] == [
        "deploy/base", "deploy/examples/openai", "deploy/monitoring"]
    for d in dirs:
        assert km.documents(km.kustomize_build(d)), d


def overlay():
    return km.documents(km.kustomize_build(ROOT / "deploy" / "examples" / "openai"))


def test_overlay_carries_the_guide_resources_and_no_secret():
    docs = overlay()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    # And whatever `render gateway`'s gateway.yaml adds, but never a Secret.
    assert kinds >= {("ConfigMap", "llm-extproc-config"), ("Namespace", "maas-system"),
                     ("PodMonitor", "llm-extproc")}
    assert not any(kind == "Secret" for kind, _ in kinds)
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config_map["metadata"]["namespace"] == "maas-system"
    # The guide's example, less its Secret, in the Gateway's namespace.
    example = [d for d in km.documents((ROOT / "examples" / "openai.yaml").read_text()) if d["kind"] != "Secret"]
    for d in example:
        d["metadata"]["namespace"] = "maas-system"
        ref = d.get("spec", {}).get("apiKey", {}).get("secretRef")
        if ref:
            ref["namespace"] = "maas-system"
    assert km.documents(config_map["data"]["resources.yaml"]) == example


def render_gateway(*config):
    from harness import BIN
    args = [str(BIN), "render", "gateway"] + [a for c in config for a in ("--config", str(c))]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def test_the_overlays_gateway_yaml_is_what_render_gateway_writes_now():
    example = ROOT / "deploy" / "examples" / "openai"
    committed = (example / "gateway.yaml").read_text()
    assert committed == render_gateway(example / "resources.yaml"), \
        "render deploy/examples/openai/gateway.yaml again (see its kustomization.yaml)"
    kinds = {d["kind"] for d in overlay()}
    assert kinds >= {"Gateway", "HTTPRoute", "Backend", "EnvoyExtensionPolicy", "EnvoyPatchPolicy",
                     "BackendTrafficPolicy", "ClientTrafficPolicy", "EnvoyProxy"}


def test_rendered_gateways_validate(tmp_path):
    """What render gateway writes for the guide and for a two-priority rule with quotas."""
    for name, config in (("guide", ROOT / "examples" / "openai.yaml"),
                         ("failover", ROOT / "src" / "kubernetes" / "testdata" / "failover.yaml")):
        out = tmp_path / f"{name}.yaml"
        out.write_text(render_gateway(config))
        report, checked = km.validate([out])
        assert report == [], name
        assert checked >= 10, name


def test_no_key_is_committed():
    for label, docs in km.sources(STATIC):
        for d in docs:
            if km.is_manifest(d) and d["kind"] == "Secret":
                assert not label.startswith("kubectl kustomize"), f"{label} applies a Secret"
                assert set(d.get("stringData", {}).values()) == {"OPENAI_API_KEY"}, label
                assert "data" not in d, label


def test_envoy_gateway_values_enable_what_the_sidecar_needs():
    values = yaml.safe_load((ROOT / "deploy" / "envoy-gateway" / "values.yaml").read_text())
    config = km.envoy_gateway_values(values)
    assert config["extensionApis"] == {"enableBackend": True, "enableEnvoyPatchPolicy": True}
    assert config["provider"]["kubernetes"]["deploy"]["type"] == "GatewayNamespace"
    # The EnvoyPatchPolicy names the listener <ns>/<gateway>/<listener>; with this flag on,
    # Envoy Gateway names it tcp-<port> (internal/xds/translator/listener.go xdsListenerName).
    assert "XDSNameSchemeV2" in config["runtimeFlags"]["disabled"]
    assert km.envoy_gateway_problems(config) == []
    assert km.envoy_gateway_problems({"runtimeFlags": {"disabled": ["XDSNameSchemeV3"]}}) != []
    assert km.envoy_gateway_problems({"extensionApis": {"enableBackends": True}}) == [
        "config.envoyGateway.extensionApis: Additional properties are not allowed ('enableBackends' was unexpected)"]


# ---- the validator refuses what a cluster refuses --------------------------------------

PATCH_POLICY = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyPatchPolicy
metadata: {name: upstream-extproc, namespace: maas-system}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: llm}
  type: JSONPatch
  jsonPatches:
    - type: type.googleapis.com/envoy.config.cluster.v3.Cluster
      name: httproute/maas-system/llm/rule/0
      operation:
        op: add
        path: /typed_extension_protocol_options
        value: {anything: [1, {goes: here}]}
"""


def problems_of(text):
    return [p for d in km.documents(text) for p in km.problems(d)]


def test_preserved_unknown_fields_are_kept_open():
    # `operation.value` is x-kubernetes-preserve-unknown-fields: any JSON there.
    assert problems_of(PATCH_POLICY) == []


@pytest.mark.parametrize("change, expected", [
    (("op: add", "op: insert"), "spec.jsonPatches.0.operation.op: 'insert' is not one of"),
    (("  type: JSONPatch\n", "  type: JSONPatch\n  priorty: 1\n"), "spec: Additional properties are not allowed ('priorty'"),
    (("      name: httproute", "      nam: httproute"), "spec.jsonPatches.0: 'name' is a required property"),
    (("  type: JSONPatch\n", ""), "spec: 'type' is a required property"),
    (("metadata: {name", "metadata: {labelz: {}, name"), "metadata: Additional properties are not allowed ('labelz'"),
    (("kind: EnvoyPatchPolicy", "kind: EnvoyPatchPolicies"), "no schema for EnvoyPatchPolicies"),
])
def test_a_bad_envoy_patch_policy_is_refused(change, expected):
    found = problems_of(PATCH_POLICY.replace(*change))
    assert any(p.startswith(expected) for p in found), found


def test_core_kinds_are_strict():
    found = problems_of("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s}\nautomount: false\n")
    assert found == ["<root>: Additional properties are not allowed ('automount' was unexpected)"]
    found = problems_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: 1}\n")
    assert found == ["data.a: 1 is not of type 'string', 'null'"]


def test_int_or_string_nullable_and_unknown_versions():
    monitor = """
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: m}
spec:
  selector: {}
  podMetricsEndpoints: [{targetPort: %s}]
"""
    assert problems_of(monitor % "1064") == []
    assert problems_of(monitor % "metrics") == []
    assert problems_of(monitor % "true") != []
    # The guide's BackendTLSPolicy version before Gateway API v1.4: Envoy Gateway v1.9 has none.
    old = "apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: BackendTLSPolicy\nmetadata: {name: t}\nspec: {}\n"
    assert problems_of(old)[0].startswith("no schema for BackendTLSPolicy in gateway.networking.k8s.io/v1alpha3")
    assert problems_of("kind: Namespace\nmetadata: {name: n}\n") == ["no apiVersion or no kind"]


def test_the_command_fails_on_a_bad_kustomization(tmp_path):
    """Through `kubectl kustomize`, and a ConfigMap's resources are looked into."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "configMapGenerator:\n  - name: llm-extproc-config\n    files: [resources.yaml]\n")
    (tmp_path / "resources.yaml").write_text(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b}\n"
        "spec: {schema: {name: OpenAI}, backendRef: {name: b}, timeout: 5s}\n")
    run = subprocess.run([sys.executable, str(ROOT / "e2e" / "k8s_manifests.py"), str(tmp_path / "kustomization.yaml"),
                          str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("kubectl kustomize ") and " resources.yaml): AIServiceBackend/b: spec: Additional"
               " properties are not allowed ('timeout'" in line for line in lines), lines
    assert lines[-1].endswith("problems") and not lines[-1].endswith(" 0 problems")

    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    run = subprocess.run([sys.executable, str(ROOT / "e2e" / "k8s_manifests.py"), str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "kubectl kustomize" in run.stderr and "missing.yaml" in run.stderr


SOCKET_BACKEND = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: llm-extproc, namespace: maas-system}
spec:
  endpoints:
    - unix: {path: /run/llm-extproc/extproc.sock}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyExtensionPolicy
metadata: {name: llm-extproc, namespace: maas-system}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: llm}]
  extProc:
    - backendRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: llm-extproc}]
      failOpen: false
      processingMode:
        request: {body: FullDuplexStreamed}
        response: {body: FullDuplexStreamed}
"""


def test_cel_rules_are_evaluated():
    """The rules a cluster checks beyond the schema (x-kubernetes-validations)."""
    assert problems_of(SOCKET_BACKEND) == []
    long_path = "/run/" + "x" * 104 + ".sock"
    assert problems_of(SOCKET_BACKEND.replace("/run/llm-extproc/extproc.sock", long_path)) == [
        "spec.endpoints.0.unix.path: unix domain socket path must not exceed 108 characters"]
    assert problems_of(SOCKET_BACKEND.replace("failOpen: false", "failOpen: true")) == [
        "spec.extProc.0: If FullDuplexStreamed body processing mode is used, FailOpen must be false."]
    both = SOCKET_BACKEND.replace("- unix: {path", "- fqdn: {hostname: a.example, port: 443}\n      unix: {path")
    assert "spec.endpoints.0: only one of fqdn, ip or unix can be specified" in problems_of(both)
    no_target = SOCKET_BACKEND.replace("  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: llm}]\n", "")
    assert "spec: either targetRef or targetRefs must be used" in problems_of(no_target)


def test_defaults_apply_before_required_fields_and_rules():
    # `type` is required with a default: omitting it is fine, as in the API server.
    proxy = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata: {name: p}
spec:
  telemetry:
    tracing:
      provider: {host: otel.example, port: 4317}
"""
    assert problems_of(proxy) == []
