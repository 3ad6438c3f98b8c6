"""Benchmark: the gateway against the same Envoy binary proxying straight to the same
fast upstream, interleaved in one run, for several translation scenarios.

For each scenario it reports the RPS ratio at 16 connections, the added p50 and p99
latency at 1 connection, and the sidecar's RSS. Scenarios (`--scenario`, default all):

- openai: OpenAI to OpenAI (API-key swap and usage metering);
- anthropic: OpenAI chat to Anthropic Messages;
- bedrock: OpenAI chat to Bedrock Converse, SigV4-signed;
- bedrock-stream: OpenAI chat with `"stream":true` to Bedrock ConverseStream, the AWS
  event stream translated to OpenAI SSE (wrk measures whole responses).

The direct baseline of each scenario is the same Envoy sending the client's request
straight to the upstream path the gateway hits (`/v1/messages`, `/model/{id}/converse`...),
so both sides cost the upstream the same work. Each scenario gets its own gateway, and one
request through it is checked before timing. Run it with `scripts/bench.sh` (which builds
the release binaries and installs wrk when missing).
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
import urllib.parse

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from fakes import free_port  # noqa: E402
from harness import ROOT, Gateway, aws_credentials_file, backend_yaml, route_yaml, write_config  # noqa: E402

RELEASE = ROOT / "target" / "release"
CHAT_PATH = "/v1/chat/completions"
TEXT = "Hello! How can I help you today?"  # every answer of examples/bench_upstream.rs says this
BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
# The path the gateway sends Converse to: the model id as one encoded segment.
BEDROCK_PATH = "/model/" + urllib.parse.quote(BEDROCK_MODEL, safe="") + "/converse"


def body(model, stream=False):
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}],
                       **({"stream": True} if stream else {})}, separators=(",", ":"))


# name -> gateway config, the model the client asks for, whether it streams, and the
# upstream path the gateway hits (the direct baseline's path).
SCENARIOS = {
    "openai": {
        "config": lambda port: [backend_yaml("bench", "OpenAI", port, policy="APIKey", key="sk-bench"),
                                route_yaml("bench", [("gpt-4o-mini", [("bench", 0, None)])])],
        "model": "gpt-4o-mini", "stream": False, "upstream_path": CHAT_PATH,
    },
    "anthropic": {
        "config": lambda port: [backend_yaml("bench", "Anthropic", port, policy="AnthropicAPIKey", key="sk-ant-bench"),
                                route_yaml("bench", [("claude", [("bench", 0, "claude-3-5-haiku-20241022")])])],
        "model": "claude", "stream": False, "upstream_path": "/v1/messages",
    },
    "bedrock": {
        "config": lambda port: [backend_yaml("bench", "AWSBedrock", port, policy="AWSCredentials", key=aws_credentials_file()),
                                route_yaml("bench", [("claude", [("bench", 0, BEDROCK_MODEL)])])],
        "model": "claude", "stream": False, "upstream_path": BEDROCK_PATH,
    },
    "bedrock-stream": {
        "config": lambda port: [backend_yaml("bench", "AWSBedrock", port, policy="AWSCredentials", key=aws_credentials_file()),
                                route_yaml("bench", [("claude", [("bench", 0, BEDROCK_MODEL)])])],
        "model": "claude", "stream": True, "upstream_path": BEDROCK_PATH + "-stream",
    },
}


def direct_bootstrap(port, admin_port, upstream_port):
    """Envoy with no ext_proc: one route straight to the upstream, path unchanged."""
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


def wrk_script(path, request_body):
    path = pathlib.Path(path)
    path.write_text(f"wrk.method = 'POST'\nwrk.body = '{request_body}'\n"
                    "wrk.headers['Content-Type'] = 'application/json'\nwrk.headers['Authorization'] = 'Bearer client-key'\n")
    return str(path)


def wrk(url, connections, seconds, script):
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          "-s", script, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "requests": requests, "p50_us": pct(50), "p99_us": pct(99), "errors": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(int(g) for g in socket_errors.groups()) if socket_errors else 0}


def wait_ok(url, request_body):
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if httpx.post(url, content=request_body, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def check_answer(name, url, request_body, stream):
    """One request through the gateway must be a real chat completion (or a whole SSE stream),
    so a broken path cannot make a fast but meaningless number."""
    r = httpx.post(url, content=request_body, headers={"Content-Type": "application/json",
                                                       "Authorization": "Bearer client-key"}, timeout=10)
    problem = None
    if r.status_code != 200:
        problem = f"status {r.status_code}"
    elif stream:
        lines = [line for line in r.text.splitlines() if line.startswith("data: ")]
        chunks = [json.loads(line[6:]) for line in lines[:-1]] if lines else []
        text = "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in chunks)
        if not lines or lines[-1] != "data: [DONE]":
            problem = "the stream does not end with data: [DONE]"
        elif any(c.get("object") != "chat.completion.chunk" for c in chunks) or text != TEXT:
            problem = f"not chat.completion.chunks saying {TEXT!r}"
    else:
        try:
            answer = r.json()
        except ValueError:
            answer = {}
        if answer.get("object") != "chat.completion" or answer["choices"][0]["message"].get("content") != TEXT:
            problem = f"not a chat.completion saying {TEXT!r}"
    if problem:
        raise RuntimeError(f"{name}: the gateway's answer is wrong ({problem}):\n"
                           f"{r.headers.get('content-type')}\n{r.text[:2000]}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User plus system CPU time of a process (all its threads) so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid):
    found = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def measured(pids, run):
    """Runs `run` and returns its result with the CPU seconds each of `pids` spent meanwhile."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = run()
    result["cpu_s"] = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return result


def rss_kib(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) for k in ("VmRSS", "VmHWM")}


def run_scenario(name, spec, args, tmp, upstream_port, direct_base, pids):
    request_body = body(spec["model"], spec["stream"])
    script = wrk_script(tmp / f"{name}.lua", request_body)
    config_dir = tmp / name
    config_dir.mkdir()
    config = write_config(config_dir, *spec["config"](upstream_port))
    # Both Envoys get one worker thread, so the comparison is like for like on 2 cores.
    gateway = Gateway([config], extra_args=["--envoy-concurrency", "1"], env={"RUST_LOG": "warn"})
    direct_url = direct_base + spec["upstream_path"]
    try:
        gateway.start()
        gateway_url = gateway.url + CHAT_PATH
        wait_ok(direct_url, request_body)
        wait_ok(gateway_url, request_body)
        check_answer(name, gateway_url, request_body, spec["stream"])
        results = {"gateway": {16: [], 1: []}, "direct": {16: [], 1: []}}
        wrk(gateway_url, 16, 2, script)  # warm up both
        wrk(direct_url, 16, 2, script)
        (gateway_envoy,) = children(gateway.proc.pid)
        side_pids = {"gateway": {"sidecar": gateway.proc.pid, "envoy": gateway_envoy, "upstream": pids["upstream"]},
                     "direct": {"envoy": pids["direct_envoy"], "upstream": pids["upstream"]}}
        stats_before = gateway.envoy_stats("http.llm.ext_proc.")
        gateway_requests = 0
        for _ in range(args.rounds):
            for connections in (16, 1):
                for side, url in (("gateway", gateway_url), ("direct", direct_url)):
                    result = measured(side_pids[side], lambda: wrk(url, connections, args.seconds, script))
                    results[side][connections].append(result)
                    if side == "gateway":
                        gateway_requests += result["requests"]
        stats_after = gateway.envoy_stats("http.llm.ext_proc.")
        memory = rss_kib(gateway.proc.pid)
    finally:
        gateway.stop()

    def med(side, connections, key):
        return statistics.median(r[key] for r in results[side][connections])

    runs = [r for side in results for c in results[side] for r in results[side][c]]

    def cpu_per_request(side, process):
        # CPU microseconds per request at 16 connections (the throughput runs).
        rs = results[side][16]
        return sum(r["cpu_s"][process] for r in rs) * 1e6 / sum(r["requests"] for r in rs)

    def per_request(stat):
        return (stats_after.get(stat, 0) - stats_before.get(stat, 0)) / max(gateway_requests, 1)
    ext_proc = {stat: round(per_request(f"http.llm.ext_proc.{stat}"), 2)
                for stat in ("streams_started", "stream_msgs_sent", "stream_msgs_received")}
    return {
        "cpu_us_per_request_16": {
            "gateway": {p: round(cpu_per_request("gateway", p)) for p in ("envoy", "sidecar")},
            "direct": {"envoy": round(cpu_per_request("direct", "envoy"))},
        },
        "ext_proc_per_request": ext_proc,
        "rps_16_gateway": med("gateway", 16, "rps"),
        "rps_16_direct": med("direct", 16, "rps"),
        "rps_ratio_16": med("gateway", 16, "rps") / med("direct", 16, "rps"),
        "p50_added_us_1": med("gateway", 1, "p50_us") - med("direct", 1, "p50_us"),
        "p99_added_us_1": med("gateway", 1, "p99_us") - med("direct", 1, "p99_us"),
        "p50_us_1": {"gateway": med("gateway", 1, "p50_us"), "direct": med("direct", 1, "p50_us")},
        "p99_us_1": {"gateway": med("gateway", 1, "p99_us"), "direct": med("direct", 1, "p99_us")},
        "sidecar_rss_kib": memory["VmRSS"],
        "sidecar_peak_rss_kib": memory["VmHWM"],
        "non_2xx": sum(r["errors"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "rounds": args.rounds,
        "seconds_per_run": args.seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="llm-bench-"))
    upstream_port = free_port()
    upstream = subprocess.Popen([str(RELEASE / "examples" / "bench_upstream"), str(upstream_port)])
    direct_port, direct_admin = free_port(), free_port()
    (tmp / "direct.json").write_text(json.dumps(direct_bootstrap(direct_port, direct_admin, upstream_port)))
    envoy_bin = os.environ.get("ENVOY_BIN", str(ROOT / ".venv" / "bin" / "envoy"))
    direct = subprocess.Popen([envoy_bin, "-c", str(tmp / "direct.json"), "--disable-hot-restart", "-l", "error",
                               "--concurrency", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["LLM_EXTPROC_BIN"] = str(RELEASE / "llm-extproc")
    import harness
    harness.BIN = RELEASE / "llm-extproc"
    summaries = {}
    pids = {"direct_envoy": direct.pid, "upstream": upstream.pid}
    try:
        for name in names:
            summary = run_scenario(name, SCENARIOS[name], args, tmp, upstream_port, f"http://127.0.0.1:{direct_port}",
                                   pids)
            summaries[name] = summary
            if len(names) > 1:
                print(f"== {name}")
            print(json.dumps(summary, indent=2), flush=True)
    finally:
        for p in (direct, upstream):
            p.terminate()
            p.wait()

    if "openai" in summaries:
        s = summaries["openai"]
        print(f"\nRPS at 16 connections: gateway {s['rps_16_gateway']:.0f}, direct {s['rps_16_direct']:.0f}, "
              f"ratio {s['rps_ratio_16']:.2f}")
        print(f"Added latency at 1 connection: p50 {s['p50_added_us_1']:.0f} us, p99 {s['p99_added_us_1']:.0f} us")
        print(f"Sidecar RSS: {s['sidecar_rss_kib'] / 1024:.1f} MiB (peak {s['sidecar_peak_rss_kib'] / 1024:.1f} MiB)")
    print()
    for name, s in summaries.items():
        print(f"{name + ':':16} ratio {s['rps_ratio_16']:.2f} (gateway {s['rps_16_gateway']:.0f} / direct "
              f"{s['rps_16_direct']:.0f} RPS at 16 conns), added at 1 conn p50 {s['p50_added_us_1']:+.0f} us, "
              f"p99 {s['p99_added_us_1']:+.0f} us, sidecar RSS {s['sidecar_rss_kib'] / 1024:.1f} MiB")
        cpu, msgs = s["cpu_us_per_request_16"], s["ext_proc_per_request"]
        print(f"{'':16} CPU per request: gateway Envoy {cpu['gateway']['envoy']} us + sidecar "
              f"{cpu['gateway']['sidecar']} us, direct Envoy {cpu['direct']['envoy']} us; ext_proc per request: "
              f"{msgs['streams_started']} streams, {msgs['stream_msgs_sent']} messages sent, "
              f"{msgs['stream_msgs_received']} received")
    errors = sum(s["non_2xx"] for s in summaries.values())
    socket_errors = sum(s["socket_errors"] for s in summaries.values())
    if errors or socket_errors:
        print(f"WARNING: {errors} non-2xx responses, {socket_errors} socket errors", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
