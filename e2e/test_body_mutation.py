"""`bodyMutation` on an AIServiceBackend and on a route's backendRef reaches the provider:
set and removed top-level fields of the final (translated) body, the reference's over the
backend's."""

import httpx

from harness import backend_yaml


def with_body_mutation(docs, mutation):
    return docs.replace("spec:\n  schema:", f"spec:\n  bodyMutation: {mutation}\n  schema:", 1)


ROUTE = """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r, namespace: default}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-4o-mini}]}]
      backendRefs: [{name: openai}]
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-tuned}]}]
      backendRefs:
        - name: openai
          bodyMutation:
            set: [{path: temperature, value: "0.9"}, {path: user, value: '"gateway"'}]
            remove: [top_p]
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-failover}]}]
      backendRefs: [{name: openai}, {name: openai, priority: 1}]
    - matches: [{headers: [{name: x-ai-eg-model, value: claude}]}]
      backendRefs: [{name: anthropic}]
"""


def test_body_mutation_reaches_the_provider(gateway_factory, openai_fake, anthropic_fake):
    gw = gateway_factory(
        with_body_mutation(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                           '{set: [{path: temperature, value: "0.2"}, {path: service_tier, value: \'"flex"\'}], remove: [user]}'),
        with_body_mutation(backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey",
                                        key="sk-ant-provider-key"),
                           '{set: [{path: temperature, value: "0.1"}], remove: [top_k]}'),
        ROUTE,
    )
    client = {"temperature": 1.5, "top_p": 0.5, "user": "alice"}
    # The backend's mutation, at the router level (one backend) and per attempt (failover).
    for model in ("gpt-4o-mini", "gpt-failover"):
        assert gw.chat(model, **client).status_code == 200
        sent = openai_fake.last()["body"]
        assert sent["temperature"] == 0.2 and sent["service_tier"] == "flex", model
        assert "user" not in sent and sent["top_p"] == 0.5 and sent["model"] == model
    # The reference's mutation over the backend's: its set wins over the backend's remove.
    assert gw.chat("gpt-tuned", **client).status_code == 200
    sent = openai_fake.last()["body"]
    assert sent["temperature"] == 0.9 and sent["user"] == "gateway" and "top_p" not in sent
    assert sent["service_tier"] == "flex"
    # After translation to the Messages API: on the provider's body.
    r = gw.chat("claude", temperature=1.0, max_tokens=20, top_k=5)
    assert r.status_code == 200, r.text
    sent = anthropic_fake.last()["body"]
    assert sent["temperature"] == 0.1 and "top_k" not in sent and sent["max_tokens"] == 20


def test_a_bad_body_mutation_is_refused_at_load(tmp_path):
    import subprocess
    from harness import BIN, write_config
    docs = with_body_mutation(backend_yaml("openai", "OpenAI", 9, policy="APIKey"),
                              '{set: [{path: temperature, value: warm}, {path: stream, value: "true"}]}')
    path = write_config(tmp_path, docs, ROUTE.split("    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-tuned")[0])
    r = subprocess.run([str(BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "spec.bodyMutation.set[0].value: is not JSON" in r.stderr
    assert "spec.bodyMutation.set[1].path: `stream` cannot be set" in r.stderr
