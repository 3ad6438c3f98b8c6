"""Every bad input gets a precise status and an OpenAI-style JSON error, through the
real Envoy; nothing reaches a provider that should not."""

import json
import os
import signal
import subprocess
import tempfile
import time

import httpx
import pytest

from fakes import free_port
from harness import BIN, ROOT, backend_yaml, route_yaml, write_config


def assert_openai_error(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert "type" in error and "code" in error
    return error


@pytest.fixture
def gw(gateway_factory, openai_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("azure-ad", "AzureOpenAI", openai_fake.port, policy="AzureCredentials", version="2025-01-01-preview"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)]), ("needs-entra", [("azure-ad", 0, None)])]),
        extra_args=["--max-body-bytes", "4096"],
        # Entra ID unreachable (a closed loopback port): azure-ad never gets a token.
        env={"AZURE_AUTHORITY_HOST": "http://127.0.0.1:9"},
    )


def post(gw, body, path="/v1/chat/completions", headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gw.url + path, content=data, headers={"content-type": "application/json", **(headers or {})}, timeout=30)


@pytest.mark.parametrize("body,fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2, 3]", "JSON object"),
    (b"\"a string\"", "JSON object"),
    (b"", "empty"),
    (b"{\"messages\": []}", "no `model`"),
    (b"{\"model\": 42}", "must be a string"),
    (b"{\"model\": \"gpt\\r\\nx-evil: 1\"}", "printable ASCII"),
    (b"{\"model\": \"gpt-4o-mini\", \"x\": " + b"[" * 500 + b"]" * 500 + b"}", "nested deeper"),
])
def test_bad_bodies_are_400(gw, openai_fake, body, fragment):
    error = assert_openai_error(post(gw, body), 400)
    assert fragment in error["message"]
    assert openai_fake.requests == []


def test_unknown_model_is_404_naming_it_and_the_known_ones(gw, openai_fake):
    error = assert_openai_error(post(gw, {"model": "gpt-9", "messages": []}), 404)
    assert "gpt-9" in error["message"] and "gpt-4o-mini" in error["message"]
    assert error["code"] == "model_not_found"
    assert openai_fake.requests == []


def test_unsupported_path_is_404_and_wrong_method_405(gw):
    error = assert_openai_error(post(gw, {"model": "gpt-4o-mini"}, path="/v1/images/edits"), 404)
    assert "/v1/images/edits" in error["message"]
    assert_openai_error(httpx.get(gw.url + "/v1/chat/completions", timeout=10), 405)
    assert_openai_error(httpx.delete(gw.url + "/v1/models", timeout=10), 405)


def test_body_over_the_limit_is_413(gw, openai_fake):
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]}
    error = assert_openai_error(post(gw, big), 413)
    assert "4096" in error["message"]

    # Chunked, without content-length: the sidecar measures the buffered body.
    def chunks():
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]
    r = httpx.post(gw.url + "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert_openai_error(r, 413)
    assert openai_fake.requests == []


def test_backend_whose_credential_cannot_be_used_is_503_naming_it(gw, openai_fake):
    error = assert_openai_error(post(gw, {"model": "needs-entra", "messages": []}), 503)
    assert "azure-ad.default" in error["message"] and "AzureCredentials" in error["message"]
    assert openai_fake.requests == []
    assert gw.wait_in_flight_zero()


def test_keys_never_appear_in_errors_or_logs(gw, openai_fake):
    openai_fake.key = "sk-something-else"  # the provider now refuses our key: 401
    r = post(gw, {"model": "gpt-4o-mini", "messages": []}, headers={"authorization": "Bearer sk-client-secret"})
    assert r.status_code == 401
    assert "sk-openai-secret" not in r.text and "sk-client-secret" not in r.text
    log = gw.read_log()
    assert "sk-openai-secret" not in log and "sk-client-secret" not in log
    assert "sk-openai-secret" not in httpx.get(gw.admin + "/metrics").text


def test_sidecar_unreachable_fails_closed_with_json(tmp_path, openai_fake):
    """`serve` and `render envoy` on their own: kill the sidecar, Envoy answers 503 JSON."""
    config = write_config(tmp_path, backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                          route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    sock = tmp_path / "extproc.sock"
    port, admin, envoy_admin = free_port(), free_port(), free_port()
    xds = tmp_path / "xds"
    sidecar = subprocess.Popen([str(BIN), "serve", "--config", str(config), "--listen", str(sock), "--admin", f"127.0.0.1:{admin}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bootstrap = subprocess.run([str(BIN), "render", "envoy", "--config", str(config), "--sidecar", str(sock), "--xds-dir", str(xds),
                                "--port", str(port), "--envoy-admin-port", str(envoy_admin)], capture_output=True, text=True, check=True)
    (tmp_path / "envoy.json").write_text(bootstrap.stdout)
    envoy = subprocess.Popen([str(ROOT / ".venv" / "bin" / "envoy"), "-c", str(tmp_path / "envoy.json"), "--disable-hot-restart",
                              "-l", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        deadline = time.time() + 20
        while True:
            try:
                r = httpx.post(url, json=body, timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "gateway did not come up"
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{admin}/readyz").status_code == 200
        sidecar.send_signal(signal.SIGKILL)
        sidecar.wait()
        before = len(openai_fake.requests)
        r = httpx.post(url, json=body, headers={"authorization": "Bearer client"}, timeout=10)
        error = assert_openai_error(r, 503)
        assert error["code"] == "processor_unavailable"
        assert len(openai_fake.requests) == before  # nothing passed through unauthenticated
    finally:
        for p in (sidecar, envoy):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_model_outside_a_regex_rule_gets_envoys_404_naming_it(gateway_factory, openai_fake):
    regex_route = """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r, namespace: default}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, type: RegularExpression, value: "gpt-.*"}]}]
      backendRefs: [{name: openai}]
    - matches: [{headers: [{name: x-ai-eg-model, value: exact-model}]}]
      backendRefs: [{name: openai}]
"""
    gw = gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"), regex_route)
    assert gw.chat("gpt-4.1").status_code == 200
    error = assert_openai_error(gw.chat("claude-x"), 404)
    assert "claude-x" in error["message"] and "exact-model" in error["message"]
    assert error["code"] == "model_not_found"
    assert len(openai_fake.requests) == 1
    assert gw.wait_in_flight_zero()


def test_error_shapes_follow_the_clients_api_not_the_providers_path(gateway_factory, openai_fake):
    """An OpenAI client of a Claude backend gets OpenAI errors, even from Envoy after the
    path moved to `/v1/messages`; an Anthropic client gets Anthropic errors on every
    Messages path, the sidecar's own 404 and 405 included."""
    gw = gateway_factory(
        backend_yaml("claude", "Anthropic", free_port(), policy="AnthropicAPIKey", key="sk-ant"),
        route_yaml("route", [("claude", [("claude", 0, None)])]),
    )
    # The backend is down: Envoy answers 503 itself, after the sidecar moved the path.
    r = post(gw, {"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(r, 503)
    assert "type" not in r.json() or r.json()["type"] != "error"
    r = post(gw, {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
             path="/v1/messages")
    assert r.status_code == 503 and r.json()["type"] == "error", r.text
    for method, path, status in [("GET", "/v1/messages", 405), ("POST", "/v1/messages/batches", 404),
                                 ("POST", "/anthropic/v1/complete", 404)]:
        r = httpx.request(method, gw.url + path, json={"model": "claude"}, timeout=10)
        assert r.status_code == status, (path, r.text)
        body = r.json()
        assert body["type"] == "error" and body["error"]["message"], (path, body)
