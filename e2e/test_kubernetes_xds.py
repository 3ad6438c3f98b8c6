"""The xDS Envoy Gateway v1.9 would build for the rendered Kubernetes resources, on the real Envoy.

The Envoy Gateway resources (from `llm-extproc render gateway` when the binary has it, and
always the hand-written ones of eg_resources.py) go through eg_xds.py, a simulator of
Envoy Gateway's translation and of its EnvoyPatchPolicy JSONPatch; the result runs on the
real Envoy with `llm-extproc serve` on the unix socket the EnvoyExtensionPolicy's Backend
names, and fake providers on loopback. What is simulated is said in eg_xds.py.
"""

import copy
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time

import httpx
import pytest
import yaml

import eg_resources
import eg_xds
from fakes import FakeProvider, free_port
from harness import BIN, ROOT, backend_yaml, metric_sum, route_yaml

ENVOY = pathlib.Path(os.environ.get("ENVOY_BIN", ROOT / ".venv" / "bin" / "envoy"))
ROUTE = "envoy-ai-gateway-basic-openai"


class Sidecar:
    """`llm-extproc serve` on a unix socket, as in the Envoy pod."""

    def __init__(self, run_dir, config_path):
        self.socket = pathlib.Path(run_dir) / "extproc.sock"
        self.admin = f"127.0.0.1:{free_port()}"
        self.log_path = pathlib.Path(run_dir) / "sidecar.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen([str(BIN), "serve", "--config", str(config_path), "--listen", str(self.socket),
                                      "--admin", self.admin], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        _wait_ready(self, "sidecar", f"http://{self.admin}/readyz")

    def metric(self, name, **labels):
        return metric_sum(f"http://{self.admin}", name, **labels)

    def stop(self):
        _stop(self.proc)
        self.log.close()


class Envoy:
    """The real Envoy on the simulated xDS, validated first."""

    def __init__(self, run_dir, bootstrap):
        self.port = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        self.admin = f"http://127.0.0.1:{bootstrap['admin']['address']['socket_address']['port_value']}"
        self.config = pathlib.Path(run_dir) / "envoy.json"
        self.config.write_text(json.dumps(bootstrap, indent=1))
        check = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(self.config), "--log-level", "error"],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, f"envoy --mode validate refused the simulated xDS:\n{check.stdout}{check.stderr}"
        self.log_path = pathlib.Path(run_dir) / "envoy.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(ENVOY), "-c", str(self.config), "--use-dynamic-base-id", "--concurrency", "1",
                                      "--log-level", os.environ.get("ENVOY_LOG_LEVEL", "warn")], stdout=self.log, stderr=subprocess.STDOUT)
        # Ready when the request reaches the sidecar through the router-level filter.
        _wait_ready(self, "envoy", self.url + "/v1/models")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def chat(self, model, headers=None):
        body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}]}
        return httpx.post(self.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)

    def stat(self, name):
        text = httpx.get(self.admin + "/stats", params={"filter": f"^{name}$"}, timeout=5).text
        return int(text.split(": ")[1]) if ": " in text else 0

    def stop(self):
        _stop(self.proc)
        self.log.close()


def _wait_ready(process, what, url):
    """Until `url` answers 200; a process that exits or stays unready is stopped, and
    its log is the error."""
    deadline = time.time() + 30
    while time.time() < deadline:
        if process.proc.poll() is not None:
            process.log.close()
            raise RuntimeError(f"{what} exited:\n{process.log_path.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"{what} not ready:\n{process.log_path.read_text()}")


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def gateway():
    """Starts sidecar + Envoy for (AI config text, Envoy Gateway documents); dumps logs on failure."""
    started = []
    run_dir = tempfile.mkdtemp(prefix="eg-", dir="/tmp")  # short: the socket path has 108 characters at most

    def start(ai_config, eg_docs_for_socket):
        config = pathlib.Path(run_dir) / "ai.yaml"
        config.write_text(ai_config)
        sidecar = Sidecar(run_dir, config)
        started.append(sidecar)
        docs = eg_docs_for_socket(sidecar.socket)
        translation = eg_xds.Translation(docs)
        translation.apply_patches(strict=True)
        for attempt in range(3):
            try:
                envoy = Envoy(run_dir, translation.bootstrap(listen_port=free_port(), admin_port=free_port()))
                break
            except RuntimeError as e:
                # A port free_port handed out can be taken before Envoy binds it: fresh ports.
                if attempt == 2 or "already in use" not in str(e):
                    raise
        started.append(envoy)
        return envoy, sidecar, translation

    yield start
    for p in reversed(started):
        p.stop()
        # Captured output: pytest shows it only for a test that failed.
        print(f"--- {p.log_path}\n{p.log_path.read_text(errors='replace')[-6000:]}")


# ------------------------------------------------------------------ the resources

def guide_config(port, key="sk-openai-secret"):
    """The guide's resources (examples/openai.yaml) with the provider on loopback."""
    return "\n---\n".join([backend_yaml(ROUTE, "OpenAI", port, policy="APIKey", key=key, host="localhost"),
                           route_yaml(ROUTE, [("gpt-4o-mini", [(ROUTE, 0, None)])])])


def failover_config(primary_port, backup_port):
    return "\n---\n".join([
        backend_yaml("primary", "OpenAI", primary_port, policy="APIKey", key="sk-primary"),
        backend_yaml("backup", "OpenAI", backup_port, policy="APIKey", key="sk-backup"),
        route_yaml(ROUTE, [("gpt-4o-mini", [("primary", 0, None), ("backup", 1, None)])])])


def hand_written_guide(port):
    return lambda socket: eg_resources.gateway_resources(
        ROUTE, [("gpt-4o-mini", [(ROUTE, {"fqdn": {"hostname": "localhost", "port": port}}, 0, "api.openai.com")])], socket)


def hand_written_failover(primary_port, backup_port):
    return lambda socket: eg_resources.gateway_resources(ROUTE, [("gpt-4o-mini", [
        ("primary", {"ip": {"address": "127.0.0.1", "port": primary_port}}, 0, "primary.example"),
        ("backup", {"ip": {"address": "127.0.0.1", "port": backup_port}}, 1, "backup.example")])], socket)


def rendered(ai_config):
    """`render gateway` on the AI resources, with its unix socket pointed at the test's sidecar."""
    def build(socket):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(ai_config)
        out = subprocess.run([str(BIN), "render", "gateway", "--config", f.name], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        for d in docs:
            if d["kind"] == "Backend":
                for e in d["spec"]["endpoints"]:
                    if "unix" in e:
                        e["unix"]["path"] = str(socket)
        return docs
    return build


# ------------------------------------------------------------------ the guide's verification

def _verify_guide(envoy, sidecar, fake):
    r = envoy.chat("gpt-4o-mini", headers={"authorization": "Bearer client-bogus-key", "x-api-key": "client-x-api-key",
                                           "api-key": "client-azure-key"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["total_tokens"] > 0
    seen = fake.last()
    assert seen["headers"]["authorization"] == "Bearer sk-openai-secret"
    assert "x-api-key" not in seen["headers"] and "api-key" not in seen["headers"]
    assert seen["path"] == "/v1/chat/completions"
    assert fake.rejected == []
    assert sidecar.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="input",
                          gen_ai_request_model="gpt-4o-mini") == body["usage"]["prompt_tokens"]
    assert sidecar.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == body["usage"]["completion_tokens"]
    # A model no rule serves: the sidecar's OpenAI-style 404 (the router-level filter runs
    # on the catch-all route a request matches first).
    r = envoy.chat("gpt-unknown")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
    return seen


def test_guide_through_hand_written_resources(gateway, openai_fake):
    envoy, sidecar, _ = gateway(guide_config(openai_fake.port), hand_written_guide(openai_fake.port))
    seen = _verify_guide(envoy, sidecar, openai_fake)
    assert seen["headers"]["host"] == "api.openai.com"  # the HTTPRoute's URLRewrite


def test_guide_through_render_gateway(gateway, openai_fake):
    config = guide_config(openai_fake.port)
    envoy, sidecar, _ = gateway(config, rendered(config))
    seen = _verify_guide(envoy, sidecar, openai_fake)
    # The provider's host (its Backend's FQDN, here rewritten to the fake's), not the client's.
    assert seen["headers"]["host"] == "localhost"
    # Nor the client's host in x-forwarded-host, which Envoy Gateway appends on a host
    # rewrite unless told not to (internal/xds/translator/route.go); `run` sends none.
    assert "x-forwarded-host" not in seen["headers"], seen["headers"]


# ------------------------------------------------------------------ failover

def _verify_failover(envoy, backup, primary=None):
    r = envoy.chat("gpt-4o-mini", headers={"authorization": "Bearer client", "x-api-key": "client-x-api-key",
                                           "api-key": "client-azure-key"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["total_tokens"] > 0
    # The first request already moved to the next priority.
    assert len(backup.requests) == 1
    assert backup.last()["headers"]["authorization"] == "Bearer sk-backup"
    assert backup.rejected == []
    # Each attempt is built by the upstream-level filter: the client's credentials reach
    # neither provider, on either attempt.
    attempts = backup.requests + (primary.requests if primary is not None else [])
    for seen in attempts:
        assert "x-api-key" not in seen["headers"] and "api-key" not in seen["headers"], seen["headers"]
    if primary is not None:
        assert primary.requests[0]["headers"]["authorization"] == "Bearer sk-primary"


@pytest.fixture
def backup():
    fake = FakeProvider(kind="openai", key="sk-backup")
    yield fake
    fake.stop()


@pytest.fixture
def failing_primary():
    fake = FakeProvider(kind="openai", key="sk-primary")
    fake.fail_status = 503
    yield fake
    fake.stop()


def test_failover_from_a_dead_primary(gateway, backup):
    dead = free_port()
    envoy, _, translation = gateway(failover_config(dead, backup.port), hand_written_failover(dead, backup.port))
    _verify_failover(envoy, backup)
    assert backup.last()["headers"]["host"] == "backup.example"  # auto_host_rewrite from the endpoint hostname
    cluster = f"httproute/default/{ROUTE}/rule/0"
    assert envoy.stat(f"cluster.{cluster}.upstream_rq_retry") >= 1


def test_failover_from_a_primary_answering_503(gateway, failing_primary, backup):
    envoy, _, _ = gateway(failover_config(failing_primary.port, backup.port),
                          hand_written_failover(failing_primary.port, backup.port))
    _verify_failover(envoy, backup, primary=failing_primary)


def test_upstream_ext_proc_without_an_authority_is_refused_by_the_sidecar(gateway, backup):
    """Envoy's default :authority for an envoy_grpc service is its cluster name; Envoy
    Gateway's `envoyextensionpolicy/<ns>/<name>/extproc/0` holds "/", which the sidecar's
    HTTP/2 server refuses (RST_STREAM PROTOCOL_ERROR, seen on Envoy 1.40), so the patched
    upstream filter must name an authority: here, the one Envoy Gateway gives the router level."""
    dead = free_port()
    build = hand_written_failover(dead, backup.port)

    def without_authority(socket):
        docs = build(socket)
        policy = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
        for p in policy["spec"]["jsonPatches"]:
            value = p["operation"]["value"]
            if isinstance(value, dict) and eg_xds.HTTP_OPTIONS in value:
                value[eg_xds.HTTP_OPTIONS]["http_filters"][0]["typed_config"]["grpc_service"]["envoy_grpc"].pop("authority")
        return docs
    envoy, _, _ = gateway(failover_config(dead, backup.port), without_authority)
    r = envoy.chat("gpt-4o-mini")
    assert r.status_code == 500 and backup.requests == []


@pytest.mark.parametrize("primary_state", ["dead", "answering 503"])
def test_failover_through_render_gateway(gateway, failing_primary, backup, primary_state):
    primary = failing_primary if primary_state == "answering 503" else None
    port = primary.port if primary else free_port()
    config = failover_config(port, backup.port)
    envoy, _, _ = gateway(config, rendered(config))
    _verify_failover(envoy, backup, primary=primary)


# ------------------------------------------------------------------ the guide's providers as they are: FQDNs on 443, TLS

def _tls_guide(backends):
    """examples/openai.yaml, with `backends` providers in priority order (copies of its OpenAI one)."""
    text = (ROOT / "examples" / "openai.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    route = next(d for d in docs if d["kind"] == "AIGatewayRoute")
    provider = [d for d in docs if d["kind"] != "AIGatewayRoute"]
    route["spec"]["rules"][0]["backendRefs"] = []
    out = [route]
    for i in range(backends):
        name = ROUTE if i == 0 else f"{ROUTE}-{i}"
        host = "api.openai.com" if i == 0 else f"backup{i}.openai.example"
        route["spec"]["rules"][0]["backendRefs"].append({"name": name, "priority": i})
        copy_text = yaml.safe_dump_all(provider).replace(ROUTE, name).replace("api.openai.com", host)
        out.extend(d for d in yaml.safe_load_all(copy_text) if d)
    return yaml.safe_dump_all(out)


@pytest.mark.parametrize("backends", [1, 2])
def test_the_guides_tls_providers_render_to_xds_envoy_loads(tmp_path, backends):
    """What `render gateway` makes of the guide itself translates and patches (Programmed),
    keeps Envoy Gateway's TLS and ALPN options, and loads on the real Envoy."""
    config = _tls_guide(backends)
    docs = rendered(config)("/tmp/eg-tls.sock")
    translation = eg_xds.Translation(docs)
    translation.apply_patches()
    cluster = next(c for c in translation.clusters if c["name"] == f"httproute/default/{ROUTE}/rule/0")
    assert len(cluster["transport_socket_matches"]) == backends
    options = cluster["typed_extension_protocol_options"][eg_xds.HTTP_OPTIONS]
    assert "auto_config" in options
    if backends > 1:
        assert options["http_filters"][-1]["name"] == "envoy.filters.http.upstream_codec"
        for i, locality in enumerate(cluster["load_assignment"]["endpoints"]):
            meta = locality["lb_endpoints"][0]["metadata"]["filter_metadata"]
            assert meta["envoy.transport_socket_match"] == {"name": f"{cluster['name']}/tls/{i}"}
            assert meta["aigateway.envoy.io"]["per_route_rule_backend_name"] == f"default/{ROUTE}/rule/0/ref/{i}"
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(translation.bootstrap(listen_port=free_port(), admin_port=free_port())))
    check = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_backend_request_timeout_bounds_each_attempt_through_render_gateway():
    """`timeouts.backendRequest` bounds one attempt and `request` the whole, as `run` routes
    them (per_try_timeout and timeout). On an HTTPRoute rule without its own `retry`, Envoy
    Gateway makes backendRequest the route's timeout instead (processRouteTimeout,
    internal/gatewayapi/route.go), so it has to reach Envoy another way."""
    config = "\n---\n".join([
        backend_yaml("primary", "OpenAI", free_port(), policy="APIKey", key="sk-primary"),
        backend_yaml("backup", "OpenAI", free_port(), policy="APIKey", key="sk-backup"),
        route_yaml(ROUTE, [("gpt-4o-mini", [("primary", 0, None), ("backup", 1, None)], "60s")]).replace(
            "        request: 60s", "        request: 60s\n        backendRequest: 5s")])
    translation = eg_xds.Translation(rendered(config)("/tmp/eg-test.sock"))
    translation.apply_patches()
    action = translation.route_configs[0]["virtual_hosts"][0]["routes"][0]["route"]
    assert (action["timeout"], action["retry_policy"].get("per_try_timeout")) == ("60s", "5s")


# ------------------------------------------------------------------ quotas

QUOTA = f"""apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {{name: budget, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {ROUTE}}}]
  perModelQuotas:
    - modelName: gpt-4o-mini
      quota:
        defaultBucket: {{limit: 500, duration: 1m}}
"""


def test_quota_through_render_gateway(gateway, openai_fake):
    """The rendered rate-limit filter checks the sidecar's embedded rate-limit service over
    the Backend's socket, and the answer's tokens are charged (385 a request, 500 a minute)."""
    config = guide_config(openai_fake.port) + "\n---\n" + QUOTA
    envoy, _, _ = gateway(config, rendered(config))
    statuses = [envoy.chat("gpt-4o-mini").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# ------------------------------------------------------------------ what Envoy Gateway would refuse

def _failover_docs():
    return hand_written_failover(free_port(), free_port())("/tmp/eg-test.sock")


def test_patch_of_a_missing_cluster_is_not_programmed():
    docs = _failover_docs()
    policy = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    missing = copy.deepcopy(policy["spec"]["jsonPatches"][-1])
    missing["name"] = "httproute/default/no-such-route/rule/0"
    policy["spec"]["jsonPatches"].append(missing)
    translation = eg_xds.Translation(docs)
    with pytest.raises(eg_xds.PatchNotProgrammed, match="no-such-route"):
        translation.apply_patches(strict=True)
    condition, status, reason, message = translation.patch_statuses["maas-system/llm-extproc"]
    assert (condition, status, reason) == ("Programmed", False, "ResourceNotFound")
    assert message == f"Unable to find xds resources: {eg_xds.CLUSTER_TYPE}/httproute/default/no-such-route/rule/0"
    # As in Envoy Gateway, the patches that found their resource still applied.
    cluster = next(c for c in translation.clusters if c["name"] == f"httproute/default/{ROUTE}/rule/0")
    assert "http_filters" in cluster["typed_extension_protocol_options"][eg_xds.HTTP_OPTIONS]


def test_patch_that_does_not_apply_is_not_programmed():
    docs = _failover_docs()
    policy = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    # A replace needs the member to exist; a jsonPath that selects nothing is an error.
    policy["spec"]["jsonPatches"] += [
        {"type": eg_xds.CLUSTER_TYPE, "name": f"httproute/default/{ROUTE}/rule/0",
         "operation": {"op": "replace", "path": "/dns_refresh_rate", "value": "5s"}},
        {"type": eg_xds.LISTENER_TYPE, "name": eg_resources.LISTENER,
         "operation": {"op": "add", "jsonPath": "$.default_filter_chain.filters[?(@.name=='no-such-filter')]",
                       "path": "/x", "value": 1}}]
    translation = eg_xds.Translation(docs)
    statuses = translation.apply_patches(strict=False)
    condition, status, reason, message = statuses["maas-system/llm-extproc"]
    assert (condition, status, reason) == ("Programmed", False, "Invalid")
    assert "op=replace path=/dns_refresh_rate" in message and "no jsonPointers were found" in message


def test_patch_leaving_an_any_without_its_type_is_refused():
    """Adding http_filters to a cluster that has no HttpProtocolOptions creates the map entry
    without "@type" (EnsurePathExistsOnAdd): protojson.Unmarshal refuses it."""
    docs = _failover_docs()
    policy = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    policy["spec"]["jsonPatches"] = [{"type": eg_xds.CLUSTER_TYPE, "name": f"httproute/default/{ROUTE}/rule/0", "operation": {
        "op": "add", "path": f"/typed_extension_protocol_options/{eg_xds.HTTP_OPTIONS}/http_filters", "value": []}}]
    translation = eg_xds.Translation(docs)
    with pytest.raises(eg_xds.PatchNotProgrammed, match="without @type"):
        translation.apply_patches()


def test_backend_api_disabled_is_refused():
    with pytest.raises(eg_xds.Rejected, match="enableBackend"):
        eg_xds.Translation(_failover_docs(), enable_backend=False)


def test_patch_policy_disabled_is_not_accepted():
    translation = eg_xds.Translation(_failover_docs(), enable_envoy_patch_policy=False)
    with pytest.raises(eg_xds.PatchNotProgrammed, match="disabled"):
        translation.apply_patches()


def test_unsimulated_field_is_named_not_ignored():
    docs = _failover_docs()
    btp = next(d for d in docs if d["kind"] == "BackendTrafficPolicy")
    btp["spec"]["loadBalancer"] = {"type": "RoundRobin"}
    with pytest.raises(eg_xds.NotSimulated, match="loadBalancer"):
        eg_xds.Translation(docs).apply_patches()


# ------------------------------------------------------------------ shapes, against Envoy Gateway's golden files

def test_names_and_shapes_follow_envoy_gateway():
    translation = eg_xds.Translation(_failover_docs())
    (listener,) = translation.listeners
    assert listener["name"] == "maas-system/envoy-ai-gateway-basic/http"
    assert listener["address"]["socket_address"]["port_value"] == 10080
    assert listener["per_connection_buffer_limit_bytes"] == 34 * 1024 * 1024
    hcm = listener["default_filter_chain"]["filters"][0]["typed_config"]
    router_level, router = hcm["http_filters"]
    assert router_level["name"] == eg_resources.ROUTER_FILTER and router_level["disabled"] is True
    config = router_level["typed_config"]
    assert config["processing_mode"] == {
        "request_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED", "request_trailer_mode": "SEND",
        "response_header_mode": "SEND", "response_body_mode": "STREAMED", "response_trailer_mode": "SKIP"}
    assert "failure_mode_allow" not in config  # fail-closed: false is proto3's default, absent
    assert config["message_timeout"] == "10s"
    assert config["grpc_service"] == {"envoy_grpc": {"cluster_name": eg_resources.EXTPROC_CLUSTER,
                                                     "authority": "llm-extproc.maas-system"}, "timeout": "10s"}
    assert config["metadata_options"] == {"receiving_namespaces": {"untyped": ["io.envoy.ai_gateway"]}}
    (routes,) = translation.route_configs
    (vhost,) = routes["virtual_hosts"]
    names = [r["name"] for r in vhost["routes"]]
    # Header matches sort first; the catch-all (its match defaulted to PathPrefix /) last.
    assert names == [f"httproute/default/{ROUTE}/rule/0/match/0/*",
                     "httproute/maas-system/llm-unknown-model/rule/0/match/0/*"]
    for r in vhost["routes"]:
        assert r["typed_per_filter_config"][eg_resources.ROUTER_FILTER]["config"] == {}
    retry = vhost["routes"][0]["route"]["retry_policy"]
    assert retry["retry_priority"]["typed_config"]["update_frequency"] == 1
    assert retry["retry_on"] == "connect-failure,reset,5xx" and "retriable_status_codes" not in retry
    cluster = next(c for c in translation.clusters if c["name"] == f"httproute/default/{ROUTE}/rule/0")
    assert cluster["type"] == "EDS" and "typed_extension_protocol_options" not in cluster
    (assignment,) = [a for a in translation.endpoints if a["cluster_name"] == cluster["name"]]
    assert [(e["locality"]["region"], e.get("priority", 0)) for e in assignment["endpoints"]] == [
        (f"{cluster['name']}/backend/0", 0), (f"{cluster['name']}/backend/1", 1)]
    extproc = next(c for c in translation.clusters if c["name"] == eg_resources.EXTPROC_CLUSTER)
    assert extproc["typed_extension_protocol_options"][eg_xds.HTTP_OPTIONS]["explicit_http_config"]["http2_protocol_options"]
    (extproc_assignment,) = [a for a in translation.endpoints if a["cluster_name"] == eg_resources.EXTPROC_CLUSTER]
    assert extproc_assignment["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {"pipe": {"path": "/tmp/eg-test.sock"}}


def test_tls_to_a_port_443_provider_validates_on_envoy(tmp_path):
    """The guide's provider as it is: an FQDN on 443 with a BackendTLSPolicy of the system CAs.
    Envoy Gateway then gives the cluster auto_config (ALPN) options and a transport socket
    match; the patch of the upstream filters has to keep them."""
    docs = eg_resources.gateway_resources(ROUTE, [("gpt-4o-mini", [
        ("openai", {"fqdn": {"hostname": "api.openai.com", "port": 443}}, 0, "api.openai.com"),
        ("backup", {"fqdn": {"hostname": "backup.openai.example", "port": 443}}, 1, "backup.openai.example")])],
        "/tmp/eg-test.sock")
    for backend, host in (("openai", "api.openai.com"), ("backup", "backup.openai.example")):
        docs.append({"apiVersion": "gateway.networking.k8s.io/v1alpha3", "kind": "BackendTLSPolicy",
                     "metadata": {"name": f"{backend}-tls", "namespace": "default"},
                     "spec": {"targetRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": backend}],
                              "validation": {"wellKnownCACertificates": "System", "hostname": host}}})
    policy = next(d for d in docs if d["kind"] == "EnvoyPatchPolicy")
    # Here the options exist: add the filters beside auto_config rather than replacing them.
    for p in policy["spec"]["jsonPatches"]:
        if p["operation"]["path"] == "/typed_extension_protocol_options":
            p["operation"]["path"] = f"/typed_extension_protocol_options/{eg_xds.HTTP_OPTIONS}/http_filters"
            p["operation"]["value"] = p["operation"]["value"][eg_xds.HTTP_OPTIONS]["http_filters"]
    translation = eg_xds.Translation(docs)
    translation.apply_patches()
    cluster = next(c for c in translation.clusters if c["name"] == f"httproute/default/{ROUTE}/rule/0")
    assert cluster["cluster_type"]["name"] == "envoy.cluster.dns"
    options = cluster["typed_extension_protocol_options"][eg_xds.HTTP_OPTIONS]
    assert "auto_config" in options and options["http_filters"][-1]["name"] == "envoy.filters.http.upstream_codec"
    assert [m["name"] for m in cluster["transport_socket_matches"]] == [f"{cluster['name']}/tls/0", f"{cluster['name']}/tls/1"]
    meta = cluster["load_assignment"]["endpoints"][1]["lb_endpoints"][0]["metadata"]["filter_metadata"]
    assert meta["envoy.transport_socket_match"] == {"name": f"{cluster['name']}/tls/1"}
    assert meta["aigateway.envoy.io"]["backend_name"] == "backup.default"
    bootstrap = translation.bootstrap(listen_port=free_port(), admin_port=free_port())
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(bootstrap))
    check = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr



def test_rule_level_policies_tls_and_selectors_translate_as_envoy_gateway():
    """The shapes `render gateway` relies on beyond the hand-written set: a BackendTrafficPolicy
    on one rule (sectionName), passive health checks, a Backend's own TLS, a ClientTrafficPolicy
    stream idle timeout, and a namespace selector on the listener."""
    docs = _failover_docs()
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    gateway["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "Selector", "selector": {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["default"]}]}}}
    route = next(d for d in docs if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == ROUTE)
    route["spec"]["rules"][0]["name"] = "gpt-4o-mini"
    docs.append({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "BackendTrafficPolicy",
                 "metadata": {"name": "rule-policy", "namespace": "default"},
                 "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": ROUTE,
                                          "sectionName": "gpt-4o-mini"}],
                          "retry": {"numRetries": 3, "numAttemptsPerPriority": 1,
                                    "retryOn": {"triggers": ["5xx", "retriable-status-codes"], "httpStatusCodes": [429]}},
                          "circuitBreaker": {"maxParallelRetries": 7},
                          "healthCheck": {"passive": {"consecutiveLocalOriginFailures": 3, "maxEjectionPercent": 100,
                                                      "splitExternalLocalOriginErrors": True}}}})
    ctp = next(d for d in docs if d["kind"] == "ClientTrafficPolicy")
    ctp["spec"]["timeout"] = {"http": {"streamIdleTimeout": "300s"}}
    backup = next(d for d in docs if d["kind"] == "Backend" and d["metadata"]["name"] == "backup")
    backup["spec"]["tls"] = {"sni": "backup.example", "insecureSkipVerify": True}
    translation = eg_xds.Translation(docs)
    translation.apply_patches()
    hcm = translation.listeners[0]["default_filter_chain"]["filters"][0]["typed_config"]
    assert hcm["stream_idle_timeout"] == "300s"
    (vhost,) = translation.route_configs[0]["virtual_hosts"]
    action = vhost["routes"][0]["route"]
    # The rule's policy, not the Gateway's; no route idle timeout under the listener's.
    assert action["retry_policy"]["num_retries"] == 3 and action["retry_policy"]["retriable_status_codes"] == [429]
    assert action["timeout"] == "60s" and "idle_timeout" not in action
    cluster = next(c for c in translation.clusters if c["name"] == f"httproute/default/{ROUTE}/rule/0")
    assert cluster["circuit_breakers"] == {"thresholds": [
        {"max_retries": 7, "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024}]}
    assert cluster["outlier_detection"] == {"base_ejection_time": "30s", "interval": "3s", "consecutive_local_origin_failure": 3,
                                            "consecutive_5xx": 5, "always_eject_one_host": False,
                                            "split_external_local_origin_errors": True, "max_ejection_percent": 100}
    # Only the backup is TLS, without verification: its own match, no CA secret, no ALPN options.
    (match,) = cluster["transport_socket_matches"]
    assert match["name"] == f"{cluster['name']}/tls/1"
    assert match["transport_socket"]["typed_config"]["sni"] == "backup.example"
    assert match["transport_socket"]["typed_config"]["common_tls_context"] == {}
    assert translation.secrets == []
    # A route namespace the selector leaves out is not attached.
    gateway["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["selector"]["matchExpressions"][0]["values"] = ["maas-system"]
    (vhost,) = eg_xds.Translation(docs).route_configs[0]["virtual_hosts"]
    assert [r["name"] for r in vhost["routes"]] == ["httproute/maas-system/llm-unknown-model/rule/0/match/0/*"]


def test_mixing_hostname_and_ip_backends_splits_the_rule_into_clusters():
    """Why `render gateway` refuses a rule mixing FQDN and IP Backends: Envoy Gateway gives each
    its own cluster (ir/xds.go NeedsClusterPerSetting), routed by weight, so priorities no longer
    fail over and the patch of `httproute/<ns>/<route>/rule/<i>` finds no cluster."""
    docs = eg_resources.gateway_resources(ROUTE, [("gpt-4o-mini", [
        ("primary", {"ip": {"address": "127.0.0.1", "port": 4001}}, 0, "primary.example"),
        ("backup", {"fqdn": {"hostname": "localhost", "port": 4002}}, 1, "localhost")])], "/tmp/eg-test.sock")
    translation = eg_xds.Translation(docs)
    rule = f"httproute/default/{ROUTE}/rule/0"
    assert {c["name"] for c in translation.clusters} >= {f"{rule}/backend/0", f"{rule}/backend/1"}
    assert rule not in {c["name"] for c in translation.clusters}
    action = translation.route_configs[0]["virtual_hosts"][0]["routes"][0]["route"]
    assert [c["name"] for c in action["weighted_clusters"]["clusters"]] == [f"{rule}/backend/0", f"{rule}/backend/1"]
    with pytest.raises(eg_xds.PatchNotProgrammed, match="Unable to find xds resources"):
        translation.apply_patches()


# ------------------------------------------------------------------ JSONPath

# Envoy Gateway's own cases for jsonPath to pointers (internal/utils/jsonpatch/jsonpathtopointer_test.go).
NESTED = {"a": "b", "v": [{"x": "test1", "y": "hello"}, {"x": "test2", "y": "world"}],
          "f": {"w": "hi", "q": "welcome", "y": "ciao"}, "y": "c"}
ROUTES = {"name": "default/eg/http", "virtual_hosts": [
    {"name": "default/eg/http/www_test_com", "domains": ["www.test.com"], "routes": [{
        "name": "httproute/default/backend/rule/0/match/0/www_test_com", "match": {"prefix": "/"},
        "route": {"cluster": "httproute/default/backend/rule/0", "upgrade_configs": [{"upgrade_type": "websocket"}]}}]},
    {"name": "default/eg/http/www_example_com", "domains": ["www.example.com"], "routes": [{
        "name": "httproute/default/backend/rule/1/match/1/www_example_com", "match": {"prefix": "/"},
        "route": {"cluster": "httproute/default/backend/rule/1", "upgrade_configs": [{"upgrade_type": "websocket"}]}}]}],
    "ignore_port_in_host_matching": True}
ESCAPING = {"values": [{"name": "test1", "dotted.key": "Hello"}, {"name": "test2", "dotted.key": "there"}]}


@pytest.mark.parametrize("doc, json_path, path, expected", [
    (NESTED, "$.xyz", "", []),
    (NESTED, "$.a", "", ["/a"]),
    (NESTED, "$.v[?(@.x=='test2')]", "", ["/v/1"]),
    (NESTED, "..v[?(@.x=='test1')].y", "", ["/v/0/y"]),
    (NESTED, "$.v[*].y", "", ["/v/0/y", "/v/1/y"]),
    (NESTED, "$.v[?(@.x=='UNKNOWN')].y", "", []),
    (NESTED, ".a", "", ["/a"]),
    (NESTED, "a", "", ["/a"]),
    (NESTED, "f.w", "", ["/f/w"]),
    (NESTED, "f.*", "", ["/f/w", "/f/q", "/f/y"]),
    (NESTED, "v.*", "", ["/v/0", "/v/1"]),
    (NESTED, "$..y", "", ["/f/y", "/v/0/y", "/v/1/y", "/y"]),
    (NESTED, "..y", "", ["/f/y", "/v/0/y", "/v/1/y", "/y"]),
    (ROUTES, "..routes[?(@.name =~ 'www_example_com')]", "", ["/virtual_hosts/1/routes/0"]),
    (ROUTES, "..routes[?(@.name =~ 'www_test_com')]", "", ["/virtual_hosts/0/routes/0"]),
    (ROUTES, "..routes[?(@.name =~ 'www')]", "", ["/virtual_hosts/0/routes/0", "/virtual_hosts/1/routes/0"]),
    (ROUTES, "..routes[?(@.name =~ 'www')].route.cluster", "",
     ["/virtual_hosts/0/routes/0/route/cluster", "/virtual_hosts/1/routes/0/route/cluster"]),
    (ROUTES, "..routes[?(@.name =~ 'www')]['route']['cluster']", "",
     ["/virtual_hosts/0/routes/0/route/cluster", "/virtual_hosts/1/routes/0/route/cluster"]),
    (ROUTES, "..routes[?(@.name=='httproute/default/backend/rule/1/match/1/www_example_com')].route.upgrade_configs", "",
     ["/virtual_hosts/1/routes/0/route/upgrade_configs"]),
    (ROUTES, "..routes[?(@.name =~ 'www')]", "/abc", ["/virtual_hosts/0/routes/0/abc", "/virtual_hosts/1/routes/0/abc"]),
    (ROUTES, "..routes[?(@.name =~ 'www')]", "abc", ["/virtual_hosts/0/routes/0/abc", "/virtual_hosts/1/routes/0/abc"]),
    (ROUTES, "..routes[?(@.name =~ 'www')]", "/", ["/virtual_hosts/0/routes/0/", "/virtual_hosts/1/routes/0/"]),
    (ESCAPING, "$.values[?(@.name =~ 'test2')]", "dotted.key", ["/values/1/dotted.key"]),
])
def test_json_path_to_pointers_as_envoy_gateway(doc, json_path, path, expected):
    assert sorted(eg_xds.json_path_to_pointers(doc, json_path, path)) == sorted(expected)
