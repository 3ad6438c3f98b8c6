"""Anthropic's token counting (`/v1/messages/count_tokens`) and `/anthropic/v1/models`
with the official anthropic SDK: counted by Anthropic, by Bedrock's CountTokens (for
Claude on InvokeModel and on Converse) and by Vertex AI's count-tokens for Claude; a
backend that cannot count answers 422 saying so, Anthropic-shaped."""

import anthropic
import pytest

from harness import backend_yaml, route_yaml
from providers import token_count
from test_responses_translated import translating_backends
from test_vertex import account, token_fake, vertex_fake  # noqa: F401 (fixtures)

MESSAGES = [{"role": "user", "content": "How many tokens is this sentence?"}]
SYSTEM = "You are terse."


@pytest.fixture
def gw(gateway_factory, anthropic_fake, bedrock_fake, vertex_fake, token_fake, account, openai_fake):  # noqa: F811
    gw = gateway_factory(
        *translating_backends(anthropic_fake, bedrock_fake, vertex_fake, token_fake, account),
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [
            ("claude", [("anthropic", 0, None)]),
            ("claude-bedrock", [("claude-bedrock", 0, "anthropic.claude-3-5-sonnet-20240620-v1:0")]),
            ("claude-converse", [("converse", 0, "anthropic.claude-3-haiku-20240307-v1:0")]),
            ("claude-vertex", [("vertex-claude", 0, "claude-sonnet-4-5@default")]),
            ("gemini", [("vertex", 0, "gemini-2.0-flash")]),
            ("gpt-4.1", [("openai", 0, None)]),
        ]),
    )
    assert token_fake.wait_for(1), "the gateway never asked for a token"
    return gw


@pytest.fixture
def client(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-client-key", max_retries=0)


def test_anthropic_counts_the_bytes_the_client_sent(gw, anthropic_fake):
    for prefix in ("", "/anthropic"):
        client = anthropic.Anthropic(base_url=gw.url + prefix, api_key="sk-ant-client-key", max_retries=0)
        counted = client.messages.count_tokens(model="claude", messages=MESSAGES, system=SYSTEM)
        sent = anthropic_fake.last()
        assert sent["path"] == "/v1/messages/count_tokens"
        assert sent["headers"]["x-api-key"] == "sk-ant-provider-key" and sent["headers"]["anthropic-version"]
        assert sent["body"] == {"model": "claude", "messages": MESSAGES, "system": SYSTEM}
        assert counted.input_tokens == token_count(sent["body"])


def test_bedrock_counts_with_count_tokens(client, bedrock_fake):
    for model, path in [("claude-bedrock", "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/count-tokens"),
                        ("claude-converse", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/count-tokens")]:
        counted = client.messages.count_tokens(model=model, messages=MESSAGES, system=SYSTEM)
        assert bedrock_fake.last()["path"] == path
        assert counted.input_tokens > 0 and bedrock_fake.rejected == []
    # Bedrock's errors reach the client Anthropic-shaped.
    bedrock_fake.fail = (400, b'{"message":"The provided model identifier is invalid."}',
                         {"x-amzn-errortype": "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"})
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.count_tokens(model="claude-bedrock", messages=MESSAGES)
    assert e.value.body["error"]["message"] == "The provided model identifier is invalid."


def test_vertex_counts_claude_with_count_tokens_raw_predict(client, vertex_fake, account):
    counted = client.messages.count_tokens(model="claude-vertex", messages=MESSAGES)
    sent = vertex_fake.last()
    assert sent["path"] == (f"/v1/projects/{account.project_id}/locations/us-east5"
                            "/publishers/anthropic/models/count-tokens:rawPredict")
    assert sent["body"]["model"] == "claude-sonnet-4-5"  # Vertex refuses @default for counting
    assert counted.input_tokens == token_count(sent["body"]) and vertex_fake.rejected == []


def test_a_backend_that_cannot_count_answers_422(client):
    for model in ["gemini", "gpt-4.1"]:
        with pytest.raises(anthropic.UnprocessableEntityError) as e:
            client.messages.count_tokens(model=model, messages=MESSAGES)
        assert "count_tokens" in e.value.message
        assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"


def test_anthropic_models_list(gw):
    client = anthropic.Anthropic(base_url=gw.url + "/anthropic", api_key="unused", max_retries=0)
    models = list(client.models.list())
    assert {m.id for m in models} == {"claude", "claude-bedrock", "claude-converse", "claude-vertex", "gemini",
                                      "gpt-4.1"}
    assert all(m.type == "model" and m.display_name == m.id and m.created_at for m in models)
