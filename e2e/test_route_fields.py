"""AIGatewayRoute fields on every API: `hostnames` (Envoy routes on the Host, `/v1/models`
lists a route's models only on its hosts), `modelsOwnedBy` and `modelsCreatedAt` in both
model lists, and `headerMutation` / `bodyMutation` on APIs beyond chat."""

import httpx
import openai
import pytest

from fakes import FakeProvider
from harness import backend_yaml

ROUTES = """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: internal, namespace: default}
spec:
  hostnames: [api.example.com, "*.corp.example"]
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-internal}]}]
      modelsOwnedBy: Example Corp
      modelsCreatedAt: "2025-04-14T00:00:00Z"
      backendRefs: [{name: openai}]
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-shared}]}]
      backendRefs: [{name: openai}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: public, namespace: default}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-public}]}]
      backendRefs:
        - name: openai
          headerMutation: {set: [{name: x-team, value: search}], remove: [x-drop-me]}
          bodyMutation: {set: [{path: service_tier, value: '"flex"'}], remove: [user]}
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-shared}]}]
      backendRefs: [{name: other}]
    - matches: [{headers: [{name: x-ai-eg-model, value: whisper-1}]}]
      backendRefs:
        - name: openai
          bodyMutation: {set: [{path: language, value: '"en"'}, {path: temperature, value: "0"}], remove: [prompt]}
"""


@pytest.fixture
def other_fake():
    fake = FakeProvider(kind="openai", key="sk-other")
    yield fake
    fake.stop()


@pytest.fixture
def gw(gateway_factory, openai_fake, other_fake):
    return gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                           backend_yaml("other", "OpenAI", other_fake.port, policy="APIKey", key="sk-other"), ROUTES)


def models(gw, host, path="/v1/models"):
    r = httpx.get(gw.url + path, headers={"host": host}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_hostnames_decide_which_models_a_host_sees_and_reaches(gw, openai_fake):
    listed = {m["id"]: m for m in models(gw, "api.example.com")}
    assert set(listed) == {"gpt-internal", "gpt-public", "gpt-shared", "whisper-1"}
    assert listed["gpt-internal"]["owned_by"] == "Example Corp" and listed["gpt-internal"]["created"] == 1744588800
    assert {m["id"] for m in models(gw, "team.corp.example:8443")} == {"gpt-internal", "gpt-public", "gpt-shared", "whisper-1"}
    assert {m["id"] for m in models(gw, "elsewhere.test")} == {"gpt-public", "gpt-shared", "whisper-1"}
    anthropic_listed = {m["id"]: m for m in models(gw, "api.example.com", "/anthropic/v1/models")}
    assert anthropic_listed["gpt-internal"]["created_at"] == "2025-04-14T00:00:00Z"

    body = {"model": "gpt-internal", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"host": "elsewhere.test"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert openai_fake.requests == []
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"host": "api.example.com:1975"}, timeout=10)
    assert r.status_code == 200, r.text
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"host": "a.b.corp.example"}, timeout=10)
    assert r.status_code == 200, r.text


def test_envoy_routes_one_model_by_host(gw, openai_fake, other_fake):
    """The same model on a route with hostnames and on one without: Envoy picks by Host."""
    body = {"model": "gpt-shared", "messages": [{"role": "user", "content": "hi"}]}
    for host, fake in [("api.example.com", openai_fake), ("elsewhere.test", other_fake), ("x.corp.example:1", openai_fake)]:
        before = (len(openai_fake.requests), len(other_fake.requests))
        r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"host": host}, timeout=10)
        assert r.status_code == 200, (host, r.text)
        after = (len(openai_fake.requests), len(other_fake.requests))
        assert after[0] - before[0] == (fake is openai_fake) and after[1] - before[1] == (fake is other_fake), host


def test_mutations_apply_to_the_responses_api_too(gw, openai_fake):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    client.responses.create(model="gpt-public", input="Hi", user="u-1", extra_headers={"x-drop-me": "1"})
    seen = openai_fake.last()
    assert seen["headers"]["x-team"] == "search" and "x-drop-me" not in seen["headers"]
    assert seen["body"]["service_tier"] == "flex" and "user" not in seen["body"]


def test_body_mutation_edits_the_fields_of_an_upload_form(gw, openai_fake):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    audio = b"RIFF" + bytes(range(256)) * 8 + b"WAVE"
    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), prompt="drop me", language="fr")
    form = openai_fake.last()["body"]
    assert form["model"] == "whisper-1" and form["language"] == "en" and form["temperature"] == "0"
    assert "prompt" not in form and form["file"] == {"filename": "a.wav", "size": len(audio)}
