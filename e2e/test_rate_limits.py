"""A provider's 429: retried only where another backend can take the request, and the
provider's `retry-after` reaches the client so that its SDK waits as the provider asked."""

import time

import pytest

from fakes import FakeProvider
from harness import backend_yaml, route_yaml

RATE_LIMITED = {"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests", "code": "rate_limit_exceeded"}}


@pytest.fixture
def limited():
    fake = FakeProvider(kind="openai", key="sk-primary")
    fake.fail_status = 429
    fake.fail_body = RATE_LIMITED
    fake.fail_headers = {"retry-after": "2"}
    yield fake
    fake.stop()


def test_single_backend_429_is_not_retried_and_keeps_retry_after(gateway_factory, limited):
    gw = gateway_factory(backend_yaml("primary", "OpenAI", limited.port, policy="APIKey", key="sk-primary"),
                         route_yaml("route", [("gpt-4o-mini", [("primary", 0, None)])]))
    started = time.monotonic()
    r = gw.chat("gpt-4o-mini")
    assert r.status_code == 429
    assert r.json() == RATE_LIMITED
    assert r.headers["retry-after"] == "2"
    # The same backend asked again would only be rate limited again (and sooner).
    assert len(limited.requests) == 1
    assert time.monotonic() - started < 5


def test_429_moves_to_the_backup_at_once(gateway_factory, limited):
    backup = FakeProvider(kind="openai", key="sk-backup")
    try:
        gw = gateway_factory(backend_yaml("primary", "OpenAI", limited.port, policy="APIKey", key="sk-primary"),
                             backend_yaml("backup", "OpenAI", backup.port, policy="APIKey", key="sk-backup"),
                             route_yaml("route", [("gpt-4o-mini", [("primary", 0, None), ("backup", 1, None)])]))
        started = time.monotonic()
        r = gw.chat("gpt-4o-mini")
        assert r.status_code == 200, r.text
        # The backup is not the one rate limited: no waiting out the primary's retry-after.
        assert time.monotonic() - started < 1.5
        assert len(limited.requests) == 1 and len(backup.requests) == 1
        # Both limited: the client gets the last 429 with its retry-after.
        backup.fail_status, backup.fail_body, backup.fail_headers = 429, RATE_LIMITED, {"retry-after": "3"}
        r = gw.chat("gpt-4o-mini")
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        assert len(limited.requests) == 2 and len(backup.requests) == 2
    finally:
        backup.stop()
