"""Timeouts for streamed answers. A rule without `timeouts.request` bounds a unary answer
by 60 s but a stream only by silence (reasoning models stream for minutes); a written
`timeouts.request` bounds the whole stream, as the CRD says; `streamIdleTimeout` bounds
the provider's silence within an attempt. On Envoy 1.40 a stream cut mid-answer is a
reset (the client's HTTP library sees the body end early); the sidecar logs it with the
request id and meters it as an error."""

import time

import httpx
import pytest

from harness import backend_yaml, route_yaml

BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hello!"}]}


def stream(gw):
    """(events, error, seconds) of one streamed request."""
    started, events = time.monotonic(), []
    try:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=BODY, timeout=120,
                          headers={"accept-encoding": "identity"}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line:
                    events.append(line)
        return events, None, time.monotonic() - started
    except httpx.RemoteProtocolError as e:
        return events, e, time.monotonic() - started


def rule_yaml(extra):
    return route_yaml("route", [("m", [("openai", 0, None)])]).replace(
        "      backendRefs:", extra + "      backendRefs:") if extra else route_yaml("route", [("m", [("openai", 0, None)])])


def gateway(gateway_factory, fake, extra=""):
    return gateway_factory(backend_yaml("openai", "OpenAI", fake.port, policy="APIKey", key="sk-openai-secret"),
                           rule_yaml(extra))


def reset_streams(gw):
    text = httpx.get(gw.admin + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("gen_ai_server_request_duration") and "_count" in line.split("{")[0]
               and 'error_type="stream_reset"' in line)


def test_a_stream_outlives_the_default_request_timeout(gateway_factory, openai_fake):
    openai_fake.stream_delay = 21  # four events: 63 s, past the 60 s a unary answer gets
    gw = gateway(gateway_factory, openai_fake)
    events, error, seconds = stream(gw)
    assert error is None, f"cut after {seconds:.1f}s: {error}"
    assert seconds > 60 and events[-1] == "data: [DONE]"


def test_a_written_request_timeout_bounds_the_whole_stream(gateway_factory, openai_fake):
    openai_fake.stream_delay = 1
    gw = gateway(gateway_factory, openai_fake, extra="      timeouts:\n        request: 2s\n")
    events, error, seconds = stream(gw)
    assert error is not None and "incomplete" in str(error)
    # Envoy closes the connection up to its delayed_close_timeout (1 s) after the reset.
    assert 1.5 < seconds < 4.5 and events and events[-1] != "data: [DONE]"
    deadline = time.time() + 5
    while time.time() < deadline and reset_streams(gw) == 0:
        time.sleep(0.1)
    assert reset_streams(gw) == 1
    log = gw.read_log()
    assert "stream ended before the provider finished it" in log
    assert gw.wait_in_flight_zero()


def test_stream_idle_timeout_bounds_the_providers_silence(gateway_factory, openai_fake):
    gw = gateway(gateway_factory, openai_fake, extra="      streamIdleTimeout: 1s\n")
    openai_fake.stream_delay = 0.4  # 1.2 s in all, never silent for 1 s
    events, error, _ = stream(gw)
    assert error is None and events[-1] == "data: [DONE]"
    openai_fake.stream_delay = 3
    events, error, seconds = stream(gw)
    assert error is not None and seconds < 3.5, seconds
    assert events and events[-1] != "data: [DONE]"
