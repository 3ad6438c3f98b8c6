"""A stream the provider ends early (no `[DONE]`, no `message_stop`, no finish reason)
ends for the client with an error event, on pass-through routes as on translated ones,
so that an SDK raises instead of taking half an answer for a whole one. Everything the
provider did send passes unchanged."""

import json

import anthropic
import httpx
import openai
import pytest

import fakes
from harness import backend_yaml, route_yaml
from providers import recorded

CUT = "the provider's stream ended before the answer was finished"


@pytest.fixture
def gw(gateway_factory, openai_fake, anthropic_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [("gpt-5-nano", [("openai", 0, None)]), ("claude", [("anthropic", 0, None)])]),
    )


def test_openai_sdk_raises_on_a_cut_passthrough_stream(gw, openai_fake):
    openai_fake.end_stream_after = 1  # the role; the gateway asked for usage, so the recorded usage stream answers
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    chunks = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(model="gpt-5-nano", stream=True,
                                                    messages=[{"role": "user", "content": "Hello!"}]):
            chunks.append(chunk)
    assert CUT in str(e.value)
    assert len(chunks) == 1 and chunks[0].choices[0].delta.role == "assistant"
    # Metered as the error the client was told of, not as a success.
    metrics = httpx.get(gw.admin + "/metrics", timeout=5).text
    counted = [line for line in metrics.splitlines()
               if line.startswith("gen_ai_server_request_duration_seconds_count{")]
    assert any('error_type="stream_cut"' in line for line in counted), counted
    assert not any('error_type=""' in line for line in counted), counted


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_what_the_provider_sent_passes_unchanged_before_the_error_event(gw, openai_fake, encoding):
    openai_fake.end_stream_after = 1
    body = {"model": "gpt-5-nano", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Hello!"}]}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"accept-encoding": encoding}, timeout=30)
    assert r.status_code == 200
    sent = "".join(fakes.CHAT_STREAM_WITH_USAGE[:1])
    assert r.text.startswith(sent)
    error = r.text[len(sent):]
    assert error.startswith("data: ") and error.endswith("\n\n")
    assert json.loads(error[len("data: "):])["error"]["message"] == CUT
    # A whole stream gets no such event.
    openai_fake.end_stream_after = None
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"accept-encoding": encoding}, timeout=30)
    assert r.text == "".join(fakes.CHAT_STREAM_WITH_USAGE)


def test_anthropic_sdk_raises_on_a_cut_messages_stream(gw, anthropic_fake):
    anthropic_fake.end_stream_after = 3  # message_start, content_block_start, one delta
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-client-key", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        with client.messages.stream(model="claude", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]) as s:
            for _ in s:
                pass
    assert CUT in str(e.value)
    raw = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                     json={"model": "claude", "max_tokens": 100, "stream": True,
                           "messages": [{"role": "user", "content": "Hi"}]}, timeout=30).text
    body = recorded("anthropic/messages-stream-text.json")["response"]["body"]
    sent = "".join(fakes._sse_events(body)[:3])
    assert raw.startswith(sent)
    tail = raw[len(sent):]
    assert tail.startswith("event: error\ndata: ")
    assert json.loads(tail.split("data: ", 1)[1])["error"]["message"] == CUT
