"""OpenAI's Responses API (`/v1/responses`) through the gateway with the official OpenAI
SDK: passed to OpenAI and Azure OpenAI byte for byte, unary and streamed, metered from
the response's usage (a stream's from `response.completed`)."""

import httpx
import openai
import pytest

import responses_api
from fakes import FakeProvider
from harness import backend_yaml, route_yaml

CUT = "the provider's stream ended before the answer was finished"


class Sent:
    """The exact bytes the SDK put on the wire, per request."""

    def __init__(self):
        self.bodies = []

    def hook(self, request):
        self.bodies.append(request.read())


@pytest.fixture
def azure_responses():
    fake = FakeProvider(kind="azure", key="azure-secret-key", api_version="2025-04-01-preview")
    yield fake
    fake.stop()


@pytest.fixture
def gw(gateway_factory, openai_fake, azure_responses):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("azure", "AzureOpenAI", azure_responses.port, policy="AzureAPIKey", key="azure-secret-key",
                     version="2025-04-01-preview"),
        route_yaml("route", [("gpt-4.1", [("openai", 0, None)]), ("azure-4.1", [("azure", 0, "my-deployment")])]),
    )


def sdk(gw, sent=None):
    hooks = {"request": [sent.hook]} if sent else {}
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-not-a-provider-key", max_retries=0,
                         http_client=httpx.Client(event_hooks=hooks))


def test_unary_passes_byte_for_byte_with_its_state_fields(gw, openai_fake):
    sent = Sent()
    response = sdk(gw, sent).responses.create(
        model="gpt-4.1", input="Tell me a three sentence bedtime story about a unicorn.",
        previous_response_id="resp_earlier", store=True, background=False, instructions="Be brief.")
    assert response.output_text == responses_api.TEXT
    assert response.usage.total_tokens == 123
    assert response.previous_response_id == "resp_earlier" and response.store is True
    seen = openai_fake.last()
    assert seen["path"] == "/v1/responses"
    assert seen["raw"] == sent.bodies[-1], "the provider got other bytes than the client sent"
    assert seen["headers"]["authorization"] == "Bearer sk-openai-secret"
    labels = dict(gen_ai_operation_name="responses", gen_ai_provider_name="openai")
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 36
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == 87
    assert gw.metric("gen_ai_server_request_duration_seconds_count", gen_ai_response_model="gpt-4.1-2025-04-14",
                     error_type="", **labels) == 1


def test_stream_passes_every_event_and_is_metered_from_response_completed(gw, openai_fake):
    sent = Sent()
    client = sdk(gw, sent)
    events = list(client.responses.create(model="gpt-4.1", input="Tell me a story.", stream=True, background=True))
    assert [e.type for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.completed" and events[-1].response.usage.total_tokens == 123
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == responses_api.TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert openai_fake.last()["raw"] == sent.bodies[-1]
    assert openai_fake.last()["body"]["background"] is True
    # The SDK's own stream helper assembles the same answer from the events.
    with client.responses.stream(model="gpt-4.1", input="Tell me a story.") as stream:
        assert stream.get_final_response().output_text == responses_api.TEXT
    labels = dict(gen_ai_operation_name="responses", gen_ai_token_type="output")
    assert gw.metric("gen_ai_client_token_usage_sum", **labels) == 2 * 87


def test_raw_stream_bytes_are_unchanged(gw, openai_fake):
    body = {"model": "gpt-4.1", "input": "Hi", "stream": True}
    with httpx.stream("POST", gw.url + "/v1/responses", json=body, timeout=30) as r:
        got = b"".join(r.iter_raw())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert got == "".join(responses_api.stream(body)).encode()


def test_a_cut_stream_ends_with_a_responses_error_event(gw, openai_fake):
    openai_fake.end_stream_after = 3
    events = list(sdk(gw).responses.create(model="gpt-4.1", input="Hi", stream=True))
    assert [e.type for e in events] == ["response.created", "response.in_progress", "response.output_item.added",
                                        "error"]
    assert events[-1].message == CUT and events[-1].sequence_number == 3
    assert gw.metric("gen_ai_server_request_duration_seconds_count", gen_ai_operation_name="responses",
                     error_type="stream_cut") == 1


def test_provider_errors_keep_their_status_and_shape(gw):
    client = sdk(gw)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-4.1", input="Hi", previous_response_id="not-an-id")
    assert e.value.param == "previous_response_id" and "Invalid 'previous_response_id'" in e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="nope", input="Hi")
    assert e.value.code == "model_not_found"


def test_azure_takes_responses_at_its_own_path_with_the_deployment_in_the_body(gw, azure_responses):
    client = sdk(gw)
    response = client.responses.create(model="azure-4.1", input="Hi", store=False)
    assert response.output_text == responses_api.TEXT
    seen = azure_responses.last()
    assert seen["path"] == "/openai/responses?api-version=2025-04-01-preview"
    assert seen["body"]["model"] == "my-deployment" and seen["body"]["store"] is False
    assert seen["headers"]["api-key"] == "azure-secret-key"
    events = list(client.responses.create(model="azure-4.1", input="Hi", stream=True))
    assert events[-1].type == "response.completed"
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_operation_name="responses",
                     gen_ai_provider_name="azure.ai.openai", gen_ai_token_type="input") == 2 * 36
