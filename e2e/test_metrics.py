"""/metrics stays bounded whatever clients send, and counts every answered request once."""

import random
import string

import httpx

from harness import backend_yaml, route_yaml

REGEX_ROUTE = """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r, namespace: default}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, type: RegularExpression, value: "gpt-.*"}]}]
      backendRefs: [{name: openai}]
    - matches: [{headers: [{name: x-ai-eg-model, value: exact-model}]}]
      backendRefs: [{name: openai}]
"""


def random_model():
    return "gpt-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=12))


def metrics_text(gw):
    return httpx.get(gw.admin + "/metrics", timeout=5).text


def test_random_model_names_on_a_regex_rule_keep_metrics_bounded(gateway_factory, openai_fake):
    openai_fake.echo_model = True  # the provider names each random model back
    gw = gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                         REGEX_ROUTE)
    assert gw.chat("exact-model").status_code == 200
    # Past the cap on provider-chosen response models.
    for _ in range(120):
        assert gw.chat(random_model()).status_code == 200
    lines = len(metrics_text(gw).splitlines())
    late = [random_model() for _ in range(200)]
    for model in late:
        assert gw.chat(model).status_code == 200
    text = metrics_text(gw)
    assert len(text.splitlines()) == lines, "new client model names added series"
    assert not any(model in text for model in late)
    # The regex rule's requests are labelled by the rule's pattern; exact models by name.
    assert gw.metric("gen_ai_server_request_duration_seconds_count", gen_ai_original_model="gpt-.*") == 320
    assert gw.metric("gen_ai_server_request_duration_seconds_count", gen_ai_original_model="exact-model") == 1
    assert gw.metric("gen_ai_client_token_usage_count", gen_ai_response_model="other", gen_ai_token_type="input") >= 200


def test_every_answer_the_gateway_gives_itself_is_counted_once(gateway_factory, anthropic_fake):
    """A 422 is metered alike whether the router level built the request (a rule its
    model alone picks) or the upstream level did (a rule with failover), and so are the
    gateway's own 400 and 404."""
    gw = gateway_factory(
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        backend_yaml("anthropic-b", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [("claude", [("anthropic", 0, None)]),
                             ("claude-ha", [("anthropic", 0, None), ("anthropic-b", 1, None)])]),
    )
    count = "gen_ai_server_request_duration_seconds_count"
    for model in ("claude", "claude-ha"):
        r = gw.chat(model, n=2)  # Anthropic cannot return several choices
        assert r.status_code == 422, r.text
        assert gw.metric(count, gen_ai_original_model=model, error_type="422") == 1, model
    assert gw.chat("no-such-model").status_code == 404
    assert gw.metric(count, gen_ai_original_model="other", error_type="404") == 1
    assert httpx.post(gw.url + "/v1/chat/completions", content=b"[1]", timeout=10).status_code == 400
    assert gw.metric(count, gen_ai_operation_name="chat", error_type="400") == 1
    assert httpx.post(gw.url + "/v1/nothing", content=b"{}", timeout=10).status_code == 404
    assert gw.metric(count, gen_ai_operation_name="unknown", error_type="404") == 1
    assert not anthropic_fake.requests
    assert gw.metric(count) == 5
