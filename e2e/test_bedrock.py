"""OpenAI clients reaching AWS Bedrock through the gateway (Converse, ConverseStream,
InvokeModel for Claude, Titan embeddings), with every request's SigV4 signature
recomputed by botocore in the fake. Expectations come from the recorded answers."""

import base64
import json
import struct

import openai
import pytest

from harness import aws_credentials_file, backend_yaml, route_yaml
from providers import recorded, recorded_body

ARN = "arn:aws:bedrock:us-east-1:012345678901:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0"


def event_stream_events(data):
    """Decodes an AWS event-stream (prelude, headers, payload, CRCs) into (event type, JSON payload)."""
    out, at = [], 0
    while at < len(data):
        total, headers_len = struct.unpack(">II", data[at:at + 8])
        headers, pos, end = {}, at + 12, at + 12 + headers_len
        while pos < end:
            name_len = data[pos]
            name = data[pos + 1:pos + 1 + name_len].decode()
            pos += 1 + name_len
            kind = data[pos]
            assert kind == 7, "string header"
            value_len = struct.unpack(">H", data[pos + 1:pos + 3])[0]
            headers[name] = data[pos + 3:pos + 3 + value_len].decode()
            pos += 3 + value_len
        out.append((headers.get(":event-type"), json.loads(data[end:at + total - 4])))
        at += total
    return out


@pytest.fixture
def gateway(gateway_factory, bedrock_fake):
    return gateway_factory(
        backend_yaml("bedrock", "AWSBedrock", bedrock_fake.port, policy="AWSCredentials", key=aws_credentials_file()),
        backend_yaml("claude-bedrock", "AWSAnthropic", bedrock_fake.port, policy="AWSCredentials", key=aws_credentials_file()),
        route_yaml("route", [
            ("claude", [("bedrock", 0, ARN)]),
            ("claude-invoke", [("claude-bedrock", 0, "anthropic.claude-3-5-sonnet-20240620-v1:0")]),
            ("titan", [("bedrock", 0, "amazon.titan-embed-text-v1")]),
        ]),
    )


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client-key", max_retries=0)


TOOLS = [{"type": "function", "function": {"name": "top_song", "parameters": {"type": "object", "properties": {"sign": {"type": "string"}}}}}]


def test_converse_signed_encoded_path_and_tool_use(client, bedrock_fake):
    answer = recorded("bedrock/converse-tool-use.json")["response"]["body"]
    c = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "top song?"}], tools=TOOLS)
    sent = bedrock_fake.last()
    # One path segment, encoded as the AWS SDKs encode it (the recorded request's form).
    assert sent["path"] == "/model/" + ARN.replace(":", "%3A").replace("/", "%2F") + "/converse"
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "toolConfig" in sent["body"] and "stream_options" not in sent["body"]
    content = answer["output"]["message"]["content"]
    text = "".join(b.get("text", "") for b in content)
    uses = [b["toolUse"] for b in content if "toolUse" in b]
    assert c.choices[0].message.content == text
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in c.choices[0].message.tool_calls] == \
        [(u["toolUseId"], u["name"], u["input"]) for u in uses]
    assert c.choices[0].finish_reason == "tool_calls"
    assert c.usage.completion_tokens == answer["usage"]["outputTokens"]


@pytest.mark.parametrize("chunk_size", [0, 17])
def test_converse_stream_from_event_stream(client, bedrock_fake, chunk_size):
    bedrock_fake.chunk_size = chunk_size  # 17: frames cut at arbitrary bytes
    events = event_stream_events(recorded_body("bedrock/converse-stream-tool-use.json"))
    chunks = list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "top song?"}],
                                                 tools=TOOLS, stream=True, stream_options={"include_usage": True}))
    assert bedrock_fake.last()["path"].endswith("/converse-stream")
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(p["delta"].get("text", "") for t, p in events if t == "contentBlockDelta")
    args = "".join(t.function.arguments or "" for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or []))
    recorded_args = "".join(p["delta"]["toolUse"]["input"] for t, p in events
                            if t == "contentBlockDelta" and "toolUse" in p["delta"])
    assert json.loads(args) == json.loads(recorded_args)
    first_call = next(t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or []))
    start = next(p["start"]["toolUse"] for t, p in events if t == "contentBlockStart")
    assert (first_call.id, first_call.function.name) == (start["toolUseId"], start["name"])
    usage = next(p["usage"] for t, p in events if t == "metadata")
    assert chunks[-1].usage.completion_tokens == usage["outputTokens"]
    assert chunks[-1].usage.prompt_tokens == usage["inputTokens"] + usage.get("cacheReadInputTokens", 0) + usage.get("cacheWriteInputTokens", 0)


def test_claude_invoke_stream(client, bedrock_fake):
    events = event_stream_events(recorded_body("bedrock/invoke-stream-anthropic-tool-use.json"))
    inner = [json.loads(base64.b64decode(p["bytes"])) for t, p in events if t == "chunk"]
    chunks = list(client.chat.completions.create(model="claude-invoke", messages=[{"role": "user", "content": "hi"}],
                                                 tools=TOOLS, stream=True))
    sent = bedrock_fake.last()
    assert sent["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream"
    assert sent["body"]["anthropic_version"] == "bedrock-2023-05-31" and "stream" not in sent["body"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(e["delta"].get("text", "") for e in inner if e["type"] == "content_block_delta")
    ids = [t.id for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or []) if t.id]
    assert ids == [e["content_block"]["id"] for e in inner if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"]


def test_claude_invoke_unary(client):
    answer = recorded("bedrock/invoke-anthropic-messages.json")["response"]["body"]
    c = client.chat.completions.create(model="claude-invoke", messages=[{"role": "user", "content": "hi"}])
    assert c.choices[0].message.content == answer["content"][0]["text"]
    assert c.usage.completion_tokens == answer["usage"]["output_tokens"]


def test_titan_embeddings(client, bedrock_fake):
    answer = recorded("bedrock/invoke-titan-embed-text-v1.json")["response"]["body"]
    e = client.embeddings.create(model="titan", input="Hello World!")
    assert bedrock_fake.last()["body"] == {"inputText": "Hello World!"}
    assert e.data[0].embedding == pytest.approx(answer["embedding"])
    assert e.usage.prompt_tokens == answer["inputTextTokenCount"]


def test_bedrock_error_type_becomes_the_code(client, bedrock_fake):
    error = recorded("bedrock/invoke-error-403-expired-token.json")["response"]
    bedrock_fake.fail = (403, json.dumps(error["body"]).encode(), {"x-amzn-errortype": error["headers"]["x-amzn-ErrorType"]})
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "ExpiredTokenException"
    assert e.value.body["message"] == error["body"]["message"]


def test_wrong_secret_fails_the_independent_signature_check(gateway_factory, bedrock_fake):
    gw = gateway_factory(
        backend_yaml("bedrock", "AWSBedrock", bedrock_fake.port, policy="AWSCredentials",
                     key=aws_credentials_file(secret_key="not-the-secret")),
        route_yaml("route", [("claude", [("bedrock", 0, "anthropic.claude-v2")])]),
    )
    r = gw.chat("claude")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "InvalidSignatureException"
    assert bedrock_fake.requests == []


@pytest.mark.parametrize("primary_dead", [True, False], ids=["refusing-connections", "answering-503"])
def test_openai_primary_fails_over_to_bedrock(gateway_factory, bedrock_fake, primary_dead):
    """The retry of the same client request reaches Bedrock transcoded and freshly signed."""
    from fakes import FakeProvider, free_port
    primary = FakeProvider(kind="openai", key="sk-primary")
    primary.fail_status = 503
    try:
        gw = gateway_factory(
            backend_yaml("primary", "OpenAI", free_port() if primary_dead else primary.port, policy="APIKey", key="sk-primary"),
            backend_yaml("bedrock", "AWSBedrock", bedrock_fake.port, policy="AWSCredentials", key=aws_credentials_file()),
            route_yaml("route", [("gpt-4o-mini", [("primary", 0, None), ("bedrock", 1, "anthropic.claude-3-haiku-20240307-v1:0")])]),
        )
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0)
        for _ in range(3):
            c = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=TOOLS)
            assert c.choices[0].finish_reason == "tool_calls"
        assert len(bedrock_fake.requests) == 3 and bedrock_fake.rejected == []
        sent = bedrock_fake.last()
        assert sent["path"] == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        assert sent["body"]["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
        if not primary_dead:
            assert primary.requests[0]["headers"]["authorization"] == "Bearer sk-primary"
        assert gw.wait_in_flight_zero()
    finally:
        primary.stop()
