"""OpenAI's Responses API translated for the schemas that do not speak it: Claude on
Anthropic, Bedrock (InvokeModel) and Vertex AI, Converse and Gemini. The official OpenAI
SDK on one side, fakes that refuse what each provider refuses on the other; the answers
are the providers' recordings."""

import json

import httpx
import openai
import pytest

from harness import aws_credentials_file, backend_yaml, route_yaml
from providers import recorded
from test_vertex import account, gcp_policy_yaml, token_fake, vertex_fake  # noqa: F401 (fixtures)

# model → (provider name in metrics, the model the provider is given)
MODELS = {
    "claude": ("anthropic", None),
    "claude-bedrock": ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    "converse": ("aws.bedrock", "anthropic.claude-3-haiku-20240307-v1:0"),
    "gemini": ("gcp.vertex_ai", "gemini-2.0-flash"),
    "claude-vertex": ("gcp.vertex_ai", "claude-sonnet-4@20250514"),
}
BACKENDS = {"claude": "anthropic", "claude-bedrock": "claude-bedrock", "converse": "converse", "gemini": "vertex",
            "claude-vertex": "vertex-claude"}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather",
          "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]


def translating_backends(anthropic_fake, bedrock_fake, vertex_fake, token_fake, account):  # noqa: F811
    """One backend of each translating schema: anthropic, claude-bedrock (AWSAnthropic),
    converse (AWSBedrock), vertex (GCPVertexAI) and vertex-claude (GCPAnthropic)."""
    aws = aws_credentials_file()
    return [
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        backend_yaml("claude-bedrock", "AWSAnthropic", bedrock_fake.port, policy="AWSCredentials", key=aws),
        backend_yaml("converse", "AWSBedrock", bedrock_fake.port, policy="AWSCredentials", key=aws),
        backend_yaml("vertex", "GCPVertexAI", vertex_fake.port),
        backend_yaml("vertex-claude", "GCPAnthropic", vertex_fake.port),
        gcp_policy_yaml("gcp", ["vertex", "vertex-claude"], account.key_file(token_fake.token_uri), account.project_id),
    ]


@pytest.fixture
def gw(gateway_factory, anthropic_fake, bedrock_fake, vertex_fake, token_fake, account):  # noqa: F811
    gw = gateway_factory(
        *translating_backends(anthropic_fake, bedrock_fake, vertex_fake, token_fake, account),
        route_yaml("route", [(m, [(BACKENDS[m], 0, o)]) for m, (_, o) in MODELS.items()]),
    )
    assert token_fake.wait_for(1), "the gateway never asked for a token"
    return gw


@pytest.fixture
def client(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0)


def fakes_for(model, anthropic_fake, bedrock_fake, vertex_fake):
    return {"claude": anthropic_fake, "claude-bedrock": bedrock_fake, "converse": bedrock_fake,
            "gemini": vertex_fake, "claude-vertex": vertex_fake}[model]


@pytest.mark.parametrize("model", list(MODELS))
def test_unary_and_streamed_with_tools_on_every_translating_schema(client, gw, model, anthropic_fake, bedrock_fake,
                                                                  vertex_fake):
    fake = fakes_for(model, anthropic_fake, bedrock_fake, vertex_fake)
    response = client.responses.create(model=model, input="What's the weather in Paris?", instructions="Be brief.",
                                       tools=TOOLS, tool_choice="auto", max_output_tokens=500)
    assert response.object == "response" and response.status == "completed"
    assert response.instructions == "Be brief." and response.max_output_tokens == 500
    calls = [o for o in response.output if o.type == "function_call"]
    if model == "claude-bedrock":
        assert response.output_text  # the fake's unary InvokeModel recording answers in text
    else:
        assert calls and all(json.loads(c.arguments) is not None and c.call_id for c in calls)
    assert response.usage.input_tokens > 0 and response.usage.total_tokens >= response.usage.input_tokens
    sent = fake.last()["body"]
    assert "input" not in sent and "instructions" not in sent, "the provider got the Responses request itself"

    # Streamed, assembled by the SDK's own helper from the events.
    with client.responses.stream(model=model, input="What's the weather in Paris?", tools=TOOLS) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    streamed_calls = [o for o in final.output if o.type == "function_call"]
    assert streamed_calls and all(json.loads(c.arguments) is not None for c in streamed_calls)
    assert final.usage.output_tokens > 0
    provider, _ = MODELS[model]
    usage = gw.metric("gen_ai_client_token_usage_sum", gen_ai_operation_name="responses",
                      gen_ai_provider_name=provider, gen_ai_token_type="output", gen_ai_original_model=model)
    assert usage == response.usage.output_tokens + final.usage.output_tokens


def test_streamed_text(client):
    for model in ["claude", "claude-vertex", "gemini"]:
        events = list(client.responses.create(model=model, input="Hi", stream=True))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        done = [e for e in events if e.type == "response.output_text.done"]
        assert text and done and done[0].text == text, model
        assert events[-1].type == "response.completed" and events[-1].response.output_text == text
        assert [e.sequence_number for e in events] == list(range(len(events)))


def test_gemini_signature_goes_back_with_the_next_turn(client, vertex_fake):
    answer = recorded("vertex/generate-content-function-call.json")["response"]["body"]
    recorded_call = next(p for p in answer["candidates"][0]["content"]["parts"] if "functionCall" in p)
    first = client.responses.create(model="gemini", input="Get the image file.", tools=[
        {"type": "function", "name": "get_file", "parameters": {"type": "object", "properties": {"type": {"type": "string"}}}}],
        tool_choice="required")
    kinds = [o.type for o in first.output]
    assert kinds == ["reasoning", "function_call"], kinds
    call = first.output[1]
    vertex_fake.unary_fixture = "vertex/generate-content-text.json"
    # The next turn hands the output back as the SDK returned it, plus the tool's result.
    second = client.responses.create(model="gemini", input=[
        {"role": "user", "content": "Get the image file."},
        *[o.model_dump(exclude_none=True) for o in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"file": "cat.png"}'},
    ])
    assert second.output_text
    contents = vertex_fake.last()["body"]["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == recorded_call["thoughtSignature"]
    assert vertex_fake.rejected == []


def test_what_no_translating_backend_can_do_is_a_422_naming_it(client, anthropic_fake):
    for field, value in [("previous_response_id", "resp_123"), ("store", True), ("background", True),
                         ("tools", [{"type": "web_search"}])]:
        with pytest.raises(openai.UnprocessableEntityError) as e:
            client.responses.create(model="claude", input="Hi", **{field: value})
        assert ("web_search" if field == "tools" else f"`{field}") in e.value.message
    assert anthropic_fake.requests == []


def test_provider_errors_are_openai_shaped(gw, anthropic_fake):
    anthropic_fake.fail = (429, json.dumps({"type": "error", "error": {"type": "rate_limit_error",
                                                                        "message": "Number of requests exceeded"}}).encode(), {})
    r = httpx.post(gw.url + "/v1/responses", json={"model": "claude", "input": "Hi"}, timeout=30)
    assert r.status_code == 429
    assert r.json()["error"]["message"] == "Number of requests exceeded"


def test_failover_from_openai_to_claude_translates_the_retry(gateway_factory, anthropic_fake):
    """A dead OpenAI primary: the retry goes to Anthropic, translated for that attempt."""
    from fakes import free_port
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", free_port(), policy="APIKey", key="sk-openai-secret"),
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [("smart", [("openai", 0, None), ("anthropic", 1, "claude-sonnet-4-5")])]),
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    response = client.responses.create(model="smart", input="Hi", instructions="Be brief.")
    assert response.output_text and response.status == "completed"
    sent = anthropic_fake.last()["body"]
    assert sent["model"] == "claude-sonnet-4-5" and sent["system"] == [{"type": "text", "text": "Be brief."}]
    events = list(client.responses.create(model="smart", input="Hi", stream=True))
    assert events[-1].type == "response.completed"
