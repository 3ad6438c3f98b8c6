"""OpenTelemetry over OTLP/HTTP, off (and the client's `traceparent` untouched) unless the
standard `OTEL_*` variables ask. Traces: a span per request after the GenAI conventions,
the client's W3C `traceparent` continued and the provider called in the same trace.
Metrics: pushed with the sums /metrics shows."""

import json
import subprocess
import time

import httpx

import pytest

from harness import BIN, backend_yaml, route_yaml
from otlp_receiver import SPAN_KIND_CLIENT, OtlpReceiver, attributes

PROMPT = "a-prompt-the-trace-must-not-hold"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture
def receiver():
    r = OtlpReceiver()
    yield r
    r.stop()


def traced_gateway(gateway_factory, openai_fake, receiver):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"})


def test_the_span_continues_the_clients_trace_and_the_provider_is_called_in_it(gateway_factory, openai_fake, receiver):
    gw = traced_gateway(gateway_factory, openai_fake, receiver)
    r = gw.chat("gpt-4o-mini", content=PROMPT, headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    spans = receiver.wait_spans(1)
    assert len(spans) == 1, gw.read_log()
    resource, span = spans[0]
    assert resource["service.name"] == "llm-extproc"
    assert span.trace_id.hex() == CLIENT_TRACE
    assert span.parent_span_id.hex() == CLIENT_SPAN
    assert span.name == "chat gpt-4o-mini" and span.kind == SPAN_KIND_CLIENT
    attrs = attributes(span)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == r.json()["model"]
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs
    assert attrs["gen_ai.response.finish_reasons"] == [r.json()["choices"][0]["finish_reason"]]
    # Content only when asked for (see the capture test below).
    assert PROMPT.encode() not in span.SerializeToString()
    assert not {"gen_ai.input.messages", "gen_ai.output.messages"} & attrs.keys()

    # The provider's request names the gateway's span as its parent, in the client's trace.
    sent = openai_fake.requests[-1]["headers"]["traceparent"]
    assert sent == f"00-{CLIENT_TRACE}-{span.span_id.hex()}-01"


CAPTURE = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}


def test_content_is_recorded_when_asked_unary_and_streamed_through_a_translation(
        gateway_factory, openai_fake, anthropic_fake, receiver):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)]),
                             ("claude", [("anthropic", 0, "claude-3-opus-20240229")])]),
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50", **CAPTURE})
    r = gw.chat("gpt-4o-mini", content=PROMPT)
    assert r.status_code == 200, r.text
    (_, span), = receiver.wait_spans(1)
    attrs = attributes(span)
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
    choice = r.json()["choices"][0]
    assert json.loads(attrs["gen_ai.output.messages"]) == [{
        "role": "assistant", "finish_reason": choice["finish_reason"],
        "parts": [{"type": "text", "content": choice["message"]["content"]}]}]

    # A stream translated from Anthropic's events: the output is what the client read.
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30, json={
            "model": "claude", "stream": True, "max_tokens": 50,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]}) as s:
        assert s.status_code == 200
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c["choices"])
    reasons = [c["choices"][0]["finish_reason"] for c in events if c["choices"] and c["choices"][0]["finish_reason"]]
    assert text and len(reasons) == 1
    spans = receiver.wait_spans(2)
    attrs = attributes(spans[1][1])
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.response.finish_reasons"] == reasons
    assert json.loads(attrs["gen_ai.input.messages"])[0] == {"role": "system", "parts": [{"type": "text", "content": "be brief"}]}
    output = json.loads(attrs["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "finish_reason": reasons[0], "parts": [{"type": "text", "content": text}]}]
    # Never the credentials, whatever is captured.
    for span in (spans[0][1], spans[1][1]):
        assert b"sk-openai-secret" not in span.SerializeToString() and b"sk-ant-provider-key" not in span.SerializeToString()


def test_without_a_client_trace_the_span_starts_one(gateway_factory, openai_fake, receiver):
    gw = traced_gateway(gateway_factory, openai_fake, receiver)
    assert gw.chat("gpt-4o-mini").status_code == 200
    (_, span), = receiver.wait_spans(1)
    assert len(span.trace_id) == 16 and span.parent_span_id == b""
    assert openai_fake.requests[-1]["headers"]["traceparent"] == f"00-{span.trace_id.hex()}-{span.span_id.hex()}-01"


def test_a_refusal_is_a_span_with_its_error_type(gateway_factory, openai_fake, receiver):
    gw = traced_gateway(gateway_factory, openai_fake, receiver)
    assert gw.chat("no-such-model", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}).status_code == 404
    (_, span), = receiver.wait_spans(1)
    attrs = attributes(span)
    assert attrs["error.type"] == "404" and attrs["http.response.status_code"] == 404
    # The exact model asked for, not the metrics' bounded label.
    assert attrs["gen_ai.request.model"] == "no-such-model" and span.name == "chat no-such-model"
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert span.trace_id.hex() == CLIENT_TRACE


def test_traces_are_off_by_default_and_the_clients_header_reaches_the_provider(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    client = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    assert gw.chat("gpt-4o-mini", headers={"traceparent": client}).status_code == 200
    assert openai_fake.requests[-1]["headers"]["traceparent"] == client
    assert "exporting traces" not in gw.read_log()


@pytest.mark.parametrize("env,message", [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin: only `otlp` and `none` are supported"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: only `http/protobuf` is supported"),
])
def test_an_export_it_cannot_do_is_refused_at_start(tmp_path, env, message):
    import os
    r = subprocess.run([str(BIN), "serve", "--config", str(tmp_path), "--listen", str(tmp_path / "s.sock")],
                       env=dict(os.environ, **env), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and message in r.stderr


def test_metrics_are_pushed_over_otlp_with_the_same_sums(gateway_factory, openai_fake, receiver):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
        env={"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
             "OTEL_TRACES_EXPORTER": "none", "OTEL_METRIC_EXPORT_INTERVAL": "100"})
    prompt_tokens = 0
    for _ in range(3):
        r = gw.chat("gpt-4o-mini")
        assert r.status_code == 200
        prompt_tokens += r.json()["usage"]["prompt_tokens"]

    def input_points():
        return [p for p in receiver.metric_points("gen_ai.client.token.usage")
                if attributes(p).get("gen_ai.token.type") == "input"]

    deadline = time.time() + 10
    while sum(p.count for p in input_points()) < 3 and time.time() < deadline:
        time.sleep(0.05)
    points = input_points()
    assert sum(p.count for p in points) == 3, gw.read_log()
    assert sum(p.sum for p in points) == prompt_tokens
    assert attributes(points[0])["gen_ai.request.model"] == "gpt-4o-mini"
    # The pull on /metrics sees the same numbers.
    assert gw.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == prompt_tokens
    assert receiver.spans == []
