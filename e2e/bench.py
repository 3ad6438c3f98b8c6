"""Benchmark: the gateway against the same Envoy binary proxying straight to the same
fast upstream, interleaved in one run.

Reports the RPS ratio at 16 connections, the added p50 and p99 latency at 1 connection,
and the sidecar's RSS. Run it with `scripts/bench.sh` (which builds the release binaries
and installs wrk when missing).
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from fakes import free_port  # noqa: E402
from harness import ROOT, Gateway, backend_yaml, route_yaml, write_config  # noqa: E402

RELEASE = ROOT / "target" / "release"
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello!"}]}'


def direct_bootstrap(port, admin_port, upstream_port):
    """Envoy with no ext_proc: one route straight to the upstream."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "direct",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": [{
                "name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
            }],
        },
    }


def wrk(url, connections, seconds, script):
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", script, url + "/v1/chat/completions"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_us": pct(50), "p99_us": pct(99), "errors": int(non2xx.group(1)) if non2xx else 0}


def wait_ok(url):
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if httpx.post(url + "/v1/chat/completions", content=BODY, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def rss_kib(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) for k in ("VmRSS", "VmHWM")}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="llm-bench-"))
    script = tmp / "post.lua"
    script.write_text(f"wrk.method = 'POST'\nwrk.body = '{BODY}'\n"
                      "wrk.headers['Content-Type'] = 'application/json'\nwrk.headers['Authorization'] = 'Bearer client-key'\n")
    upstream_port = free_port()
    upstream = subprocess.Popen([str(RELEASE / "examples" / "bench_upstream"), str(upstream_port)])
    direct_port, direct_admin = free_port(), free_port()
    (tmp / "direct.json").write_text(json.dumps(direct_bootstrap(direct_port, direct_admin, upstream_port)))
    envoy_bin = os.environ.get("ENVOY_BIN", str(ROOT / ".venv" / "bin" / "envoy"))
    direct = subprocess.Popen([envoy_bin, "-c", str(tmp / "direct.json"), "--disable-hot-restart", "-l", "error",
                               "--concurrency", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = write_config(tmp, backend_yaml("bench", "OpenAI", upstream_port, policy="APIKey", key="sk-bench"),
                          route_yaml("bench", [("gpt-4o-mini", [("bench", 0, None)])]))
    os.environ["LLM_EXTPROC_BIN"] = str(RELEASE / "llm-extproc")
    import harness
    harness.BIN = RELEASE / "llm-extproc"
    # Both Envoys get one worker thread, so the comparison is like for like on 2 cores.
    gateway = Gateway([config], extra_args=["--envoy-concurrency", "1"], env={"RUST_LOG": "warn"})
    try:
        gateway.start()
        direct_url = f"http://127.0.0.1:{direct_port}"
        wait_ok(direct_url)
        wait_ok(gateway.url)
        results = {"gateway": {16: [], 1: []}, "direct": {16: [], 1: []}}
        wrk(gateway.url, 16, 2, str(script))  # warm up both
        wrk(direct_url, 16, 2, str(script))
        for _ in range(args.rounds):
            for connections in (16, 1):
                for name, url in (("gateway", gateway.url), ("direct", direct_url)):
                    results[name][connections].append(wrk(url, connections, args.seconds, str(script)))
        memory = rss_kib(gateway.proc.pid)
    finally:
        gateway.stop()
        for p in (direct, upstream):
            p.terminate()
            p.wait()

    def med(name, connections, key):
        return statistics.median(r[key] for r in results[name][connections])

    errors = sum(r["errors"] for name in results for c in results[name] for r in results[name][c])
    summary = {
        "rps_16_gateway": med("gateway", 16, "rps"),
        "rps_16_direct": med("direct", 16, "rps"),
        "rps_ratio_16": med("gateway", 16, "rps") / med("direct", 16, "rps"),
        "p50_added_us_1": med("gateway", 1, "p50_us") - med("direct", 1, "p50_us"),
        "p99_added_us_1": med("gateway", 1, "p99_us") - med("direct", 1, "p99_us"),
        "p50_us_1": {"gateway": med("gateway", 1, "p50_us"), "direct": med("direct", 1, "p50_us")},
        "p99_us_1": {"gateway": med("gateway", 1, "p99_us"), "direct": med("direct", 1, "p99_us")},
        "sidecar_rss_kib": memory["VmRSS"],
        "sidecar_peak_rss_kib": memory["VmHWM"],
        "non_2xx": errors,
        "rounds": args.rounds,
        "seconds_per_run": args.seconds,
    }
    print(json.dumps(summary, indent=2))
    print(f"\nRPS at 16 connections: gateway {summary['rps_16_gateway']:.0f}, direct {summary['rps_16_direct']:.0f}, "
          f"ratio {summary['rps_ratio_16']:.2f}")
    print(f"Added latency at 1 connection: p50 {summary['p50_added_us_1']:.0f} us, p99 {summary['p99_added_us_1']:.0f} us")
    print(f"Sidecar RSS: {memory['VmRSS'] / 1024:.1f} MiB (peak {memory['VmHWM'] / 1024:.1f} MiB)")
    if errors:
        print(f"WARNING: {errors} non-2xx responses", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
