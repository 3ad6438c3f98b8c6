"""Many long-lived streams at once: an LLM gateway holds every client request for the
whole answer (a router-level gRPC stream to the sidecar, one per upstream attempt, and a
provider connection), so Envoy's default circuit breakers (1,024 requests per cluster)
overflowed at about 510 simultaneous streams. 1,000 slow streams must all complete.

The fake provider here is asyncio (one thread for a thousand connections), speaking
HTTP/1.1 with keep-alive and chunked SSE as OpenAI does, and checking the credential."""

import asyncio
import json
import threading

import httpx

from fakes import CHAT_STREAM_WITH_USAGE, FakeProvider
from harness import backend_yaml, route_yaml

STREAMS = 1000
GAP = 0.5  # seconds between events: each stream lasts about 1.5 s


class SlowStreams:
    """OpenAI's streaming chat completions, each event GAP seconds after the last."""

    def __init__(self, key):
        self.key = key
        self.active = 0
        self.peak = 0
        self.served = 0
        self.refused = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(5)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=4096))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _shutdown(self):
        """Ends the kept-alive connections while the loop still runs."""
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self, reader, writer):
        try:
            while True:  # keep-alive: Envoy reuses the connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if l)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if (method, path) != ("POST", "/v1/chat/completions") or headers.get("authorization") != f"Bearer {self.key}" \
                        or not json.loads(body).get("stream"):
                    self.refused += 1
                    error = json.dumps({"error": {"message": "refused", "type": "invalid_request_error"}}).encode()
                    writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(error), error))
                    await writer.drain()
                    continue
                await self._stream(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            for i, event in enumerate(CHAT_STREAM_WITH_USAGE):
                if i:
                    await asyncio.sleep(GAP)
                data = event.encode()
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.served += 1
        finally:
            self.active -= 1


async def open_streams(url, n):
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hello!"}]}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60, pool=60)) as client:
        async def one():
            try:
                async with client.stream("POST", url, json=body) as r:
                    text = "".join([chunk async for chunk in r.aiter_text()])
                    return r.status_code, text
            except httpx.HTTPError as e:
                return 0, repr(e)
        return await asyncio.gather(*(one() for _ in range(n)))


def envoy_overflow_counters(gw):
    """Envoy's `*_overflow` counters, from its admin socket in the run directory."""
    transport = httpx.HTTPTransport(uds=f"{gw.run_dir}/envoy-admin.sock")
    with httpx.Client(transport=transport) as admin:
        text = admin.get("http://envoy/stats?filter=_overflow$", timeout=5).text
    return {name: int(value) for name, value in (line.split(": ") for line in text.splitlines() if ": " in line)}


def sidecar_overflow_series(gw):
    """(cluster, counter) -> value of the sidecar's llm_extproc_envoy_overflow_total."""
    series = {}
    for line in httpx.get(gw.admin + "/metrics", timeout=5).text.splitlines():
        if line.startswith("llm_extproc_envoy_overflow_total{"):
            labels, value = line[len("llm_extproc_envoy_overflow_total{"):].rsplit("} ", 1)
            parts = dict(p.split("=", 1) for p in labels.split('",'))
            series[(parts["cluster"].strip('"'), parts["counter"].strip('"'))] = float(value)
    return series


def test_the_sidecar_metrics_show_envoys_overflow_counters(gateway_factory, openai_fake):
    gw = gateway_factory(backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
                         route_yaml("route", [("gpt-4o-mini", [("openai", 0, None)])]))
    assert gw.chat("gpt-4o-mini").status_code == 200
    envoy = {}
    for name, value in envoy_overflow_counters(gw).items():
        cluster, counter = name[len("cluster."):].rsplit(".", 1)
        if counter.startswith("upstream_"):
            envoy[(cluster, counter)] = float(value)
    assert ("llm-extproc", "upstream_rq_pending_overflow") in envoy
    assert any(c.startswith("default/route/rule/0/") for c, _ in envoy)
    assert sidecar_overflow_series(gw) == envoy


def test_a_thousand_slow_streams_at_once_all_complete(gateway_factory):
    fake = SlowStreams("sk-primary")
    backup = FakeProvider(kind="openai", key="sk-backup")
    try:
        # Two priorities: every attempt also holds an upstream-level stream to the sidecar.
        gw = gateway_factory(backend_yaml("primary", "OpenAI", fake.port, policy="APIKey", key="sk-primary"),
                             backend_yaml("backup", "OpenAI", backup.port, policy="APIKey", key="sk-backup"),
                             route_yaml("route", [("gpt-4o-mini", [("primary", 0, None), ("backup", 1, None)])]))
        results = asyncio.run(open_streams(gw.url + "/v1/chat/completions", STREAMS))
        failed = [(s, t[:200]) for s, t in results if s != 200 or not t.rstrip().endswith("data: [DONE]")]
        assert not failed, f"{len(failed)} of {STREAMS} failed, e.g. {failed[:3]}"
        assert fake.served == STREAMS and fake.refused == 0 and backup.requests == []
        assert fake.peak > STREAMS * 0.9, f"only {fake.peak} streams were open at once"
        # Envoy counts what its circuit breakers refused per cluster (the README says how
        # to read it): nothing, on the sidecar's cluster or the rule's.
        overflows = envoy_overflow_counters(gw)
        assert any(name.startswith("cluster.llm-extproc.") for name in overflows)
        assert any(name.startswith("cluster.default/route/rule/0/") for name in overflows), overflows
        assert {k: v for k, v in overflows.items() if v} == {}
        # The sidecar's /metrics shows the same counters.
        assert sidecar_overflow_series(gw)[("llm-extproc", "upstream_rq_pending_overflow")] == 0
        assert gw.wait_in_flight_zero(20)
    finally:
        fake.stop()
        backup.stop()
