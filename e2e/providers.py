"""Fake Anthropic and AWS Bedrock services for end-to-end tests.

Each checks what the real service checks, as its API reference documents it: the
credential (Anthropic's ``x-api-key`` and ``anthropic-version``; for Bedrock an AWS
Signature Version 4 recomputed here with botocore, an implementation independent of the
gateway's), the exact path, a content-length matching the body, and the request fields
the API accepts (both reject fields they do not know, e.g. OpenAI's ``stream_options``).
Answers are the recorded responses in ``fixtures/`` (see fixtures/PROVIDERS.md), sent
the way the service sends them: SSE events one by one, Bedrock's binary event-stream in
pieces that cut through its frames, gzip when asked.
"""

import base64
import datetime
import gzip
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fakes import FIXTURES, _Server, _sse_events


def recorded(path):
    return json.loads((FIXTURES / path).read_text())


def recorded_body(path):
    """The recorded response body's bytes (JSON re-serialized, SSE as recorded, event-stream decoded)."""
    response = recorded(path)["response"]
    if "body_base64" in response:
        return base64.b64decode(response["body_base64"])
    body = response["body"]
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()


class Refused(Exception):
    """A request the real service would refuse: (status, JSON body, extra headers)."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class _Fake:
    """A provider on loopback: `check` refuses what the real one refuses, `answer` replays."""

    def __init__(self):
        self.requests = []  # accepted: dict(path, headers, body (parsed JSON))
        self.rejected = []  # refused: (status, body)
        self.fail = None  # (status, body bytes, headers): answer every request so
        self.gzip = False  # gzip answers when the client accepts it
        self.chunk_size = 0  # stream answers in pieces of this many bytes (0: per event)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self._server.server_address[1]

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def last(self):
        with self._lock:
            return self.requests[-1]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = self.rfile.read(int(headers.get("content-length", "0") or 0))
                try:
                    if "content-length" not in headers:
                        raise Refused(411, {"message": "Length Required"})
                    fake.check(self.path, headers, body)
                    parsed = json.loads(body)
                except Refused as r:
                    with fake._lock:
                        fake.rejected.append((r.status, r.body))
                    return self.send(r.status, json.dumps(r.body).encode(), "application/json", r.headers)
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": headers, "body": parsed})
                if fake.fail:
                    status, data, extra = fake.fail
                    return self.send(status, data, "application/json", extra)
                status, content_type, pieces = fake.answer(self.path, parsed)
                gz = fake.gzip and "gzip" in headers.get("accept-encoding", "")
                if isinstance(pieces, bytes):
                    return self.send(status, gzip.compress(pieces) if gz else pieces, content_type,
                                     {"content-encoding": "gzip"} if gz else {})
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for piece in pieces:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def send(self, status, data, content_type, extra):
                self.send_response(status)
                self.send_header("content-type", content_type)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def pieces(self, data, events=None):
        """Splits a stream body: by `chunk_size` bytes when set, else by event."""
        if self.chunk_size:
            return [data[i:i + self.chunk_size] for i in range(0, len(data), self.chunk_size)]
        return [e.encode() for e in events] if events else [data]


# --------------------------------------------------------------------------- Anthropic

# The Messages API's request fields (https://docs.anthropic.com/en/api/messages); any other
# top-level field is refused with "Extra inputs are not permitted".
ANTHROPIC_FIELDS = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
                    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
                    "container", "mcp_servers", "context_management"}


class AnthropicFake(_Fake):
    def __init__(self, key="sk-ant-provider-key"):
        self.key = key
        super().__init__()

    @staticmethod
    def error(status, kind, message):
        return Refused(status, {"type": "error", "error": {"type": kind, "message": message}})

    def check(self, path, headers, body):
        if "authorization" in headers or "api-key" in headers:
            raise self.error(400, "invalid_request_error", "unexpected credential header")
        if headers.get("x-api-key") != self.key:
            raise self.error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            raise self.error(400, "invalid_request_error", "anthropic-version: header is required")
        if path != "/v1/messages":
            raise self.error(404, "not_found_error", f"Not Found: {path}")
        if int(headers["content-length"]) != len(body):
            raise self.error(400, "invalid_request_error", "content-length mismatch")
        request = json.loads(body)
        extra = set(request) - ANTHROPIC_FIELDS
        if extra:
            raise self.error(400, "invalid_request_error", f"{sorted(extra)[0]}: Extra inputs are not permitted")
        for field in ("model", "messages", "max_tokens"):
            if field not in request:
                raise self.error(400, "invalid_request_error", f"{field}: Field required")
        if not isinstance(request["max_tokens"], int):
            raise self.error(400, "invalid_request_error", "max_tokens: Input should be a valid integer")

    def answer(self, path, request):
        tools = bool(request.get("tools"))
        if request.get("stream"):
            name = "anthropic/messages-stream-tool-use.json" if tools else "anthropic/messages-stream-text.json"
            body = recorded(name)["response"]["body"]
            return 200, "text/event-stream; charset=utf-8", self.pieces(body.encode(), _sse_events(body))
        name = "anthropic/messages-tool-use.json" if tools else "anthropic/messages-text.json"
        return 200, "application/json", recorded_body(name)


# --------------------------------------------------------------------------- Bedrock

# Converse's request fields (Bedrock API reference, Converse); others are refused.
CONVERSE_FIELDS = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                   "additionalModelRequestFields", "promptVariables", "additionalModelResponseFieldPaths",
                   "requestMetadata", "performanceConfig"}


class BedrockFake(_Fake):
    """Bedrock runtime. `region` is what the signature must be scoped to."""

    def __init__(self, access_key="AKIDEXAMPLE", secret_key="bedrock-secret-key", region="us-east-1"):
        self.credentials = Credentials(access_key, secret_key)
        self.region = region
        super().__init__()

    @staticmethod
    def error(status, kind, message):
        return Refused(status, {"message": message},
                       {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})

    def check(self, path, headers, body):
        self.verify_signature(path, headers, body)
        m = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream)", path)
        if not m:
            raise self.error(404, "UnknownOperationException", f"no operation at {path}")
        request = json.loads(body)
        if m.group(2).startswith("converse"):
            extra = set(request) - CONVERSE_FIELDS
            if extra:
                raise self.error(400, "ValidationException", f"Unknown parameter {sorted(extra)[0]}")
            if not request.get("messages"):
                raise self.error(400, "ValidationException", "messages is required")

    def verify_signature(self, path, headers, body):
        """Recomputes the SigV4 signature with botocore over what arrived."""
        auth = headers.get("authorization", "")
        m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/bedrock/aws4_request, "
                         r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})", auth)
        if not m:
            raise self.error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        key_id, _, region, signed, signature = m.groups()
        if key_id != self.credentials.access_key:
            raise self.error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        if region != self.region:
            raise self.error(403, "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{region}'")
        for name in ("x-api-key", "api-key"):
            if name in headers:
                raise self.error(400, "ValidationException", f"unexpected header {name}")
        signed_names = signed.split(";")
        if "host" not in signed_names or "x-amz-date" not in signed_names:
            raise self.error(403, "InvalidSignatureException", "host and x-amz-date must be signed")
        amz_date = headers.get("x-amz-date", "")
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
            raise self.error(403, "InvalidSignatureException", "Signature expired")
        request = AWSRequest(method="POST", url=f"http://{headers['host']}{path}", data=body,
                             headers={n: headers[n] for n in signed_names if n in headers})
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(self.credentials, "bedrock", region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != signature:
            raise self.error(403, "InvalidSignatureException",
                             "The request signature we calculated does not match the signature you provided.")

    def answer(self, path, request):
        model, operation = re.fullmatch(r"/model/([^/]+)/([a-z-]+)", path).groups()
        if operation == "converse-stream":
            return 200, "application/vnd.amazon.eventstream", self.pieces(
                recorded_body("bedrock/converse-stream-tool-use.json"))
        if operation == "converse":
            return 200, "application/json", recorded_body("bedrock/converse-tool-use.json")
        if operation == "invoke-with-response-stream":
            return 200, "application/vnd.amazon.eventstream", self.pieces(
                recorded_body("bedrock/invoke-stream-anthropic-tool-use.json"))
        if "embed" in urllib.parse.unquote(model):
            return 200, "application/json", recorded_body("bedrock/invoke-titan-embed-text-v1.json")
        return 200, "application/json", recorded_body("bedrock/invoke-anthropic-messages.json")
