"""OpenAI clients reaching Anthropic through the gateway: the official openai SDK against
the real Envoy, the real sidecar and a fake Anthropic that checks what Anthropic checks.
Expectations come from the recorded Anthropic answers the fake replays."""

import json

import openai
import pytest

from harness import backend_yaml, route_yaml
from providers import recorded


def sse_payloads(body):
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


@pytest.fixture
def client(gateway_factory, anthropic_fake):
    gw = gateway_factory(
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [("claude", [("anthropic", 0, "claude-3-opus-20240229")])]),
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0)
    client.gateway = gw
    return client


WEATHER_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]


def test_unary_text_usage_and_request_shape(client, anthropic_fake):
    answer = recorded("anthropic/messages-text.json")["response"]["body"]
    c = client.chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}],
        stop=["END"], stream_options=None)
    assert c.choices[0].message.content == "".join(b["text"] for b in answer["content"] if b["type"] == "text")
    assert c.choices[0].finish_reason == "stop"
    assert c.id == answer["id"] and c.model == answer["model"]
    u = answer["usage"]
    assert c.usage.prompt_tokens == u["input_tokens"] + u.get("cache_read_input_tokens", 0) + u.get("cache_creation_input_tokens", 0)
    assert c.usage.completion_tokens == u["output_tokens"]
    sent = anthropic_fake.last()
    assert sent["headers"]["x-api-key"] == "sk-ant-provider-key"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]
    assert sent["body"]["model"] == "claude-3-opus-20240229"
    assert sent["body"]["system"] == [{"type": "text", "text": "be brief"}]
    assert sent["body"]["stop_sequences"] == ["END"]
    assert isinstance(sent["body"]["max_tokens"], int)


def test_unary_parallel_tool_calls(client):
    answer = recorded("anthropic/messages-tool-use.json")["response"]["body"]
    c = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "weather and time?"}],
                                       tools=WEATHER_TOOLS)
    uses = [b for b in answer["content"] if b["type"] == "tool_use"]
    calls = c.choices[0].message.tool_calls
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in calls] == \
        [(u["id"], u["name"], u["input"]) for u in uses]
    assert c.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("chunk_size", [0, 23])
def test_stream_with_tool_calls_and_usage(client, anthropic_fake, chunk_size):
    anthropic_fake.chunk_size = chunk_size  # 23: events cut at arbitrary bytes
    events = sse_payloads(recorded("anthropic/messages-stream-tool-use.json")["response"]["body"])
    stream = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "weather?"}],
                                            tools=WEATHER_TOOLS, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    calls = {}
    for c in chunks:
        for t in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if t.index not in calls:
                assert t.id and t.function.name, "a tool call's first delta carries its id and name"
                calls[t.index] = [t.id, t.function.name, ""]
            calls[t.index][2] += t.function.arguments or ""
    starts = [e for e in events if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"]
    for i, start in enumerate(starts):
        fragments = "".join(e["delta"]["partial_json"] for e in events
                            if e["type"] == "content_block_delta" and e["index"] == start["index"]
                            and e["delta"]["type"] == "input_json_delta")
        assert calls[i][:2] == [start["content_block"]["id"], start["content_block"]["name"]]
        assert json.loads(calls[i][2]) == json.loads(fragments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    delta_usage = next(e["usage"] for e in events if e["type"] == "message_delta")
    assert chunks[-1].usage.completion_tokens == delta_usage["output_tokens"]
    assert "stream_options" not in anthropic_fake.last()["body"]


def test_stream_without_usage_request_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_gzip_answers_are_decoded_unary_streamed_and_on_errors(client, anthropic_fake):
    """A compressed answer is decoded before translation, and the client gets plain bytes."""
    anthropic_fake.gzip = True
    anthropic_fake.chunk_size = 13
    answer = recorded("anthropic/messages-text.json")["response"]["body"]
    c = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert c.choices[0].message.content == answer["content"][0]["text"]
    raw = client.chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True)
    assert "content-encoding" not in raw.headers and raw.headers["content-type"].startswith("text/event-stream")
    events = sse_payloads(recorded("anthropic/messages-stream-text.json")["response"]["body"])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text == "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    error = recorded("anthropic/error-401-authentication.json")["response"]["body"]
    anthropic_fake.fail = (401, json.dumps(error).encode(), {})
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["message"] == error["error"]["message"]


def test_provider_error_keeps_status_and_message(client, anthropic_fake):
    error = recorded("anthropic/error-400-invalid-request.json")["response"]["body"]
    anthropic_fake.fail = (400, json.dumps(error).encode(), {})
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["message"] == error["error"]["message"]
    assert e.value.body["type"] == error["error"]["type"]


def test_unsupported_parameter_is_a_named_422(client, anthropic_fake):
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}], n=2)
    assert "`n`" in e.value.body["message"]
    assert anthropic_fake.requests == []


def test_undecodable_gzip_answer_is_an_error_not_garbage(client, anthropic_fake):
    anthropic_fake.gzip = True
    anthropic_fake.corrupt_gzip = True
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 502 and "could not be decoded" in e.value.body["message"]
    with pytest.raises(openai.APIError) as e:
        list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True))
    assert "could not be decoded" in str(e.value)
    assert client.gateway.wait_in_flight_zero()


def test_unreadable_success_answer_is_a_502_not_garbage(client, anthropic_fake):
    """A 200 whose body is not a Messages answer (a proxy's page, say) cannot be translated."""
    anthropic_fake.fail = (200, b"<html>captive portal</html>", {})
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 502
    assert e.value.body["code"] == "bad_upstream_response"
    assert client.gateway.wait_in_flight_zero()


def test_anthropic_version_comes_from_the_schema_whatever_the_credential(gateway_factory, anthropic_fake):
    """An Anthropic backend whose key is set by a header mutation (no AnthropicAPIKey
    policy) still sends the `anthropic-version` the API requires."""
    backend = backend_yaml("anthropic", "Anthropic", anthropic_fake.port).replace(
        "  backendRef:\n",
        "  headerMutation:\n    set:\n      - name: x-api-key\n        value: sk-ant-provider-key\n  backendRef:\n")
    gw = gateway_factory(backend, route_yaml("route", [("claude", [("anthropic", 0, "claude-3-opus-20240229")])]))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert anthropic_fake.last()["headers"]["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_success_answer_is_a_502_in_the_clients_shape(client, anthropic_fake, stream):
    """A 200 with no body at all cannot be an answer: unary or streamed, the client gets
    a 502 it can read, never an empty 200."""
    anthropic_fake.fail = (200, b"", {"content-type": "text/event-stream" if stream else "application/json"})
    with pytest.raises(openai.InternalServerError) as e:
        if stream:
            list(client.chat.completions.create(model="claude", stream=True,
                                                messages=[{"role": "user", "content": "Hi"}]))
        else:
            client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 502
    assert "empty" in e.value.body["message"]
    assert client.gateway.wait_in_flight_zero()


def test_a_translated_stream_cut_short_is_metered_as_an_error(client, anthropic_fake):
    """The client gets an error event, and /metrics says the same, not a success."""
    import httpx

    anthropic_fake.end_stream_after = 2  # message_start and the first block start only
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="claude", stream=True,
                                            messages=[{"role": "user", "content": "Hi"}]))
    metrics = httpx.get(client.gateway.admin + "/metrics", timeout=5).text
    counted = [line for line in metrics.splitlines()
               if line.startswith("gen_ai_server_request_duration_seconds_count{")]
    assert any('error_type="stream_error"' in line for line in counted), counted
    assert client.gateway.wait_in_flight_zero()
