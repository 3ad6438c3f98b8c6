"""Anthropic SDK clients (the official `anthropic` package, unchanged) on the gateway's
Messages API (`/v1/messages`, `/anthropic/v1/messages`), reaching Anthropic itself and
Claude on AWS Bedrock. Errors on these paths are Anthropic-shaped, whoever makes them."""

import base64
import json

import anthropic
import pytest

from fakes import free_port
from harness import aws_credentials_file, backend_yaml, route_yaml
from providers import recorded, recorded_body
from test_bedrock import event_stream_events


@pytest.fixture
def gateway(gateway_factory, anthropic_fake, bedrock_fake):
    return gateway_factory(
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        backend_yaml("claude-bedrock", "AWSAnthropic", bedrock_fake.port, policy="AWSCredentials", key=aws_credentials_file()),
        backend_yaml("converse", "AWSBedrock", bedrock_fake.port, policy="AWSCredentials", key=aws_credentials_file()),
        backend_yaml("gone", "Anthropic", free_port(), policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        backend_yaml("gone-bedrock", "AWSAnthropic", free_port(), policy="AWSCredentials", key=aws_credentials_file()),
        route_yaml("route", [
            ("claude", [("anthropic", 0, None)]),
            ("claude-bedrock", [("claude-bedrock", 0, "anthropic.claude-3-5-sonnet-20240620-v1:0")]),
            ("claude-converse", [("converse", 0, "anthropic.claude-3-haiku-20240307-v1:0")]),
            ("claude-gone", [("gone", 0, None)]),
            ("claude-bedrock-gone", [("gone-bedrock", 0, "anthropic.claude-v2")]),
        ]),
    )


@pytest.fixture(params=["", "/anthropic"], ids=["v1-messages", "anthropic-prefix"])
def client(gateway, request):
    return anthropic.Anthropic(base_url=gateway.url + request.param, api_key="sk-ant-client-key", max_retries=0)


def text_of(message):
    return "".join(b["text"] for b in message["content"] if b["type"] == "text")


def test_unary_to_anthropic_passes_through(client, anthropic_fake):
    answer = recorded("anthropic/messages-text.json")["response"]["body"]
    m = client.messages.create(model="claude", max_tokens=100, messages=[{"role": "user", "content": "Hi"}],
                               extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    assert m.model_dump(exclude_none=True)["content"] == answer["content"]
    assert m.id == answer["id"] and m.usage.output_tokens == answer["usage"]["output_tokens"]
    sent = anthropic_fake.last()
    assert sent["headers"]["x-api-key"] == "sk-ant-provider-key"
    assert sent["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"] == {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}


def test_stream_to_anthropic(client, anthropic_fake, gateway):
    body = recorded("anthropic/messages-stream-text.json")["response"]["body"]
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    with client.messages.stream(model="claude", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert final.usage.output_tokens == [e for e in events if e["type"] == "message_delta"][-1]["usage"]["output_tokens"]
    assert gateway.wait_in_flight_zero()


def test_claude_on_bedrock_unary(client, bedrock_fake):
    answer = recorded("bedrock/invoke-anthropic-messages.json")["response"]["body"]
    m = client.messages.create(model="claude-bedrock", max_tokens=100, messages=[{"role": "user", "content": "Hi"}],
                               extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"})
    assert m.content[0].text == text_of(answer)
    sent = bedrock_fake.last()
    assert sent["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
    assert sent["body"]["anthropic_version"] == "bedrock-2023-05-31"
    assert sent["body"]["anthropic_beta"] == ["token-efficient-tools-2025-02-19"]
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256")


def test_claude_on_bedrock_stream_becomes_anthropic_sse(client, bedrock_fake):
    bedrock_fake.chunk_size = 29
    frames = event_stream_events(recorded_body("bedrock/invoke-stream-anthropic-tool-use.json"))
    inner = [json.loads(base64.b64decode(p["bytes"])) for t, p in frames if t == "chunk"]
    with client.messages.stream(model="claude-bedrock", max_tokens=100, messages=[{"role": "user", "content": "Hi"}],
                                tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
    assert bedrock_fake.last()["path"].endswith("/invoke-with-response-stream")
    tools = [b for b in final.content if b.type == "tool_use"]
    starts = [e["content_block"] for e in inner if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"]
    assert [(t.id, t.name) for t in tools] == [(s["id"], s["name"]) for s in starts]
    assert final.stop_reason == [e for e in inner if e["type"] == "message_delta"][-1]["delta"]["stop_reason"]


def test_errors_are_anthropic_shaped(client, anthropic_fake, bedrock_fake):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude", max_tokens=10, messages=[])
    error = recorded("anthropic/error-400-invalid-request.json")["response"]["body"]
    anthropic_fake.fail = (400, json.dumps(error).encode(), {})
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body == error
    bedrock_fake.fail = (429, b'{"message":"Too many requests, please wait before trying again."}',
                         {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"})
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="claude-bedrock", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"] == {"type": "rate_limit_error", "message": "Too many requests, please wait before trying again."}


@pytest.mark.parametrize("model", ["claude-gone", "claude-bedrock-gone"])
def test_envoys_own_errors_are_anthropic_shaped(client, model):
    """Envoy answers itself when the backend is down; the Bedrock path also moved the
    request off /v1/messages, so the shape comes from the sidecar's metadata mark."""
    with pytest.raises(anthropic.APIStatusError) as e:
        client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503
    assert e.value.body["type"] == "error" and e.value.body["error"]["message"]


def test_messages_on_bedrock_converse_unary(client, bedrock_fake):
    answer = recorded("bedrock/converse-tool-use.json")["response"]["body"]
    m = client.messages.create(model="claude-converse", max_tokens=100, system="be brief",
                               messages=[{"role": "user", "content": "top song?"}],
                               tools=[{"name": "top_song", "input_schema": {"type": "object"}}])
    sent = bedrock_fake.last()
    assert sent["path"] == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    assert sent["body"]["system"] == [{"text": "be brief"}]
    assert sent["body"]["inferenceConfig"]["maxTokens"] == 100
    content = answer["output"]["message"]["content"]
    uses = [b["toolUse"] for b in content if "toolUse" in b]
    assert [(b.id, b.name, b.input) for b in m.content if b.type == "tool_use"] == \
        [(u["toolUseId"], u["name"], u["input"]) for u in uses]
    assert m.stop_reason == "tool_use"
    assert m.usage.output_tokens == answer["usage"]["outputTokens"]


def test_messages_on_bedrock_converse_stream(client, bedrock_fake):
    bedrock_fake.chunk_size = 31
    events = event_stream_events(recorded_body("bedrock/converse-stream-tool-use.json"))
    with client.messages.stream(model="claude-converse", max_tokens=100, messages=[{"role": "user", "content": "top song?"}],
                                tools=[{"name": "top_song", "input_schema": {"type": "object"}}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert bedrock_fake.last()["path"].endswith("/converse-stream")
    assert text == "".join(p["delta"].get("text", "") for t, p in events if t == "contentBlockDelta")
    start = next(p["start"]["toolUse"] for t, p in events if t == "contentBlockStart")
    tool = next(b for b in final.content if b.type == "tool_use")
    assert (tool.id, tool.name) == (start["toolUseId"], start["name"])
    recorded_input = "".join(p["delta"]["toolUse"]["input"] for t, p in events
                             if t == "contentBlockDelta" and "toolUse" in p["delta"])
    assert tool.input == json.loads(recorded_input)
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == next(p["usage"] for t, p in events if t == "metadata")["outputTokens"]


# ------------------------------------------------------------------ Messages on OpenAI

@pytest.fixture
def openai_gateway(gateway_factory, openai_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt", [("openai", 0, "gpt-5-nano")])]),
    )


def _openai_recording(name):
    from fakes import _cassette
    return json.loads(_cassette(name)[1])


def test_messages_client_on_an_openai_backend_unary(openai_gateway, openai_fake):
    """Anthropic SDK clients reach an OpenAI backend: Messages become chat completions and
    the completion comes back as an Anthropic message (Envoy AI Gateway does the same)."""
    client = anthropic.Anthropic(base_url=openai_gateway.url, api_key="sk-ant-client-key", max_retries=0)
    answer = _openai_recording("chat-basic.yaml")
    weather = {"name": "weather", "description": "the weather", "input_schema": {"type": "object"}}
    m = client.messages.create(
        model="gpt", max_tokens=300, system="be brief", tools=[weather], tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                                               {"type": "text", "text": "and?"}]}])
    sent = openai_fake.last()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-openai-secret"
    assert "x-api-key" not in sent["headers"]
    assert sent["body"] == {
        "model": "gpt-5-nano", "max_completion_tokens": 300,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "and?"}]}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "the weather",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": "required"}
    choice = answer["choices"][0]
    assert m.content[0].type == "text" and m.content[0].text == choice["message"]["content"]
    assert m.stop_reason == "end_turn" and m.model == answer["model"]
    cached = answer["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0)
    assert m.usage.input_tokens == answer["usage"]["prompt_tokens"] - cached
    assert m.usage.output_tokens == answer["usage"]["completion_tokens"]


def test_messages_client_on_an_openai_backend_stream_and_errors(openai_gateway, openai_fake):
    client = anthropic.Anthropic(base_url=openai_gateway.url, api_key="sk-ant-client-key", max_retries=0)
    with client.messages.stream(model="gpt", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]) as stream:
        final = stream.get_final_message()
    sent = openai_fake.last()["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    # The recorded stream spent its whole budget reasoning (finish_reason length).
    usage = next(json.loads(e[6:])["usage"] for e in _stream_events("chat-streaming-detailed-usage.yaml")
                 if '"usage":{' in e)
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == usage["completion_tokens"]
    openai_fake.fail_status = 429
    openai_fake.fail_body = {"error": {"message": "Rate limit reached for gpt-5-nano", "type": "requests"}}
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="gpt", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body == {"type": "error", "error": {"type": "rate_limit_error",
                                                       "message": "Rate limit reached for gpt-5-nano"}}
    with pytest.raises(anthropic.UnprocessableEntityError) as e:
        client.messages.create(model="gpt", max_tokens=10, top_k=5, messages=[{"role": "user", "content": "Hi"}])
    assert "top_k" in e.value.body["error"]["message"]


def _stream_events(name):
    from fakes import _cassette, _sse_events
    return _sse_events(_cassette(name)[1])
