"""Routing by the body's model to OpenAI and Azure OpenAI, and modelNameOverride."""

import httpx
import pytest

from harness import backend_yaml, route_yaml


@pytest.fixture
def two_providers(gateway_factory, openai_fake, azure_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("azure", "AzureOpenAI", azure_fake.port, policy="AzureAPIKey", key="azure-secret-key",
                     version="2025-01-01-preview"),
        route_yaml("route", [
            ("gpt-4o-mini", [("openai", 0, None)]),
            ("gpt-5-nano", [("azure", 0, None)]),
            ("fast", [("openai", 0, "gpt-4.1-nano")]),
            ("azure-fast", [("azure", 0, "my-deployment")]),
            ("text-embedding-3-small", [("openai", 0, None)]),
            ("azure-embed", [("azure", 0, None)]),
            ("gpt-3.5-turbo-instruct", [("openai", 0, None)]),
        ]),
    )


def test_two_models_reach_two_providers(two_providers, openai_fake, azure_fake):
    r = two_providers.chat("gpt-4o-mini", headers={"authorization": "Bearer client"})
    assert r.status_code == 200, r.text
    assert openai_fake.last()["body"]["model"] == "gpt-4o-mini"
    r = two_providers.chat("gpt-5-nano", headers={"authorization": "Bearer client"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["content_filter_results"] == {}  # the recorded Azure answer
    seen = azure_fake.last()
    assert seen["path"] == "/openai/deployments/gpt-5-nano/chat/completions?api-version=2025-01-01-preview"
    assert seen["headers"]["api-key"] == "azure-secret-key"
    assert "authorization" not in seen["headers"]
    assert len(openai_fake.requests) == 1 and len(azure_fake.requests) == 1
    assert openai_fake.rejected == [] and azure_fake.rejected == []


def test_model_name_override_reaches_only_that_backend(two_providers, openai_fake, azure_fake):
    r = two_providers.chat("fast")
    assert r.status_code == 200, r.text
    assert openai_fake.last()["body"]["model"] == "gpt-4.1-nano"
    assert openai_fake.last()["body"]["messages"] == [{"role": "user", "content": "Hello!"}]
    r = two_providers.chat("azure-fast")
    assert r.status_code == 200, r.text
    assert azure_fake.last()["path"].startswith("/openai/deployments/my-deployment/chat/completions?")
    assert azure_fake.last()["body"]["model"] == "my-deployment"
    # Metrics keep both names: what the client asked for, and what was sent.
    assert two_providers.metric("gen_ai_client_token_usage_count", gen_ai_original_model="fast",
                                gen_ai_request_model="gpt-4.1-nano", gen_ai_token_type="input") == 1


def test_embeddings_and_completions(two_providers, openai_fake, azure_fake):
    r = httpx.post(two_providers.url + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}, timeout=30)
    assert r.status_code == 200, r.text
    assert openai_fake.last()["path"] == "/v1/embeddings"
    assert len(r.json()["data"][0]["embedding"]) > 0
    r = httpx.post(two_providers.url + "/v1/embeddings", json={"model": "azure-embed", "input": ["a", "b"]}, timeout=30)
    assert r.status_code == 200, r.text
    assert azure_fake.last()["path"] == "/openai/deployments/azure-embed/embeddings?api-version=2025-01-01-preview"
    r = httpx.post(two_providers.url + "/v1/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}, timeout=30)
    assert r.status_code == 200, r.text
    assert openai_fake.last()["path"] == "/v1/completions"
    assert r.json()["usage"]["total_tokens"] > 0
    assert two_providers.metric("gen_ai_client_token_usage_count", gen_ai_operation_name="embeddings", gen_ai_token_type="input") == 2


def test_models_are_listed_by_the_gateway(two_providers):
    r = httpx.get(two_providers.url + "/v1/models", timeout=10)
    assert r.status_code == 200
    ids = {m["id"] for m in r.json()["data"]}
    assert {"gpt-4o-mini", "gpt-5-nano", "fast", "azure-fast"} <= ids
    assert all(m["object"] == "model" for m in r.json()["data"])
