"""Request bodies the gateway cannot take say what is wrong with them, in the client's API
shape (OpenAI or Anthropic Messages); compressed bodies are decoded within the body limit."""

import gzip
import json
import zlib

import httpx
import pytest

from harness import backend_yaml, route_yaml

LIMIT = 100_000


@pytest.fixture
def gw(gateway_factory, openai_fake, anthropic_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("openai-b", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [
            ("gpt-4o-mini", [("openai", 0, None)]),  # one backend: built at the router level
            ("gpt-failover", [("openai", 0, None), ("openai-b", 1, None)]),  # per attempt, upstream level
            ("claude", [("anthropic", 0, None)]),
        ]),
        extra_args=["--max-body-bytes", str(LIMIT)],
    )


CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def post(gw, path, data, headers=None):
    return httpx.post(gw.url + path, content=data, headers={"content-type": "application/json", **(headers or {})},
                      timeout=30)


def error_message(r, path, status):
    assert r.status_code == status, r.text
    body = r.json()
    if path == MESSAGES:
        assert body["type"] == "error", body
        return body["error"]["message"]
    return body["error"]["message"]


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
@pytest.mark.parametrize("data,says", [
    ("[1, 2]", "request body must be a JSON object, got an array"),
    ("42", "request body must be a JSON object, got a number"),
    ('"hello"', "request body must be a JSON object, got a string"),
    ('{"model": "gpt-4o-mini", "stream": "yes", "messages": []}', "`stream` must be a boolean, got a string"),
    ('{"model": 4, "messages": []}', "`model` must be a string, got a number"),
    ('{"model": "gpt-4o-mini", "stream_options": "x"}', "`stream_options` must be an object, got a string"),
])
def test_parse_errors_name_the_problem(gw, openai_fake, path, data, says):
    message = error_message(post(gw, path, data), path, 400)
    assert message.startswith(says), message
    assert "Peek" not in message and "expected a boolean" not in message
    assert not openai_fake.requests


def openai_body(model, pad=0):
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi" + " " * pad}]}).encode()


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-failover"])
@pytest.mark.parametrize("encoding,compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_request_body_reaches_the_provider_decoded(gw, openai_fake, model, encoding, compress):
    plain = openai_body(model)
    r = post(gw, CHAT, compress(plain), {"content-encoding": encoding})
    assert r.status_code == 200, r.text
    sent = openai_fake.last()
    assert sent["body"]["model"] == model
    assert "content-encoding" not in sent["headers"]
    assert int(sent["headers"]["content-length"]) == len(plain)


def test_compressed_messages_body_reaches_anthropic_decoded(gw, anthropic_fake):
    plain = json.dumps({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).encode()
    r = post(gw, MESSAGES, gzip.compress(plain), {"content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert anthropic_fake.last()["body"]["model"] == "claude"


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_body_decoding_past_the_limit_is_413(gw, openai_fake, path):
    bomb = gzip.compress(openai_body("gpt-4o-mini", pad=50 * LIMIT))  # ~5 MB from a few KB
    assert len(bomb) < LIMIT
    message = error_message(post(gw, path, bomb, {"content-encoding": "gzip"}), path, 413)
    assert "gzip" in message and str(LIMIT) in message
    assert not openai_fake.requests


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_corrupt_gzip_is_400(gw, path):
    message = error_message(post(gw, path, b"\x1f\x8b not really gzip", {"content-encoding": "gzip"}), path, 400)
    assert "not valid gzip" in message


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_unknown_encoding_is_415_naming_it(gw, openai_fake, path):
    message = error_message(post(gw, path, b"\x00\x01", {"content-encoding": "br"}), path, 415)
    assert "`br`" in message
    assert not openai_fake.requests
