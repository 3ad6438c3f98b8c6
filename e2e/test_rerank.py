"""Cohere's rerank through the `Cohere` schema, on `/cohere/v2/rerank` and `/v1/rerank`:
passed to Cohere's `/v2/rerank` with the provider key, metered from `meta.tokens`."""

import httpx
import pytest

from harness import backend_yaml, route_yaml
from providers import CohereFake

DOCUMENTS = ["Carson City is the capital city of Nevada.", "Washington, D.C. is the capital of the United States.",
             "Capital punishment has existed in the United States since before it was a country."]


@pytest.fixture
def cohere_fake():
    fake = CohereFake(key="cohere-provider-key")
    yield fake
    fake.stop()


@pytest.fixture
def gw(gateway_factory, cohere_fake, openai_fake):
    return gateway_factory(
        backend_yaml("cohere", "Cohere", cohere_fake.port, policy="APIKey", key="cohere-provider-key"),
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("rerank-v3.5", [("cohere", 0, None)]), ("my-rerank", [("cohere", 0, "rerank-v3.5")]),
                             ("gpt-4.1", [("openai", 0, None)])]),
    )


@pytest.mark.parametrize("path", ["/cohere/v2/rerank", "/v1/rerank"])
def test_rerank_reaches_cohere_and_is_metered(gw, cohere_fake, path):
    body = {"model": "rerank-v3.5", "query": "What is the capital of the United States?", "documents": DOCUMENTS,
            "top_n": 2}
    r = httpx.post(gw.url + path, json=body, headers={"authorization": "Bearer client-key"}, timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert len(answer["results"]) == 2 and answer["results"][0]["index"] == 1
    seen = cohere_fake.last()
    assert seen["path"] == "/v2/rerank" and seen["headers"]["authorization"] == "Bearer cohere-provider-key"
    assert seen["body"] == body
    tokens = answer["meta"]["tokens"]["input_tokens"]
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_operation_name="rerank", gen_ai_provider_name="cohere",
                     gen_ai_token_type="input") == tokens


def test_override_errors_and_backends_that_cannot_rerank(gw, cohere_fake):
    r = httpx.post(gw.url + "/v1/rerank", json={"model": "my-rerank", "query": "q", "documents": ["a"]}, timeout=30)
    assert r.status_code == 200 and cohere_fake.last()["body"]["model"] == "rerank-v3.5"
    # Cohere's own error passes as Cohere wrote it.
    r = httpx.post(gw.url + "/v1/rerank", json={"model": "rerank-v3.5", "query": "q"}, timeout=30)
    assert r.status_code == 400 and r.json() == {"message": "invalid request: documents is required"}
    r = httpx.post(gw.url + "/v1/rerank", json={"model": "gpt-4.1", "query": "q", "documents": ["a"]}, timeout=30)
    assert r.status_code == 422 and "does not serve /v1/rerank" in r.json()["error"]["message"]
