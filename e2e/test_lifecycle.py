"""The gateway's processes under faults: a `kill -9` of `run` takes its Envoy along, a
new `run` refuses ports another process holds (and names it), two gateways share a
machine, and under `serve` a sidecar that died and came back is used again by the
Envoy that kept running."""

import os
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest

from fakes import FakeProvider, free_port
from harness import BIN, ROOT, Gateway, backend_yaml, route_yaml, write_config

ENVOY = ROOT / ".venv" / "bin" / "envoy"


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def gone(pid):
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def wait_until(condition, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_kill_9_of_run_takes_envoy_along():
    gw = Gateway([]).start()
    try:
        envoys = children(gw.proc.pid)
        assert envoys, "run has no Envoy child"
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(5)
        assert wait_until(lambda: all(gone(p) for p in envoys), 5), "Envoy outlived its run"
        assert wait_until(lambda: port_is_free(gw.port), 5)
        # A new gateway gets the same port at once.
        again = Gateway([])
        again.port = gw.port
        again.start()
        try:
            assert httpx.get(again.url + "/v1/models", timeout=5).status_code == 200
        finally:
            again.stop()
    finally:
        for pid in children(gw.proc.pid) if gw.proc.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        gw.stop()


@pytest.mark.parametrize("flag", ["--port", "--admin-port", "--envoy-admin-port"])
def test_run_refuses_a_port_another_process_holds(flag):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as Envoy's listeners do
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    gw = Gateway([])
    args = gw.command()
    if flag in args:
        args[args.index(flag) + 1] = str(port)
    else:
        args += [flag, str(port)]
    try:
        started = time.time()
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
        assert out.returncode == 1
        assert time.time() - started < 10
        text = out.stderr
        assert f"port {port}" in text and flag in text and "already in use" in text, text
        assert f"(pid {os.getpid()})" in text, text
        assert "gateway ready" not in text and "started Envoy" not in text
    finally:
        holder.close()


def test_two_gateways_on_one_machine():
    first = Gateway([]).start()
    try:
        second = Gateway([]).start()
        try:
            for gw in (first, second):
                assert httpx.get(gw.url + "/v1/models", timeout=5).status_code == 200
            assert first.proc.poll() is None and second.proc.poll() is None
        finally:
            second.stop()
    finally:
        first.stop()


def test_explicit_envoy_admin_port_is_kept():
    admin = free_port()
    gw = Gateway([], extra_args=["--envoy-admin-port", str(admin)]).start()
    try:
        info = httpx.get(f"http://127.0.0.1:{admin}/server_info", timeout=5).json()
        assert info["state"] == "LIVE"
        assert "gateway ready" in gw.read_log()
    finally:
        gw.stop()


class Serve:
    """`llm-extproc serve` on a unix socket, as the sidecar container runs it."""

    def __init__(self, config, socket_path):
        self.admin = free_port()
        self.args = [str(BIN), "serve", "--config", str(config), "--listen", str(socket_path),
                     "--admin", f"127.0.0.1:{self.admin}"]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(self.ready, 10), "serve did not become ready"
        return self

    def ready(self):
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


def test_sidecar_restarted_under_load_is_used_again_by_the_running_envoy(tmp_path, openai_fake):
    config = write_config(tmp_path, backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                          route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    sock = tmp_path / "extproc.sock"
    port = free_port()
    xds = tmp_path / "xds"
    bootstrap = subprocess.run([str(BIN), "render", "envoy", "--config", str(config), "--sidecar", str(sock),
                                "--xds-dir", str(xds), "--port", str(port), "--envoy-admin-port", str(free_port())],
                               capture_output=True, text=True, check=True).stdout
    (tmp_path / "envoy.json").write_text(bootstrap)
    sidecar = Serve(config, sock).start()
    envoy = subprocess.Popen([str(ENVOY), "-c", str(tmp_path / "envoy.json"), "--disable-hot-restart",
                              "--log-level", "error", "--concurrency", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    results = []  # (time, status)
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    status = client.post(url, json=body).status_code
                except httpx.HTTPError:
                    status = 0
                results.append((time.monotonic(), status))

    try:
        assert wait_until(lambda: port_is_free(port) is False, 10)
        assert wait_until(lambda: httpx.post(url, json=body, timeout=5).status_code == 200, 10)
        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(1)
        sidecar.kill()
        killed = time.monotonic()
        time.sleep(1)
        assert any(s == 503 for t, s in results if t > killed), "requests did not notice the sidecar was gone"
        # The socket file the dead sidecar left is removed and bound again.
        assert sock.exists()
        restarted = time.monotonic()
        sidecar = Serve(config, sock).start()
        time.sleep(3)
        stop.set()
        for w in workers:
            w.join(10)
        after = [(t, s) for t, s in results if t > restarted]
        first_ok = min(t for t, s in after if s == 200) - restarted
        assert first_ok < 2, f"first success {first_ok:.2f}s after the restart"
        late = [s for t, s in after if t > restarted + 2]
        assert late and all(s == 200 for s in late), late
        assert envoy.poll() is None, "Envoy was restarted or died"
    finally:
        stop.set()
        envoy.terminate()
        envoy.wait(10)
        if sidecar.proc.poll() is None:
            sidecar.proc.terminate()
            sidecar.proc.wait(10)
