"""Fake LLM providers for end-to-end tests.

They check what the real services check (the credential header each provider wants,
the exact path and query, a content-length that matches the body, a JSON body) and
answer with bodies recorded from the real services (``fixtures/``), streamed the way
the real ones stream them: HTTP/1.1 chunked transfer, one SSE event at a time, and
gzip when the client asks for it.
"""

import gzip
import json
import pathlib
import re
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

import openai_media
import responses_api

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _cassette(name):
    data = yaml.safe_load((FIXTURES / "openai" / name).read_text())
    response = data["interactions"][0]["response"]
    return int(response["status"].split()[0]), response["body"]


def _sse_events(body):
    """Splits a recorded SSE body into its events, each with its blank line."""
    return [e + "\n\n" for e in body.strip("\n").split("\n\n") if e.strip()]


# Recorded answers, by what was asked.
CHAT = _cassette("chat-basic.yaml")[1]
CHAT_STREAM = _sse_events(_cassette("chat-streaming.yaml")[1])
CHAT_STREAM_WITH_USAGE = _sse_events(_cassette("chat-streaming-detailed-usage.yaml")[1])
COMPLETION_STREAM_WITH_USAGE = _sse_events(_cassette("completion-streaming-usage.yaml")[1])
EMBEDDINGS = _cassette("embeddings-basic.yaml")[1]
COMPLETION = _cassette("completion-basic.yaml")[1]
AZURE_CHAT = _cassette("azure-chat-basic.yaml")[1]
AZURE_STREAM = _sse_events(
    json.loads((FIXTURES / "azure" / "chat-completions-stream-content-filter-results.json").read_text())["response"]["body"]
)
BAD_REQUEST_STATUS, BAD_REQUEST = _cassette("chat-bad-request.yaml")

MEDIA = "images/generations|audio/speech|audio/transcriptions|audio/translations"
FORMS = ("audio/transcriptions", "audio/translations")

CLIENT_ONLY_HEADERS = ("x-llm-extproc-request", "x-llm-extproc-backend", "x-llm-extproc-stream", "x-envoy-original-path")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that went away mid-answer (the abort and reset tests) is not an error.
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeProvider:
    """An OpenAI (``kind='openai'``) or Azure OpenAI (``kind='azure'``) service on loopback."""

    def __init__(self, kind="openai", key="sk-provider-key", prefix="/v1", api_version="2025-01-01-preview"):
        self.kind = kind
        self.key = key
        self.prefix = prefix
        self.api_version = api_version
        self.requests = []  # every request that passed the checks: dict(method, path, headers, body)
        self.rejected = []  # (status, reason) of requests the checks refused
        self.fail_status = None  # answer every request with this status
        self.fail_body = None  # ... and this body (default: an OpenAI-style error)
        self.fail_headers = {}  # ... and these headers (e.g. retry-after)
        self.stream_gate = None  # a threading.Event the stream waits on after its first event
        self.stream_delay = 0.0  # seconds between streamed events
        self.reset_mid_stream = False  # close the connection after the first event
        self.end_stream_after = None  # end the answer cleanly after this many events (no [DONE])
        self.unary_delay = 0.0
        self.gzip = True  # compress when the client accepts gzip, as OpenAI does
        self.echo_model = False  # name the request's model in the answer, as OpenAI does: the dated snapshot it ran
        self.entra = None  # azure: an EntraTokenFake whose unexpired tokens are the only credential accepted
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self):
        return self._server.server_address[1]

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def last(self):
        with self._lock:
            return self.requests[-1]

    # ------------------------------------------------------------------ checks

    def _check(self, method, path, headers, body):
        """Returns (status, error body) when a real provider would refuse the request."""
        if "content-length" not in headers:
            return 411, {"error": {"message": "Length Required", "type": "invalid_request_error", "code": None}}
        if int(headers["content-length"]) != len(body):
            return 400, {"error": {"message": "content-length does not match the body", "type": "invalid_request_error"}}
        for name in CLIENT_ONLY_HEADERS:
            if name in headers:
                return 400, {"error": {"message": f"gateway-internal header {name} leaked"}}
        if self.kind == "openai":
            if "api-key" in headers or "x-api-key" in headers:
                return 400, {"error": {"message": "unexpected credential header"}}
            if headers.get("authorization") != f"Bearer {self.key}":
                return 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                       "param": None, "code": "invalid_api_key"}}
            m = re.fullmatch(re.escape(self.prefix) + r"/(chat/completions|completions|embeddings|responses|" + MEDIA + ")", path)
            if not m:
                return 404, {"error": {"message": f"Invalid URL ({method} {path})", "type": "invalid_request_error"}}
            api = m.group(1)
        elif self.entra is not None:
            # Microsoft Entra ID authentication: a Bearer token for the Cognitive Services
            # audience, unexpired, and no key header.
            if "api-key" in headers or "x-api-key" in headers:
                return 400, {"error": {"message": "unexpected credential header"}}
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer ") or not self.entra.valid(auth[len("Bearer "):]):
                return 401, {"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid, audience "
                                       "is incorrect (https://cognitiveservices.azure.com), or have expired."}}
        else:
            if "authorization" in headers or "x-api-key" in headers:
                return 400, {"error": {"message": "unexpected credential header"}}
            if headers.get("api-key") != self.key:
                return 401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}
        if self.kind != "openai":
            # The Responses API is not under a deployment: the body's model names one.
            m = (re.fullmatch(r"/openai/deployments/([A-Za-z0-9._~%-]+)/(chat/completions|completions|embeddings|" + MEDIA + r")\?api-version=(.+)", path)
                 or re.fullmatch(r"/openai/()(responses)\?api-version=(.+)", path))
            if not m:
                return 404, {"error": {"code": "404", "message": "Resource not found"}}
            if m.group(3) != self.api_version:
                return 400, {"error": {"code": "BadRequest", "message": "API version not supported"}}
            api = m.group(2)
        if method != "POST":
            return 405, {"error": {"message": "method not allowed"}}
        if api in FORMS:
            form, error = openai_media.parse_form(headers.get("content-type", ""), body)
            return (400, error) if error else (None, api)
        try:
            request = json.loads(body)
        except ValueError:
            return 400, {"error": {"message": "We could not parse the JSON body of your request.", "type": "invalid_request_error"}}
        if openai_media.check(api, request):
            return 400, openai_media.check(api, request)
        if api == "responses" and self.kind == "azure" and self.api_version[:10] < "2025-03-01":
            return 400, {"error": {"code": "BadRequest", "message": "Azure OpenAI Responses API is enabled only for api-version 2025-03-01-preview and later"}}
        if api == "responses" and responses_api.check(request):
            return 400, responses_api.check(request)
        return None, api

    # ------------------------------------------------------------------ handler

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                headers = {k.lower(): v for k, v in self.headers.items()}
                length = int(headers.get("content-length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                status, result = provider._check("POST", self.path, headers, body)
                if status is not None:
                    with provider._lock:
                        provider.rejected.append((status, result))
                    return self._json(status, result)
                if result in FORMS:
                    request, _ = openai_media.parse_form(headers["content-type"], body)
                else:
                    request = json.loads(body)
                with provider._lock:
                    provider.requests.append({"method": "POST", "path": self.path, "headers": headers, "body": request,
                                              "raw": body})
                if provider.fail_status:
                    if isinstance(provider.fail_body, bytes):
                        return self._raw(provider.fail_status, provider.fail_body, "text/plain", headers=provider.fail_headers)
                    body = json.dumps(provider.fail_body or {
                        "error": {"message": "The server is overloaded or not ready yet.", "type": "server_error", "code": None}})
                    return self._raw(provider.fail_status, body.encode(), "application/json", headers=provider.fail_headers)
                gz = provider.gzip and "gzip" in headers.get("accept-encoding", "")
                if request.get("stream") in (True, "true") or request.get("stream_format") == "sse":
                    return self._stream(request, gz, result)
                time.sleep(provider.unary_delay)
                if result == "audio/speech":
                    return self._raw(200, openai_media.MP3, "audio/mpeg")
                if result in FORMS and request.get("response_format") == "text":
                    text = json.loads(openai_media.TRANSCRIPTION)["text"]
                    return self._raw(200, text.encode(), "text/plain; charset=utf-8")
                if result == "audio/transcriptions":
                    answer = openai_media.TRANSCRIPTION
                elif result == "audio/translations":
                    answer = openai_media.TRANSLATION
                elif result == "images/generations":
                    answer = openai_media.image(request)
                elif result == "responses":
                    answer = json.dumps(responses_api.response(request))
                elif result == "embeddings":
                    answer = EMBEDDINGS
                elif result == "completions":
                    answer = COMPLETION
                else:
                    answer = AZURE_CHAT if provider.kind == "azure" else CHAT
                    if provider.echo_model:
                        # chat-basic.yaml asks for gpt-5-nano and is answered by gpt-5-nano-2025-08-07.
                        answer = json.dumps(dict(json.loads(answer), model=f"{request.get('model')}-2025-08-07"))
                self._raw(200, answer.encode(), "application/json", gz)

            do_GET = do_POST

            def _json(self, status, value):
                self._raw(status, json.dumps(value).encode(), "application/json")

            def _raw(self, status, data, content_type, gz=False, headers=None):
                if gz:
                    data = gzip.compress(data)
                self.send_response(status)
                self.send_header("content-type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if gz:
                    self.send_header("content-encoding", "gzip")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, request, gz, api):
                with_usage = (request.get("stream_options") or {}).get("include_usage")
                if api == "responses":
                    events = responses_api.stream(request)
                elif api == "images/generations":
                    events = openai_media.image_stream(request)
                elif api == "audio/speech":
                    events = openai_media.speech_stream()
                elif api == "audio/transcriptions":
                    events = openai_media.transcript_stream()
                elif api == "completions":
                    # The only completions recording streams with usage; a real provider
                    # without include_usage would send the same events minus that chunk.
                    events = COMPLETION_STREAM_WITH_USAGE if with_usage else [
                        e for e in COMPLETION_STREAM_WITH_USAGE if '"choices":[]' not in e]
                elif provider.kind == "azure":
                    events = AZURE_STREAM
                elif with_usage:
                    events = CHAT_STREAM_WITH_USAGE
                else:
                    events = CHAT_STREAM
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                if gz:
                    self.send_header("content-encoding", "gzip")
                self.end_headers()
                compressor = zlib.compressobj(wbits=31) if gz else None
                for i, event in enumerate(events):
                    data = event.encode()
                    if compressor:
                        data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
                    self._chunk(data)
                    if i == 0:
                        if provider.reset_mid_stream:
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        if provider.stream_gate is not None:
                            provider.stream_gate.wait(30)
                    if provider.end_stream_after is not None and i + 1 >= provider.end_stream_after:
                        break
                    time.sleep(provider.stream_delay)
                if compressor:
                    self._chunk(compressor.flush())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _chunk(self, data):
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()

        return Handler
