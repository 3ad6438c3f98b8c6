"""The provider-routing guide's verification, through the real Envoy and the sidecar."""

from harness import backend_yaml, route_yaml


def test_bogus_client_key_is_replaced_by_the_secret(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
    )
    r = gw.chat("gpt-4o-mini", headers={
        "authorization": "Bearer client-bogus-key",
        "x-api-key": "client-x-api-key",
        "api-key": "client-azure-key",
    })
    assert r.status_code == 200, r.text
    body = r.json()
    # The recorded OpenAI answer, with its usage.
    assert body["usage"]["total_tokens"] > 0
    assert body["model"].startswith("gpt-5-nano")
    seen = openai_fake.last()
    assert seen["headers"]["authorization"] == "Bearer sk-openai-secret"
    assert "x-api-key" not in seen["headers"] and "api-key" not in seen["headers"]
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["model"] == "gpt-4o-mini"
    assert openai_fake.rejected == []
    # Metered: tokens as the recording reports them.
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="input", gen_ai_request_model="gpt-4o-mini") \
        == body["usage"]["prompt_tokens"]
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == body["usage"]["completion_tokens"]
    assert gw.wait_in_flight_zero()
