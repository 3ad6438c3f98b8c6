"""Hot reload: a changed file is picked up without a restart; a broken one is refused."""

import time

import httpx

from harness import backend_yaml, route_yaml, write_config


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_secret_change_and_new_model_are_picked_up(gateway_factory, openai_fake, tmp_path):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
    )
    pid = gw.proc.pid
    assert gw.chat("gpt-4o-mini").status_code == 200

    # Rotate the key: the provider now wants the new one, and the next request uses it.
    openai_fake.key = "sk-rotated"
    write_config(tmp_path,
                 backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-rotated"),
                 route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)]), ("gpt-4.1", [("openai", 0, None)])]))
    assert wait_for(lambda: gw.chat("gpt-4o-mini").status_code == 200), gw.read_log()[-3000:]
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-rotated"

    # The new model routes (Envoy got the new route without a restart).
    assert wait_for(lambda: gw.chat("gpt-4.1").status_code == 200), gw.read_log()[-3000:]
    assert openai_fake.last()["body"]["model"] == "gpt-4.1"
    assert "gpt-4.1" in {m["id"] for m in httpx.get(gw.url + "/v1/models").json()["data"]}
    assert gw.proc.pid == pid and gw.proc.poll() is None


def test_broken_change_keeps_the_old_config(gateway_factory, openai_fake, tmp_path):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
    )
    write_config(tmp_path,
                 backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-x", secret_key="key"),
                 route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    assert wait_for(lambda: "configuration change rejected" in gw.read_log()), gw.read_log()[-3000:]
    assert "no `apiKey` key" in gw.read_log()
    r = gw.chat("gpt-4o-mini")
    assert r.status_code == 200
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-openai-secret"


def test_in_flight_request_finishes_on_the_old_config(gateway_factory, openai_fake, tmp_path):
    import threading
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
    )
    openai_fake.stream_gate = threading.Event()
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=20) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        # Reload mid-stream: the model disappears from the configuration.
        write_config(tmp_path,
                     backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                     route_yaml("route", [("other", [("openai", 0, None)])]))
        assert wait_for(lambda: "gpt-4o-mini" not in httpx.get(gw.url + "/v1/models").text)
        openai_fake.stream_gate.set()
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert gw.chat("gpt-4o-mini").status_code == 404
    assert gw.metric("gen_ai_client_token_usage_count", gen_ai_request_model="gpt-4o-mini", gen_ai_token_type="output") == 1


def test_mounted_secret_directory_is_read_and_watched(gateway_factory, openai_fake, tmp_path):
    """Secrets from a directory of mounted keys (<dir>/<secret>/<key>), as Kubernetes mounts them."""
    secrets = tmp_path / "secrets"
    (secrets / "openai-key").mkdir(parents=True)
    (secrets / "openai-key" / "apiKey").write_text("sk-openai-secret\n")
    docs = backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey").split("\n---\n")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write_config(config_dir, *[d for d in docs if "kind: Secret" not in d],
                 route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    gw = gateway_factory(config_dir, extra_args=["--secrets-dir", str(secrets)])
    assert gw.chat("gpt-4o-mini").status_code == 200
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-openai-secret"

    openai_fake.key = "sk-rotated"
    tmp = secrets / "openai-key" / ".apiKey.tmp"
    tmp.write_text("sk-rotated\n")
    tmp.rename(secrets / "openai-key" / "apiKey")
    assert wait_for(lambda: gw.chat("gpt-4o-mini").status_code == 200), gw.read_log()[-3000:]
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-rotated"


def test_emptied_config_keeps_the_old_one(gateway_factory, openai_fake, tmp_path):
    """Emptying the file while serving (a truncating editor, a half-synced mount) would
    leave no model: the reload is refused and says why."""
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]),
    )
    (tmp_path / "config.yaml").write_text("")
    assert wait_for(lambda: "configuration change rejected" in gw.read_log()), gw.read_log()[-3000:]
    assert "no AIGatewayRoute with rules" in gw.read_log()
    assert gw.chat("gpt-4o-mini").status_code == 200
    assert "gpt-4o-mini" in httpx.get(gw.url + "/v1/models").text


def test_trace_log_in_the_config_directory_does_not_loop(openai_fake, tmp_path):
    """The sidecar's own log written next to its config file, at trace level: a log line
    is a change in the watched directory and must not become a watch event that is
    logged again (it once grew the log by 30 MB a second) nor trigger a reload."""
    from harness import Gateway
    path = write_config(tmp_path,
                        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                        route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    gw = Gateway([path], env={"RUST_LOG": "trace"})
    gw.log_path = tmp_path / "gateway.log"
    try:
        gw.start()
        assert gw.chat("gpt-4o-mini").status_code == 200
        time.sleep(1)
        before = gw.log_path.stat().st_size
        time.sleep(2)
        grown = gw.log_path.stat().st_size - before
        assert grown < 200_000, f"an idle gateway logged {grown} bytes in 2 s"
        assert "configuration reloaded" not in gw.read_log()
        # The watch still sees the config file itself.
        write_config(tmp_path,
                     backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                     route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)]), ("gpt-4.1", [("openai", 0, None)])]))
        assert wait_for(lambda: gw.chat("gpt-4.1").status_code == 200), gw.read_log()[-3000:]
        assert gw.read_log().count("configuration reloaded") == 1
    finally:
        gw.stop()
