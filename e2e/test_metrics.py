"""/metrics stays bounded whatever clients send, and counts every answered request once."""

import random
import string

import httpx

from harness import backend_yaml

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
