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


def test_openai_backends_refuse_messages_by_name(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt", [("openai", 0, None)])]),
    )
    c = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.UnprocessableEntityError) as e:
        c.messages.create(model="gpt", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert "Messages API" in e.value.body["error"]["message"]
    assert openai_fake.requests == []


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
