"""Per-request state shared by the two placements is freed however a request ends."""

import json
import socket
import threading
import time

import httpx
import pytest

from harness import backend_yaml, route_yaml


@pytest.fixture
def gw(gateway_factory, openai_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)]), ("slow", [("openai", 0, None)], "1s")]),
    )


def wait_in_flight(gw, value, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if gw.in_flight() == value:
            return True
        time.sleep(0.02)
    return False


def test_success(gw):
    assert gw.chat("gpt-4o-mini").status_code == 200
    assert gw.wait_in_flight_zero()


def test_state_is_held_while_a_stream_runs_and_freed_on_client_abort(gw, openai_fake):
    openai_fake.stream_gate = threading.Event()
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    received = b""
    sock.settimeout(10)
    while b"data: " not in received:
        received += sock.recv(65536)
    assert wait_in_flight(gw, 1)
    sock.close()  # the client goes away mid-stream
    assert gw.wait_in_flight_zero()
    openai_fake.stream_gate.set()


def test_upstream_reset(gw, openai_fake):
    openai_fake.reset_mid_stream = True
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    try:
        httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=10)
    except httpx.HTTPError:
        pass  # the response was cut: that is what an upstream reset looks like
    assert gw.wait_in_flight_zero()


def test_timeout(gw, openai_fake):
    openai_fake.unary_delay = 3
    r = gw.chat("slow")
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "gateway_error"
    assert gw.wait_in_flight_zero()


def test_provider_error_and_immediate_answers(gw, openai_fake):
    openai_fake.fail_status = 400
    assert gw.chat("gpt-4o-mini").status_code == 400
    assert gw.chat("unknown").status_code == 404
    assert gw.wait_in_flight_zero()
