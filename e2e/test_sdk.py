"""The official OpenAI Python SDK, unchanged, against the gateway."""

import json

import openai
import pytest

import fakes
from harness import backend_yaml, route_yaml


@pytest.fixture
def client(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-5-nano", [("openai", 0, None)]), ("text-embedding-3-small", [("openai", 0, None)])]),
    )
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-not-a-provider-key", max_retries=0)


def test_unary(client, openai_fake):
    completion = client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "Hello!"}])
    assert completion.choices[0].message.content
    assert completion.usage.total_tokens > 0
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-openai-secret"


def test_streaming(client, openai_fake):
    stream = client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "Hello!"}], stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks)
    # The gateway asked for usage on the client's behalf, so the provider answered with
    # its usage recording; the client gets that recording's events minus the usage chunk.
    recorded = [json.loads(e[6:]) for e in fakes.CHAT_STREAM_WITH_USAGE if not e.startswith("data: [DONE]")]
    assert len(chunks) == len([e for e in recorded if e["choices"]])
    assert [c.id for c in chunks] == [e["id"] for e in recorded if e["choices"]]


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "Hello!"}], stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.total_tokens == 112


def test_embeddings_and_models(client):
    e = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(e.data[0].embedding) > 0
    assert {m.id for m in client.models.list()} == {"gpt-5-nano", "text-embedding-3-small"}


def test_errors_are_sdk_exceptions(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
