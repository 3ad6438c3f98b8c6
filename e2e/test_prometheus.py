"""A real Prometheus server (Debian's package, installed by scripts/setup.sh) scrapes the
admin port's /metrics: PromQL sums are exact, and `promtool check metrics` finds nothing
to lint."""

import shutil
import subprocess
import tempfile
import time

import httpx
import pytest

from fakes import free_port
from harness import backend_yaml, route_yaml

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(not (PROMETHEUS and PROMTOOL),
                                reason="needs Debian's prometheus package (scripts/setup.sh installs it as root)")


@pytest.fixture
def gateway(gateway_factory, openai_fake):
    return gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                           route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)]),
                                                ("gpt-4o", [("openai", 0, None)])]))


@pytest.fixture
def prometheus(gateway):
    data = tempfile.mkdtemp(prefix="prom-")
    config = f"""global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: gateway
    static_configs: [{{targets: ["127.0.0.1:{gateway.admin_port}"]}}]
"""
    with open(f"{data}/prometheus.yml", "w") as f:
        f.write(config)
    port = free_port()
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={data}/prometheus.yml", f"--storage.tsdb.path={data}/tsdb",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(data, ignore_errors=True)


def query(prometheus, promql):
    try:
        r = httpx.get(prometheus + "/api/v1/query", params={"query": promql}, timeout=5)
    except httpx.HTTPError:
        return None
    result = r.json()["data"]["result"] if r.status_code == 200 else []
    return float(result[0]["value"][1]) if result else None


def test_promql_sums_are_exact(gateway, prometheus):
    tokens = {"input": 0, "output": 0}
    for model in ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]:
        r = gateway.chat(model)
        assert r.status_code == 200
        tokens["input"] += r.json()["usage"]["prompt_tokens"]
        tokens["output"] += r.json()["usage"]["completion_tokens"]
    assert gateway.chat("no-such-model").status_code == 404
    expected = {
        'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="input"})': tokens["input"],
        'sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})': tokens["output"],
        'sum(gen_ai_client_token_usage_count{gen_ai_token_type="input",gen_ai_original_model="gpt-4o-mini"})': 2,
        'sum(gen_ai_server_request_duration_seconds_count{error_type=""})': 3,
        'sum(gen_ai_server_request_duration_seconds_count{error_type="404"})': 1,
    }
    deadline = time.time() + 30
    seen = {}
    while time.time() < deadline:
        seen = {q: query(prometheus, q) for q in expected}
        if seen == expected:
            break
        time.sleep(0.5)
    assert seen == expected


def test_promtool_finds_nothing_to_lint(gateway):
    assert gateway.chat("gpt-4o-mini").status_code == 200
    text = httpx.get(gateway.admin + "/metrics", timeout=5).text
    assert "gen_ai_client_token_usage_bucket" in text
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
