"""`--log-format json`: one structured event per answered request, naming the request
(id, model, backend, status, tokens, latency) and never its content or credentials."""

import json
import time

from harness import backend_yaml, route_yaml

PROMPT = "a-prompt-the-log-must-not-hold"
CLIENT_KEY = "sk-client-key-never-logged"
PROVIDER_KEY = "sk-openai-secret"


def json_events(gw, target):
    events = []
    for line in gw.read_log().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # Envoy's own lines are text
        if isinstance(event, dict) and event.get("target") == target:
            events.append(event)
    return events


def request_events(gw, count, timeout=10):
    """The request events, once `count` have been written (the sidecar logs as the
    response ends, possibly after the client has it)."""
    deadline = time.time() + timeout
    while True:
        events = json_events(gw, "llm_extproc::request")
        if len(events) >= count or time.time() > deadline:
            return events
        time.sleep(0.05)


def test_each_answer_is_one_json_event_without_content_or_credentials(gateway_factory, openai_fake):
    gw = gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key=PROVIDER_KEY),
                         route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
                         extra_args=["--log-format", "json"])
    r = gw.chat("gpt-4o-mini", content=PROMPT, headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert gw.chat("no-such-model").status_code == 404
    events = request_events(gw, 2)
    assert len(events) == 2, gw.read_log()
    served, refused = (e["fields"] for e in events)

    assert served["message"] == "request" and events[0]["level"] == "INFO"
    assert served["request_id"] and served["request_id"] != refused["request_id"]
    assert served["operation"] == "chat"
    assert served["model"] == "gpt-4o-mini"
    assert served["backend"] == "openai.default" and served["provider"] == "openai"
    assert served["status"] == 200 and served["error_type"] == ""
    assert served["input_tokens"] == usage["prompt_tokens"]
    assert served["output_tokens"] == usage["completion_tokens"]
    assert served["total_tokens"] == usage["total_tokens"]
    assert served["latency_ms"] > 0

    # The gateway's own refusal is logged too, with no backend.
    assert refused["status"] == 404 and refused["error_type"] == "404"
    assert refused["backend"] == ""
    assert refused["input_tokens"] == 0

    log = gw.read_log()
    for secret in (PROMPT, CLIENT_KEY, PROVIDER_KEY):
        assert secret not in log


def test_the_default_log_is_text(gateway_factory, openai_fake):
    gw = gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key=PROVIDER_KEY),
                         route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    assert gw.chat("gpt-4o-mini").status_code == 200
    time.sleep(0.2)
    assert json_events(gw, "llm_extproc::request") == []
    assert "llm_extproc::request" in gw.read_log()
