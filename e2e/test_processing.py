"""How the router-level ext_proc processes a request, read from Envoy's own counters: each
phase is answered once, at its headers, after its body was read (see
src/envoy/resources.rs). These pin the Envoy 1.40 behaviour the hot path relies on."""

import httpx

from harness import backend_yaml, route_yaml


def ext_proc_stats(gw):
    prefix = "http.llm.ext_proc."
    return {k.removeprefix(prefix): v for k, v in gw.envoy_stats(prefix).items()}


def delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def test_a_unary_request_is_answered_once_per_phase(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("m", [("openai", 0, None)])]),
    )
    before = ext_proc_stats(gw)
    r = gw.chat("m", headers={"authorization": "Bearer sk-client"})
    assert r.status_code == 200, r.text
    d = delta(before, ext_proc_stats(gw))
    # One answer to the request headers (routing, credentials and body at once) and one
    # to the response headers (the answer, read whole); Envoy sent both bodies unasked.
    assert d["streams_started"] == 1
    assert d["stream_msgs_received"] == 2, d
    assert d["stream_msgs_sent"] >= 4, d
    assert d.get("spurious_msgs_received", 0) == 0 and d.get("message_timeouts", 0) == 0
    # Routed on the model the answer set, with the client's credential replaced and the
    # content-length Envoy dropped restored (the fake checks it).
    seen = openai_fake.last()
    assert seen["headers"]["authorization"] == "Bearer sk-openai-secret"
    assert int(seen["headers"]["content-length"]) > 0 and "transfer-encoding" not in seen["headers"]
    assert openai_fake.rejected == []  # it refuses a content-length that is not the body's


def test_a_stream_is_answered_at_its_headers_then_piece_by_piece(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("m", [("openai", 0, None)])]),
    )
    before = ext_proc_stats(gw)
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=10,
                      json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    d = delta(before, ext_proc_stats(gw))
    # Sent: the request's headers and 1-2 body pieces, the response's headers and pieces.
    # Answered: both headers, and every response piece on its own (the request's pieces
    # only through the request headers' one answer).
    response_pieces = d["stream_msgs_received"] - 2
    request_pieces = d["stream_msgs_sent"] - 2 - response_pieces
    assert response_pieces >= 2 and request_pieces in (1, 2), d
    assert d.get("spurious_msgs_received", 0) == 0
