"""Large bodies (images as data URLs) pass whole, under the default 32 MiB limit."""

import base64
import os

import httpx

from fakes import FakeProvider, free_port
from harness import backend_yaml, route_yaml


def image_message(size):
    data = base64.b64encode(os.urandom(size)).decode()
    return {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]}


def test_large_bodies_pass_whole_and_over_the_limit_is_413(gateway_factory, openai_fake):
    backup = FakeProvider(kind="openai", key="sk-backup")
    try:
        gw = gateway_factory(
            backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
            backend_yaml("dead", "OpenAI", free_port(), policy="APIKey"),
            backend_yaml("backup", "OpenAI", backup.port, policy="APIKey", key="sk-backup"),
            route_yaml("route", [("vision", [("openai", 0, "gpt-4o")]),
                                 ("vision-failover", [("dead", 0, None), ("backup", 1, "gpt-4o")])]),
        )
        message = image_message(3 * 1024 * 1024)
        for model, fake in (("vision", openai_fake), ("vision-failover", backup)):
            r = httpx.post(gw.url + "/v1/chat/completions", json={"model": model, "messages": [message]}, timeout=60)
            assert r.status_code == 200, r.text[:500]
            seen = fake.last()["body"]
            assert seen["model"] == "gpt-4o"
            assert seen["messages"] == [message]  # every byte arrived, content-length matched
        r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "vision", "messages": [image_message(25 * 1024 * 1024)]},
                       timeout=60)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        assert gw.wait_in_flight_zero()
    finally:
        backup.stop()
