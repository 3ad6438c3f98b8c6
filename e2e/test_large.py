"""Large bodies (images as data URLs) pass whole, under the default 32 MiB limit."""

import base64
import os
import time

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


def vm_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def test_large_bodies_over_the_in_flight_budget_get_503_with_retry_after(gateway_factory, openai_fake, anthropic_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [("vision", [("openai", 0, None)]), ("claude", [("anthropic", 0, None)])]),
        extra_args=["--max-body-bytes-in-flight", str(3 * 1024 * 1024)],
    )
    import threading
    body = {"model": "vision", "messages": [image_message(1536 * 1024)]}  # 2 MiB as base64
    openai_fake.unary_delay = 2.0
    first = {}
    holder = threading.Thread(target=lambda: first.update(r=httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)))
    holder.start()
    try:
        time.sleep(0.8)  # the first body is held (its answer is slow)
        r = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 503, r.text[:300]
        assert r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert error["code"] == "overloaded" and str(3 * 1024 * 1024) in error["message"]
        messages = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
        r = httpx.post(gw.url + "/v1/messages", json=messages, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "overloaded_error"
        # Small bodies are not counted.
        openai_fake.unary_delay = 0
        assert gw.chat("vision").status_code == 200
    finally:
        holder.join()
    assert first["r"].status_code == 200
    # The budget is back once the first request ended.
    assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    assert gw.metric("gen_ai_server_request_duration_seconds_count", error_type="503") == 2


def test_memory_goes_back_after_large_bodies(gateway_factory, anthropic_fake):
    """Large bodies translated for another provider: what they took is returned after."""
    gw = gateway_factory(
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        route_yaml("route", [("claude", [("anthropic", 0, None)])]),
    )
    pid = gw.proc.pid  # `run`: the sidecar is this process (Envoy is its child)
    idle = vm_kib(pid, "VmRSS")
    body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "a" * (20 << 20)}]}
    for _ in range(4):
        assert httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
    assert gw.wait_in_flight_zero()
    time.sleep(0.5)
    grown = vm_kib(pid, "VmRSS") - idle
    assert vm_kib(pid, "VmHWM") - idle > 40_000  # the bodies did take memory
    assert grown < 20_000, f"still {grown} KiB more resident than before the large bodies"
