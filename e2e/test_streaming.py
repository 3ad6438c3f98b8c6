"""Streaming: chunk by chunk, usage metered even when the client did not ask for it,
and the client sees exactly what it asked for."""

import json
import threading

import httpx
import pytest

import fakes

from harness import backend_yaml, route_yaml


@pytest.fixture
def gw(gateway_factory, openai_fake, azure_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("azure", "AzureOpenAI", azure_fake.port, policy="AzureAPIKey", key="azure-secret-key",
                     version="2025-01-01-preview"),
        route_yaml("route", [("gpt-5-nano", [("openai", 0, None)]), ("azure-model", [("azure", 0, None)])]),
    )


def events(text):
    return [e[len("data: "):] for e in text.split("\n\n") if e.startswith("data: ")]


def stream(gw, model, **extra):
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "Hello!"}], **extra}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_first_chunk_arrives_before_the_provider_sends_the_last(gw, openai_fake, encoding):
    openai_fake.stream_gate = threading.Event()
    body = {"model": "gpt-5-nano", "stream": True, "messages": [{"role": "user", "content": "Hello!"}]}
    headers = {"accept-encoding": encoding}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = next(lines)
        # The provider is still holding back every later event.
        assert not openai_fake.stream_gate.is_set()
        assert first.startswith("data: ") and json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        openai_fake.stream_gate.set()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"


def test_usage_is_metered_but_not_shown_when_not_asked(gw, openai_fake):
    r = stream(gw, "gpt-5-nano")
    assert r.status_code == 200
    # The gateway asked the provider for usage on the client's behalf...
    assert openai_fake.last()["body"]["stream_options"] == {"include_usage": True}
    chunks = events(r.text)
    assert chunks[-1] == "[DONE]"
    # ...and the client sees no usage chunk and no "usage": null fields.
    assert all("usage" not in json.loads(c) for c in chunks[:-1])
    assert "usage" not in r.text
    # Otherwise exactly the recorded events.
    recorded = [json.loads(e[len("data: "):]) for e in fakes.CHAT_STREAM_WITH_USAGE if not e.startswith("data: [DONE]")]
    expected = [{k: v for k, v in e.items() if k != "usage"} for e in recorded if e["choices"]]
    assert [json.loads(c) for c in chunks[:-1]] == expected
    # The recording's usage chunk: prompt 12, completion 100.
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 12
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 100


def test_usage_is_shown_when_asked(gw, openai_fake):
    r = stream(gw, "gpt-5-nano", stream_options={"include_usage": True})
    chunks = [json.loads(c) for c in events(r.text)[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 112
    assert all("usage" in c for c in chunks)  # exactly as OpenAI sends it
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 100


def test_gzip_stream_is_decoded_for_metering(gw, openai_fake):
    body = {"model": "gpt-5-nano", "stream": True, "messages": [{"role": "user", "content": "Hello!"}]}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"accept-encoding": "gzip"}, timeout=30)
    assert r.status_code == 200
    assert "usage" not in r.text and r.text.rstrip().endswith("data: [DONE]")
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 100


def test_gzip_unary_usage(gw, openai_fake):
    body = {"model": "gpt-5-nano", "messages": [{"role": "user", "content": "Hello!"}]}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"accept-encoding": "gzip"}, timeout=30)
    assert r.status_code == 200
    assert r.headers.get("content-encoding") == "gzip"  # passed through untouched
    assert r.json()["usage"]["total_tokens"] > 0
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == r.json()["usage"]["prompt_tokens"]


def test_azure_stream_with_filter_results(gw, azure_fake):
    r = stream(gw, "azure-model")
    assert r.status_code == 200
    chunks = events(r.text)
    # Azure's first chunk carries only prompt_filter_results: it is kept.
    assert json.loads(chunks[0])["prompt_filter_results"]
    assert chunks[-1] == "[DONE]"
    assert azure_fake.last()["body"]["stream_options"] == {"include_usage": True}


def test_completions_stream_usage_hidden_and_metered(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("babbage-002", [("openai", 0, None)])]),
    )
    body = {"model": "babbage-002", "prompt": "def fib(n):", "stream": True, "max_tokens": 25}
    r = httpx.post(gw.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 200
    assert openai_fake.last()["path"] == "/v1/completions"
    assert openai_fake.last()["body"]["stream_options"] == {"include_usage": True}
    chunks = events(r.text)
    assert chunks[-1] == "[DONE]" and "usage" not in r.text
    recorded = [json.loads(e[6:]) for e in fakes.COMPLETION_STREAM_WITH_USAGE if not e.startswith("data: [DONE]")]
    assert "".join(json.loads(c)["choices"][0]["text"] for c in chunks[:-1]) == \
        "".join(e["choices"][0]["text"] for e in recorded if e["choices"])
    usage = [e["usage"] for e in recorded if e.get("usage")][0]
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output", gen_ai_operation_name="text_completion") \
        == usage["completion_tokens"]
