"""Failover by priority: a dead or failing primary costs the client nothing."""

import json

import pytest

from fakes import FakeProvider, free_port
from harness import backend_yaml, route_yaml


@pytest.fixture
def backup():
    fake = FakeProvider(kind="openai", key="sk-backup")
    yield fake
    fake.stop()


def failover_config(primary_port, backup_port, backup_schema="OpenAI"):
    backup = backend_yaml("backup", backup_schema, backup_port, policy="APIKey" if backup_schema == "OpenAI" else "AzureAPIKey",
                          key="sk-backup" if backup_schema == "OpenAI" else "azure-secret-key",
                          version="2025-01-01-preview" if backup_schema == "AzureOpenAI" else None)
    return (
        backend_yaml("primary", "OpenAI", primary_port, policy="APIKey", key="sk-primary"),
        backup,
        route_yaml("route", [("gpt-4o-mini", [("primary", 0, None), ("backup", 1, None)])]),
    )


def test_primary_refusing_connections(gateway_factory, backup):
    gw = gateway_factory(*failover_config(free_port(), backup.port))
    for _ in range(10):
        r = gw.chat("gpt-4o-mini")
        assert r.status_code == 200, r.text
    assert len(backup.requests) == 10
    assert backup.last()["headers"]["authorization"] == "Bearer sk-backup"
    assert gw.wait_in_flight_zero()


def test_primary_answering_503(gateway_factory, backup):
    primary = FakeProvider(kind="openai", key="sk-primary")
    primary.fail_status = 503
    try:
        gw = gateway_factory(*failover_config(primary.port, backup.port))
        for _ in range(10):
            r = gw.chat("gpt-4o-mini")
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["total_tokens"] > 0
        assert len(backup.requests) == 10
        # The very first request already reached the primary and was retried on the backup.
        assert len(primary.requests) >= 1
        assert primary.requests[0]["headers"]["authorization"] == "Bearer sk-primary"
    finally:
        primary.stop()


def test_failover_across_schemas_rebuilds_the_request(gateway_factory):
    azure = FakeProvider(kind="azure", key="azure-secret-key", api_version="2025-01-01-preview")
    try:
        gw = gateway_factory(*failover_config(free_port(), azure.port, backup_schema="AzureOpenAI"))
        r = gw.chat("gpt-4o-mini", headers={"authorization": "Bearer client"})
        assert r.status_code == 200, r.text
        seen = azure.last()
        assert seen["path"] == "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2025-01-01-preview"
        assert seen["headers"]["api-key"] == "azure-secret-key" and "authorization" not in seen["headers"]
        assert azure.rejected == []
    finally:
        azure.stop()


def test_every_backend_failing_returns_the_last_provider_status(gateway_factory, backup):
    primary = FakeProvider(kind="openai", key="sk-primary")
    primary.fail_status = 503
    backup.fail_status = 429
    backup.fail_body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    try:
        gw = gateway_factory(*failover_config(primary.port, backup.port))
        r = gw.chat("gpt-4o-mini")
        assert r.status_code == 429
        assert r.json() == backup.fail_body
        # A provider error that is not JSON is wrapped as an OpenAI error, status kept.
        backup.fail_status = 502
        backup.fail_body = b"<html>502 Bad Gateway</html>"
        r = gw.chat("gpt-4o-mini")
        assert r.status_code == 502
        error = r.json()["error"]
        assert "502 Bad Gateway" in error["message"] and error["type"] == "upstream_error"
        assert gw.wait_in_flight_zero()
    finally:
        primary.stop()


def test_provider_error_passes_through_with_its_status(gateway_factory, openai_fake):
    import fakes
    openai_fake.fail_status = fakes.BAD_REQUEST_STATUS
    openai_fake.fail_body = json.loads(fakes.BAD_REQUEST)
    gw = gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                         route_yaml("route", [("gpt-5-nano", [("openai", 0, None)])]))
    r = gw.chat("gpt-5-nano", max_tokens=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_parameter"
    assert len(openai_fake.requests) == 1  # 4xx is not retried
