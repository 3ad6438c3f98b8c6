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
import zlib
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


class _Loopback:
    """An HTTP service on a free loopback port, serving `_handler()` on a thread."""

    def _serve(self):
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self._server.server_address[1]

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


class _Fake(_Loopback):
    """A provider on loopback: `check` refuses what the real one refuses, `answer` replays."""

    def __init__(self):
        self.requests = []  # accepted: dict(path, headers, body (parsed JSON))
        self.rejected = []  # refused: (status, body)
        self.fail = None  # (status, body bytes, headers): answer every request so
        self.gzip = False  # gzip answers when the client accepts it
        self.chunk_size = 0  # stream answers in pieces of this many bytes (0: per event)
        self.corrupt_gzip = False  # with gzip: send bytes that are not gzip under that header
        self.end_stream_after = None  # end a streamed answer cleanly after this many pieces
        self._serve()

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
                gz = fake.gzip and "gzip" in headers.get("accept-encoding", "")
                encoding = {"content-encoding": "gzip"} if gz else {}
                if fake.fail:
                    status, data, extra = fake.fail
                    return self.send(status, gzip.compress(data) if gz else data, "application/json", {**extra, **encoding})
                status, content_type, pieces = fake.answer(self.path, parsed)
                if fake.end_stream_after is not None and not isinstance(pieces, bytes):
                    pieces = list(pieces)[:fake.end_stream_after]
                if gz and fake.corrupt_gzip:
                    pieces = b"\x1f\x8b\x08\x00 this is not a gzip stream" if isinstance(pieces, bytes) else \
                        [b"\x1f\x8b\x08\x00 this is not a gzip stream"]
                    gz = False  # sent as they are, under the gzip header
                if isinstance(pieces, bytes):
                    return self.send(status, gzip.compress(pieces) if gz else pieces, content_type, encoding)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("transfer-encoding", "chunked")
                for k, v in encoding.items():
                    self.send_header(k, v)
                self.end_headers()
                # A gzip stream flushed after each piece, as servers compress streams.
                compressor = zlib.compressobj(wbits=31) if gz else None
                for piece in pieces:
                    if compressor:
                        piece = compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                if compressor:
                    tail = compressor.flush()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(tail), tail))
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

# Token counting (https://docs.anthropic.com/en/api/messages-count-tokens): the request
# fields it takes; the count the fakes answer is a stand-in derived from the text.
COUNT_TOKENS_FIELDS = {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers",
                       "context_management"}


def token_count(request):
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    text = json.dumps([request.get("system"), request.get("messages"), request.get("tools")])
    return max(1, len(text) // 4)

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
        if path not in ("/v1/messages", "/v1/messages/count_tokens"):
            raise self.error(404, "not_found_error", f"Not Found: {path}")
        if int(headers["content-length"]) != len(body):
            raise self.error(400, "invalid_request_error", "content-length mismatch")
        request = json.loads(body)
        if path.endswith("/count_tokens"):
            return self.check_count(request, COUNT_TOKENS_FIELDS)
        extra = set(request) - ANTHROPIC_FIELDS
        if extra:
            raise self.error(400, "invalid_request_error", f"{sorted(extra)[0]}: Extra inputs are not permitted")
        for field in ("model", "messages", "max_tokens"):
            if field not in request:
                raise self.error(400, "invalid_request_error", f"{field}: Field required")
        if not request["messages"]:
            raise self.error(400, "invalid_request_error", "messages: at least one message is required")
        if not isinstance(request["max_tokens"], int):
            raise self.error(400, "invalid_request_error", "max_tokens: Input should be a valid integer")

    def check_count(self, request, fields):
        extra = set(request) - fields
        if extra:
            raise self.error(400, "invalid_request_error", f"{sorted(extra)[0]}: Extra inputs are not permitted")
        for field in ("model", "messages"):
            if field not in request:
                raise self.error(400, "invalid_request_error", f"{field}: Field required")

    def answer(self, path, request):
        if path.endswith("/count_tokens"):
            return 200, "application/json", json.dumps({"input_tokens": token_count(request)}).encode()
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

    def __init__(self, access_key="AKIDEXAMPLE", secret_key="bedrock-secret-key", region="us-east-1", session_token=None):
        self.credentials = Credentials(access_key, secret_key, session_token)
        self.region = region
        self.sts = None  # an StsFake whose unexpired temporary keys are accepted instead
        super().__init__()

    def keys(self, key_id):
        """(botocore Credentials, expiry time or None) of an access key id IAM knows."""
        if self.sts is not None:
            return self.sts.keys.get(key_id, (None, None))
        return (self.credentials, None) if key_id == self.credentials.access_key else (None, None)

    @staticmethod
    def error(status, kind, message):
        return Refused(status, {"message": message},
                       {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})

    def check(self, path, headers, body):
        self.verify_signature(path, headers, body)
        m = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)",
                         path)
        if not m:
            raise self.error(404, "UnknownOperationException", f"no operation at {path}")
        request = json.loads(body)
        if m.group(2) == "count-tokens":
            self.check_count(request)
        elif m.group(2).startswith("converse"):
            extra = set(request) - CONVERSE_FIELDS
            if extra:
                raise self.error(400, "ValidationException", f"Unknown parameter {sorted(extra)[0]}")
            if not request.get("messages"):
                raise self.error(400, "ValidationException", "messages is required")
        elif "embed" not in urllib.parse.unquote(m.group(1)):
            # InvokeModel with an Anthropic body (Bedrock's Claude request reference).
            if request.get("anthropic_version") != "bedrock-2023-05-31":
                raise self.error(400, "ValidationException", "anthropic_version: bedrock-2023-05-31 is required")
            for key in ("model", "stream"):
                if key in request:
                    raise self.error(400, "ValidationException", f"extraneous key [{key}] is not permitted")

    def check_count(self, request):
        """CountTokens (Bedrock API reference): `input` holds exactly one of `invokeModel`
        (the InvokeModel body, base64) or `converse` (Converse's messages and system)."""
        given = request.get("input") or {}
        if set(request) != {"input"} or len(given) != 1 or not set(given) <= {"invokeModel", "converse"}:
            raise self.error(400, "ValidationException", "input must hold exactly one of invokeModel or converse")
        if "invokeModel" in given:
            try:
                invoke = json.loads(base64.b64decode(given["invokeModel"]["body"], validate=True))
            except (ValueError, KeyError, TypeError):
                raise self.error(400, "ValidationException", "invokeModel.body must be a base64-encoded JSON body")
            if invoke.get("anthropic_version") != "bedrock-2023-05-31" or not isinstance(invoke.get("max_tokens"), int):
                raise self.error(400, "ValidationException", "the InvokeModel body needs anthropic_version and max_tokens")
            if "model" in invoke:
                raise self.error(400, "ValidationException", "extraneous key [model] is not permitted")
        elif set(given["converse"]) - {"messages", "system", "toolConfig", "additionalModelRequestFields"} \
                or not given["converse"].get("messages"):
            raise self.error(400, "ValidationException", "converse takes messages, system, toolConfig")

    def verify_signature(self, path, headers, body):
        """Recomputes the SigV4 signature with botocore over what arrived."""
        auth = headers.get("authorization", "")
        m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/bedrock/aws4_request, "
                         r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})", auth)
        if not m:
            raise self.error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        key_id, _, region, signed, signature = m.groups()
        credentials, expiry = self.keys(key_id)
        if credentials is None:
            raise self.error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        # Temporary keys need their session token, signed; long-term keys take none.
        if headers.get("x-amz-security-token") != credentials.token or \
                (credentials.token and "x-amz-security-token" not in signed.split(";")):
            raise self.error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        if expiry is not None and _time.time() >= expiry:
            raise self.error(403, "ExpiredTokenException", "The security token included in the request is expired")
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
        signer = SigV4Auth(credentials, "bedrock", region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != signature:
            raise self.error(403, "InvalidSignatureException",
                             "The request signature we calculated does not match the signature you provided.")

    def answer(self, path, request):
        model, operation = re.fullmatch(r"/model/([^/]+)/([a-z-]+)", path).groups()
        if operation == "count-tokens":
            given = request["input"]
            counted = json.loads(base64.b64decode(given["invokeModel"]["body"])) if "invokeModel" in given \
                else given["converse"]
            return 200, "application/json", json.dumps({"inputTokens": token_count(counted)}).encode()
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


# --------------------------------------------------------------------------- Google Cloud
#
# A service account key made at test time, Google's OAuth token endpoint for the
# jwt-bearer grant (https://developers.google.com/identity/protocols/oauth2/service-account#httprest)
# and Vertex AI (Gemini's generateContent/streamGenerateContent/predict, Claude's
# rawPredict/streamRawPredict). The token fake verifies the assertion's RS256 signature
# with `cryptography`, independently of the gateway's `jsonwebtoken`.

import hashlib  # noqa: E402
import secrets as _secrets  # noqa: E402
import time as _time  # noqa: E402

from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class ServiceAccount:
    """A throwaway service account: a fresh 2048-bit RSA key and its key file."""

    def __init__(self, project_id="vertex-e2e-project", name="llm-gateway"):
        self.project_id = project_id
        self.client_email = f"{name}@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = _secrets.token_hex(20)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key_pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()

    @property
    def public_key(self):
        return self.key.public_key()

    def key_file(self, token_uri):
        """`service_account.json` as Google Cloud's console downloads it."""
        return json.dumps({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "client_id": str(int.from_bytes(_secrets.token_bytes(8), "big")),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{self.client_email}",
            "universe_domain": "googleapis.com",
        }, indent=2)

    def secret_fragments(self):
        """Texts that must never appear in a log or an error: the key's PEM lines."""
        lines = [l for l in self.private_key_pem.splitlines() if l and not l.startswith("-----")]
        return ["PRIVATE KEY"] + lines


def _b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GoogleTokenFake(_Loopback):
    """oauth2.googleapis.com/token for service accounts (the jwt-bearer grant).

    Checks what Google checks: a form body with grant_type jwt-bearer and an `assertion`
    that is an RS256 JWT signed by a key of a known service account (its `kid` names the
    key), `iss` that account's email, `aud` this endpoint, a `scope`, and an `iat`/`exp`
    window of at most an hour around now. Answers with a fresh access token shaped like the
    recorded token response (token/google-oauth2-token-refresh-grant.json: access_token,
    expires_in 3599, token_type Bearer; that recording's id_token and scope belong to its
    refresh_token grant and are left out), or Google's OAuth error.
    """

    def __init__(self, *accounts, expires_in=3599):
        self.accounts = {a.client_email: a for a in accounts}
        self.expires_in = expires_in
        self.exchanges = []  # claims of every accepted assertion
        self.rejected = []  # (status, error body)
        self.issued = []  # access tokens handed out
        self.assertions = []  # every assertion received, accepted or not
        self.expiry = {}  # access token → when it stops being accepted (time.time())
        self.fail = None  # (status, body dict): refuse every exchange with this
        self.refused_at = []  # time.time() of each refusal
        self._serve()

    @property
    def token_uri(self):
        return f"http://127.0.0.1:{self.port}/token"

    def count(self):
        with self._lock:
            return len(self.exchanges)

    def wait_for(self, n=1, timeout=10, rejected=False):
        """Waits until `n` exchanges (or refusals) happened, plus a moment for the gateway to store the answer."""
        deadline = _time.time() + timeout
        while _time.time() < deadline:
            with self._lock:
                seen = len(self.rejected) if rejected else len(self.exchanges)
            if seen >= n:
                _time.sleep(0.3)
                return True
            _time.sleep(0.05)
        return False

    @staticmethod
    def oauth_error(status, error, description):
        return Refused(status, {"error": error, "error_description": description})

    def verify(self, headers, body):
        if headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise self.oauth_error(400, "invalid_request", "Invalid content type")
        form = urllib.parse.parse_qs(body.decode(), strict_parsing=True, keep_blank_values=True)
        if form.get("grant_type") != [JWT_BEARER]:
            raise self.oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}")
        assertion = (form.get("assertion") or [""])[0]
        with self._lock:
            self.assertions.append(assertion)
        parts = assertion.split(".")
        if len(parts) != 3:
            raise self.oauth_error(400, "invalid_grant", "Invalid JWT: not a JWT")
        header, claims = json.loads(_b64url(parts[0])), json.loads(_b64url(parts[1]))
        if header.get("alg") != "RS256":
            raise self.oauth_error(400, "invalid_grant", "Invalid JWT: the algorithm must be RS256")
        account = self.accounts.get(claims.get("iss"))
        if account is None:
            raise self.oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        if header.get("kid") not in (None, account.private_key_id):
            raise self.oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            account.public_key.verify(_b64url(parts[2]), f"{parts[0]}.{parts[1]}".encode(),
                                      padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise self.oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != self.token_uri:
            raise self.oauth_error(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            raise self.oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        now = _time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not (isinstance(iat, int) and isinstance(exp, int) and iat - 300 <= now < exp and exp - iat <= 3600):
            raise self.oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) "
                                   "and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
        return claims

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
                    if self.path != "/token":
                        raise Refused(404, {"error": "not_found"})
                    claims = fake.verify(headers, body)
                    if fake.fail:
                        raise Refused(*fake.fail)
                except Refused as r:
                    with fake._lock:
                        fake.rejected.append((r.status, r.body))
                        fake.refused_at.append(_time.time())
                    return self.send(r.status, r.body)
                except ValueError as e:  # a body that is not a form, or claims that are not JSON
                    with fake._lock:
                        fake.rejected.append((400, str(e)))
                    return self.send(400, {"error": "invalid_request", "error_description": "Bad Request"})
                answer = recorded("token/google-oauth2-token-refresh-grant.json")["response"]["body"]
                token = "ya29.c." + _secrets.token_urlsafe(48)
                reply = {"access_token": token, "expires_in": fake.expires_in, "token_type": answer["token_type"]}
                with fake._lock:
                    fake.exchanges.append(claims)
                    fake.issued.append(token)
                    fake.expiry[token] = _time.time() + fake.expires_in
                self.send(200, reply)

            def send(self, status, value):
                raw = isinstance(value, bytes)
                data = value if raw else json.dumps(value).encode()
                self.send_response(status)
                self.send_header("content-type", "text/xml" if raw else "application/json; charset=utf-8")
                self.send_header("cache-control", "no-cache, no-store, max-age=0, must-revalidate")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


# GenerateContentRequest's fields (Vertex AI REST reference,
# projects.locations.publishers.models.generateContent), in the JSON mapping's camelCase
# and the proto names it also accepts. Anything else is "Unknown name ... Cannot find field."
GEMINI_FIELDS = {"contents", "systemInstruction", "system_instruction", "cachedContent", "cached_content", "tools",
                 "toolConfig", "tool_config", "labels", "safetySettings", "safety_settings", "modelArmorConfig",
                 "model_armor_config", "generationConfig", "generation_config"}
GENERATION_CONFIG_FIELDS = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
                            "responseLogprobs", "logprobs", "presencePenalty", "frequencyPenalty", "seed",
                            "responseMimeType", "responseSchema", "responseJsonSchema", "routingConfig",
                            "mediaResolution", "speechConfig", "thinkingConfig", "responseModalities",
                            "audioTimestamp", "enableAffectiveDialog", "imageConfig"}
PART_DATA_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
                    "codeExecutionResult"}
PART_FIELDS = PART_DATA_FIELDS | {"thought", "thoughtSignature", "videoMetadata", "mediaResolution"}
FUNCTION_DECLARATION_FIELDS = {"name", "description", "parameters", "parametersJsonSchema", "response",
                               "responseJsonSchema", "behavior"}
# Claude on Vertex AI: the Messages API body without `model` (it is in the path), with
# `anthropic_version` (https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude).
VERTEX_ANTHROPIC_FIELDS = (ANTHROPIC_FIELDS - {"model"}) | {"anthropic_version"}


class VertexFake(_Fake):
    """Vertex AI's aiplatform endpoint for one project and region.

    Requires `authorization: Bearer` with a token the GoogleTokenFake issued, and no API
    key header. Replays recorded answers: `unary_fixture` / `stream_fixture` override the
    Gemini recording chosen (by default vertex/ text, vertex/ function call, vertex/ SSE
    text, gemini/ SSE function call when tools are given).
    """

    def __init__(self, token_fake, project="vertex-e2e-project", region="us-east5"):
        self.token_fake = token_fake
        self.project, self.region = project, region
        self.unary_fixture = None
        self.stream_fixture = None
        self.signatures = {}  # function name → the thoughtSignature answered with its call
        super().__init__()

    @staticmethod
    def error(status, kind, message):
        return Refused(status, {"error": {"code": status, "message": message, "status": kind}})

    def unknown_field(self, name, where=None):
        at = f" at '{where}'" if where else ""
        return self.error(400, "INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')

    def check(self, path, headers, body):
        expiry = self.token_fake.expiry
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or _time.time() >= expiry.get(auth[7:], 0):
            raise self.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
                             "access token, login cookie or other valid authentication credential.")
        for name in ("x-api-key", "api-key", "x-goog-api-key"):
            if name in headers:
                raise self.error(400, "INVALID_ARGUMENT", f"unexpected credential header {name}")
        m = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/(google|anthropic)/models/([^/:?]+)"
                         r":(generateContent|streamGenerateContent|predict|rawPredict|streamRawPredict)(\?.*)?", path)
        if not m:
            raise self.error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
        project, region, publisher, model, method, query = m.groups()
        if (project, region) != (self.project, self.region):
            raise self.error(403, "PERMISSION_DENIED", f"Permission denied on resource project {project} in {region}.")
        google = {"generateContent": None, "streamGenerateContent": "?alt=sse", "predict": None}
        anthropic = {"rawPredict": None, "streamRawPredict": None}
        allowed = google if publisher == "google" else anthropic
        if method not in allowed or query != allowed[method]:
            raise self.error(404, "NOT_FOUND", f"Publisher model {publisher}/{model} has no method {method}{query or ''}.")
        if int(headers["content-length"]) != len(body):
            raise self.error(400, "INVALID_ARGUMENT", "content-length mismatch")
        if headers.get("content-type", "").split(";")[0] != "application/json":
            raise self.error(400, "INVALID_ARGUMENT", "Invalid content type")
        try:
            request = json.loads(body)
        except ValueError:
            raise self.error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if method == "predict":
            self.check_predict(request)
        elif (publisher, model) == ("anthropic", "count-tokens"):
            # Claude's token counting on Vertex: the Anthropic body, naming the model.
            if request.get("anthropic_version") != "vertex-2023-10-16" or not request.get("model"):
                raise self.error(400, "INVALID_ARGUMENT", "count-tokens needs anthropic_version and model")
            if request["model"].endswith(("@default", "@latest")):
                raise self.error(400, "INVALID_ARGUMENT", f"Model {request['model']} is not supported for token counting")
            AnthropicFake.check_count(self, {k: v for k, v in request.items() if k != "anthropic_version"},
                                      COUNT_TOKENS_FIELDS)
        elif publisher == "google":
            self.check_generate_content(request)
        else:
            self.check_raw_predict(request, method == "streamRawPredict")

    def check_generate_content(self, request):
        for name in request:
            if name not in GEMINI_FIELDS:
                raise self.unknown_field(name)
        for name in request.get("generationConfig", {}):
            if name not in GENERATION_CONFIG_FIELDS:
                raise self.unknown_field(name, "generation_config")
        if not request.get("contents"):
            raise self.error(400, "INVALID_ARGUMENT", "Unable to submit request because it has an empty contents field.")
        for i, content in enumerate(request["contents"]):
            if content.get("role") not in ("user", "model"):
                raise self.error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
            for j, part in enumerate(content.get("parts") or []):
                for name in part:
                    if name not in PART_FIELDS:
                        raise self.unknown_field(name, f"contents[{i}].parts[{j}]")
                if len(PART_DATA_FIELDS & set(part)) != 1:
                    raise self.error(400, "INVALID_ARGUMENT", f"contents[{i}].parts[{j}] must have exactly one data field")
                call = part.get("functionCall")
                signature = self.signatures.get(call["name"]) if call else None
                if signature and part.get("thoughtSignature") != signature:
                    # What Vertex answers a Gemini 3 model sent its function call back without its signature.
                    raise self.error(400, "INVALID_ARGUMENT", "Unable to submit request because function call "
                                     f"`{call['name']}` in the {i + 1}. content block is missing a `thought_signature`.")
        for tool in request.get("tools", []):
            for declaration in tool.get("functionDeclarations", []):
                for name in declaration:
                    if name not in FUNCTION_DECLARATION_FIELDS:
                        raise self.unknown_field(name, "tools[0].function_declarations[0]")

    def check_predict(self, request):
        for name in request:
            if name not in ("instances", "parameters"):
                raise self.unknown_field(name)
        instances = request.get("instances")
        if not instances or not all(isinstance(i, dict) and isinstance(i.get("content"), str) for i in instances):
            raise self.error(400, "INVALID_ARGUMENT", "Invalid instances: each needs a string `content`.")
        # TextEmbeddingInput: content, task_type, title (title only for RETRIEVAL_DOCUMENT).
        for instance in instances:
            for name in instance:
                if name not in ("content", "task_type", "title"):
                    raise self.unknown_field(name, "instances[0]")
            if "title" in instance and instance.get("task_type") != "RETRIEVAL_DOCUMENT":
                raise self.error(400, "INVALID_ARGUMENT", "title is only valid with task_type RETRIEVAL_DOCUMENT.")
        for name in request.get("parameters", {}):
            if name not in ("autoTruncate", "outputDimensionality"):
                raise self.error(400, "INVALID_ARGUMENT", f"Invalid parameter {name}")

    def check_raw_predict(self, request, stream):
        def error(message):
            return Refused(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        if request.get("anthropic_version") != "vertex-2023-10-16":
            raise error("anthropic_version: vertex-2023-10-16 is required")
        extra = set(request) - VERTEX_ANTHROPIC_FIELDS
        if extra:
            raise error(f"{sorted(extra)[0]}: Extra inputs are not permitted")
        if not isinstance(request.get("max_tokens"), int):
            raise error("max_tokens: Field required")
        if not request.get("messages"):
            raise error("messages: Field required")
        if bool(request.get("stream")) != stream:
            raise error("stream must be true exactly for streamRawPredict")

    @staticmethod
    def sse_events(body):
        """A recorded SSE body's events, each with its own separator (Gemini's is \\r\\n\\r\\n)."""
        return [e for e in re.split(r"(?<=\r\n\r\n)|(?<=[^\r]\n\n)", body) if e]

    def answer(self, path, request):
        method = path.split(":")[-1].split("?")[0]
        tools = bool(request.get("tools"))
        if method == "predict":
            return 200, "application/json; charset=UTF-8", json.dumps(self.predict_answer(request)).encode()
        if "/count-tokens:" in path:
            return 200, "application/json", json.dumps({"input_tokens": token_count(request)}).encode()
        if method in ("rawPredict", "streamRawPredict"):
            return AnthropicFake.answer(self, path, request)
        if method == "streamGenerateContent":
            name = self.stream_fixture or ("gemini/stream-sse-function-call.json" if tools else "vertex/stream-sse-text.json")
            body = recorded(name)["response"]["body"]
            if isinstance(body, list) or not body.startswith("data:"):
                # A recording of the stream without alt=sse (a JSON array): with alt=sse the
                # same GenerateContentResponse objects come one per event.
                items = body if isinstance(body, list) else json.loads(body)
                body = "".join(f"data: {json.dumps(item)}\r\n\r\n" for item in items)
            return 200, "text/event-stream", self.pieces(body.encode(), self.sse_events(body))
        name = self.unary_fixture or ("vertex/generate-content-function-call.json" if tools else "vertex/generate-content-text.json")
        answer = recorded(name)["response"]["body"]
        for candidate in answer.get("candidates", []):
            for part in candidate.get("content", {}).get("parts", []):
                if "functionCall" in part and "thoughtSignature" in part:
                    self.signatures[part["functionCall"]["name"]] = part["thoughtSignature"]
        return 200, "application/json; charset=UTF-8", recorded_body(name)

    @staticmethod
    def predict_answer(request):
        """No `:predict` recording exists: the shape is the Vertex AI reference's for text
        embeddings (predictions[].embeddings{statistics{truncated, token_count}, values},
        metadata.billableCharacterCount), values derived from each text."""
        dims = request.get("parameters", {}).get("outputDimensionality", 8)
        predictions = []
        for instance in request["instances"]:
            text = instance["content"]
            digest = hashlib.sha256(text.encode()).digest()
            values = [round((digest[i % 32] - 128) / 128 + i / 1000, 6) for i in range(dims)]
            predictions.append({"embeddings": {"statistics": {"truncated": False, "token_count": len(text.split())},
                                               "values": values}})
        return {"predictions": predictions,
                "metadata": {"billableCharacterCount": sum(len(i["content"]) for i in request["instances"])}}


# --------------------------------------------------------------------------- Cohere

# Rerank v2's request fields (https://docs.cohere.com/reference/rerank).
RERANK_FIELDS = {"model", "query", "documents", "top_n", "max_tokens_per_doc"}


class CohereFake(_Fake):
    """Cohere's API: rerank v2 with `Authorization: Bearer`, errors as `{"message"}`."""

    def __init__(self, key="cohere-provider-key"):
        self.key = key
        super().__init__()

    @staticmethod
    def error(status, message):
        return Refused(status, {"message": message})

    def check(self, path, headers, body):
        if "x-api-key" in headers or "api-key" in headers:
            raise self.error(400, "unexpected credential header")
        if headers.get("authorization") != f"Bearer {self.key}":
            raise self.error(401, "invalid api token")
        if path != "/v2/rerank":
            raise self.error(404, f"Not Found: {path}")
        request = json.loads(body)
        extra = set(request) - RERANK_FIELDS
        if extra:
            raise self.error(400, f"invalid request: unknown field {sorted(extra)[0]}")
        for field in ("model", "query", "documents"):
            if field not in request:
                raise self.error(400, f"invalid request: {field} is required")
        if not all(isinstance(d, str) for d in request["documents"]):
            raise self.error(400, "invalid request: documents must be strings")

    def answer(self, path, request):
        query = set(request["query"].lower().split())
        scored = sorted(((len(query & set(d.lower().split())) / (len(query) or 1), i)
                         for i, d in enumerate(request["documents"])), reverse=True)
        results = [{"index": i, "relevance_score": round(score, 6)} for score, i in scored[:request.get("top_n")]]
        tokens = sum(len(d.split()) for d in request["documents"]) + len(request["query"].split())
        return 200, "application/json", json.dumps({
            "results": results, "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
            "meta": {"api_version": {"version": "2", "is_experimental": False}, "billed_units": {"search_units": 1},
                     "tokens": {"input_tokens": tokens, "output_tokens": 0}}}).encode()


# --------------------------------------------------------------------------- token services
#
# The endpoints rotating credentials are fetched from. Each checks the grant as the real
# service documents it, answers in the documented shape (fixtures/token) with a fresh
# token that lives `expires_in` seconds, and remembers every token and secret it handed
# out so that tests can check none reaches a log. `fail = (status, body)` refuses every
# request (an outage).

def _fake_jwt(claims):
    """A JWT-shaped token (header.claims.signature) with random signature bytes."""
    enc = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.{_secrets.token_urlsafe(32)}"


class _TokenService(_Loopback):
    def __init__(self, expires_in):
        self.expires_in = expires_in
        self.issued = []  # every token handed out
        self.expiry = {}  # token → time.time() when it stops being accepted
        self.forms = []  # every accepted request's form
        self.rejected = []  # (status, body)
        self.refused_at = []  # time.time() of each refusal
        self.fail = None
        self._serve()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def count(self):
        with self._lock:
            return len(self.issued)

    def valid(self, token):
        with self._lock:
            return _time.time() < self.expiry.get(token, 0)

    def issue(self, token):
        with self._lock:
            self.issued.append(token)
            self.expiry[token] = _time.time() + self.expires_in
        return token

    def wait_for(self, n=1, timeout=10):
        deadline = _time.time() + timeout
        while _time.time() < deadline:
            if self.count() >= n:
                return True
            _time.sleep(0.02)
        return False

    def secrets(self):
        """Every credential this service handed out or accepted, for log checks."""
        with self._lock:
            return list(self.issued)

    @staticmethod
    def form(headers, body):
        if headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise Refused(400, {"error": "invalid_request", "error_description": "Content-Type must be application/x-www-form-urlencoded"})
        try:
            parsed = urllib.parse.parse_qs(body.decode(), strict_parsing=True, keep_blank_values=True)
        except ValueError:
            raise Refused(400, {"error": "invalid_request", "error_description": "malformed form body"})
        if any(len(v) != 1 for v in parsed.values()):
            raise Refused(400, {"error": "invalid_request", "error_description": "repeated parameter"})
        return {k: v[0] for k, v in parsed.items()}

    def handle(self, method, path, headers, body):  # → (status, JSON value)
        raise NotImplementedError

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, method):
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = self.rfile.read(int(headers.get("content-length", "0") or 0))
                try:
                    if fake.fail:
                        raise Refused(*fake.fail)
                    status, value = fake.handle(method, self.path, headers, body)
                except Refused as r:
                    with fake._lock:
                        fake.rejected.append((r.status, r.body))
                        fake.refused_at.append(_time.time())
                    status, value = r.status, r.body
                raw = isinstance(value, bytes)
                data = value if raw else json.dumps(value).encode()
                self.send_response(status)
                self.send_header("content-type", "text/xml" if raw else "application/json; charset=utf-8")
                self.send_header("cache-control", "no-store")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.answer("GET")

            def do_POST(self):
                self.answer("POST")

        return Handler


class OidcProviderFake(_TokenService):
    """An OIDC provider (Keycloak, Okta, Auth0...): its discovery document
    (OpenID Connect Discovery 1.0 §4) and the client-credentials grant at its token
    endpoint (RFC 6749 §4.4) with the client authenticated in the form (client_secret_post)."""

    def __init__(self, client_id="llm-gateway", client_secret="oidc-client-secret", expires_in=3600):
        self.client_id, self.client_secret = client_id, client_secret
        self.discoveries = 0
        super().__init__(expires_in)

    @property
    def issuer(self):
        return self.base

    @property
    def token_endpoint(self):
        return self.base + "/oauth2/token"

    def secrets(self):
        return super().secrets() + [self.client_secret]

    def handle(self, method, path, headers, body):
        if method == "GET" and path == "/.well-known/openid-configuration":
            with self._lock:
                self.discoveries += 1
            return 200, {"issuer": self.issuer, "token_endpoint": self.token_endpoint,
                         "grant_types_supported": ["client_credentials"],
                         "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"]}
        if method != "POST" or path != "/oauth2/token":
            raise Refused(404, {"error": "not_found"})
        form = self.form(headers, body)
        if form.get("grant_type") != "client_credentials":
            raise Refused(400, {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            raise Refused(401, {"error": "invalid_client", "error_description": "Invalid client credentials"})
        if "openid" not in form.get("scope", "").split(" "):
            raise Refused(400, {"error": "invalid_scope", "error_description": "openid scope required"})
        with self._lock:
            self.forms.append(form)
        now = int(_time.time())
        token = self.issue(_fake_jwt({"iss": self.issuer, "sub": self.client_id, "aud": form.get("audience", self.client_id),
                                      "iat": now, "exp": now + self.expires_in}))
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}


ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class EntraTokenFake(_TokenService):
    """Microsoft Entra ID's v2.0 token endpoint, POST /{tenant}/oauth2/v2.0/token, for the
    client-credentials grant with a client secret or a federated client assertion
    (Microsoft identity platform: "OAuth 2.0 client credentials flow"). Answers like the
    documented example (fixtures/token/azure-entra-client-credentials.json, plus the
    ext_expires_in real answers carry); errors carry AADSTS codes as Entra's do.
    `assertion_valid(assertion)` decides which federated assertions are trusted."""

    def __init__(self, tenant="tenant-e2e", client_id="app-e2e", client_secret=None, assertion_valid=None, expires_in=3599):
        self.tenant, self.client_id = tenant, client_id
        self.client_secret, self.assertion_valid = client_secret, assertion_valid
        super().__init__(expires_in)

    def secrets(self):
        return super().secrets() + ([self.client_secret] if self.client_secret else [])

    @staticmethod
    def error(status, error, description):
        return Refused(status, {"error": error, "error_description": description + "\r\nTrace ID: 00000000-0000-0000-0000-000000000000",
                                "error_codes": [int(description[6:description.index(":")])]})

    def handle(self, method, path, headers, body):
        if method != "POST" or path != f"/{self.tenant}/oauth2/v2.0/token":
            raise self.error(400, "invalid_request", f"AADSTS90002: Tenant '{path.split('/')[1]}' not found.")
        form = self.form(headers, body)
        if form.get("grant_type") != "client_credentials":
            raise self.error(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
        if form.get("client_id") != self.client_id:
            raise self.error(400, "unauthorized_client", f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not found.")
        if form.get("scope") != ENTRA_SCOPE:
            raise self.error(400, "invalid_scope", f"AADSTS70011: The provided value for the input parameter 'scope' is not valid.")
        if ("client_secret" in form) == ("client_assertion" in form):
            raise self.error(401, "invalid_client", "AADSTS7000218: The request body must contain one of 'client_assertion' or 'client_secret'.")
        if "client_secret" in form:
            if self.client_secret is None or form["client_secret"] != self.client_secret:
                raise self.error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        else:
            if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
                raise self.error(400, "invalid_request", "AADSTS700024: client_assertion_type must be jwt-bearer.")
            if self.assertion_valid is None or not self.assertion_valid(form["client_assertion"]):
                raise self.error(400, "invalid_client", "AADSTS700024: Client assertion is not within its valid time range.")
        with self._lock:
            self.forms.append(form)
        answer = recorded("token/azure-entra-client-credentials.json")["response"]["body"]
        token = self.issue("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + _secrets.token_urlsafe(48))
        return 200, {"token_type": answer["token_type"], "expires_in": self.expires_in,
                     "ext_expires_in": self.expires_in, "access_token": token}


class StsFake(_TokenService):
    """AWS STS's AssumeRoleWithWebIdentity (query API: a form POST to /, answered in XML
    shaped on fixtures/token/aws-sts-assume-role-with-web-identity.json, errors as
    <ErrorResponse>). It is unsigned, as the real call is. `token_valid(token)` decides
    which web identity tokens the role trusts. The keys it issues expire at the
    whole-second Expiration it names, at least `expires_in` seconds away."""

    def __init__(self, role_arn, token_valid, expires_in=3600):
        self.role_arn, self.token_valid = role_arn, token_valid
        self.keys = {}  # access key id → (botocore Credentials, expiry)
        self.issued_at = {}
        super().__init__(expires_in)

    def secrets(self):
        with self._lock:
            return [s for c, _ in self.keys.values() for s in (c.secret_key, c.token)]

    @staticmethod
    def error(status, code, message, kind="Sender"):
        xml = (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>{kind}</Type>'
               f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>{_secrets.token_hex(16)}</RequestId></ErrorResponse>")
        return Refused(status, xml.encode())

    def handle(self, method, path, headers, body):
        if method != "POST" or path != "/":
            raise self.error(404, "UnknownOperationException", "Unknown operation")
        form = self.form(headers, body)
        if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15":
            raise self.error(400, "InvalidAction", "Could not find operation")
        if "authorization" in headers:
            raise self.error(400, "InvalidParameterValue", "AssumeRoleWithWebIdentity is not signed")
        if form.get("RoleArn") != self.role_arn:
            raise self.error(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        if not re.fullmatch(r"[\w+=,.@-]{2,64}", form.get("RoleSessionName", "")):
            raise self.error(400, "ValidationError", "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint")
        duration = form.get("DurationSeconds", "3600")
        if not duration.isdigit() or not 900 <= int(duration) <= 43200:
            raise self.error(400, "ValidationError", "DurationSeconds must be between 900 and 43200")
        if not self.token_valid(form.get("WebIdentityToken", "")):
            raise self.error(400, "InvalidIdentityToken", "The web identity token that was passed could not be validated by AWS.")
        with self._lock:
            self.forms.append(form)
        now = _time.time()
        expiry = float(int(now + self.expires_in) + 1)
        key_id = "ASIA" + _secrets.token_hex(8).upper()
        credentials = Credentials(key_id, _secrets.token_urlsafe(30), "IQoJb3JpZ2luX2VjE" + _secrets.token_urlsafe(120))
        expiration = datetime.datetime.fromtimestamp(expiry, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            self.keys[key_id] = (credentials, expiry)
            self.issued.append(key_id)
            self.expiry[key_id] = expiry
            self.issued_at[key_id] = now
        session = form["RoleSessionName"]
        xml = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Audience>llm-gateway</Audience>
    <AssumedRoleUser>
      <AssumedRoleId>AROARABCDEFGHIJKLMNOP:{session}</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/{self.role_arn.rsplit('/', 1)[-1]}/{session}</Arn>
    </AssumedRoleUser>
    <Provider>arn:aws:iam::123456789012:oidc-provider/idp.example.com</Provider>
    <Credentials>
      <AccessKeyId>{key_id}</AccessKeyId>
      <SecretAccessKey>{credentials.secret_key}</SecretAccessKey>
      <SessionToken>{credentials.token}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>system:serviceaccount:default:llm-gateway</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{_secrets.token_hex(16)}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"""
        return 200, xml.encode()


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class GoogleStsFake(_TokenService):
    """Google's Security Token Service, POST /v1/token (the RFC 8693 token exchange of
    workload identity federation, as Google's STS reference documents it): the audience
    of the pool's provider, a subject token the provider trusts (`token_valid`), the
    cloud-platform scope. Answers a federated access token with issued_token_type."""

    def __init__(self, audience, token_valid, expires_in=3599):
        self.audience, self.token_valid = audience, token_valid
        super().__init__(expires_in)

    def handle(self, method, path, headers, body):
        if method != "POST" or path != "/v1/token":
            raise Refused(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})
        form = self.form(headers, body)
        bad = lambda description: Refused(400, {"error": "invalid_request", "error_description": description})
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise bad("Invalid value for \"grant_type\".")
        if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            raise bad("Invalid value for \"requested_token_type\".")
        if form.get("subject_token_type") not in ("urn:ietf:params:oauth:token-type:jwt",
                                                  "urn:ietf:params:oauth:token-type:id_token"):
            raise bad("Invalid value for \"subject_token_type\".")
        if CLOUD_PLATFORM not in form.get("scope", "").split():
            raise Refused(400, {"error": "invalid_scope", "error_description": "Invalid scope."})
        if form.get("audience") != self.audience:
            raise Refused(400, {"error": "invalid_target", "error_description": "The target service indicated by the \"audience\" parameters is invalid."})
        if not self.token_valid(form.get("subject_token", "")):
            raise Refused(400, {"error": "invalid_grant", "error_description": "The provided subject token is invalid or expired."})
        with self._lock:
            self.forms.append(form)
        token = self.issue("ya29.d." + _secrets.token_urlsafe(60))
        return 200, {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                     "expires_in": self.expires_in}


class IamCredentialsFake(_TokenService):
    """IAM Service Account Credentials' generateAccessToken
    (POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken, JSON), callable
    with a federated token `caller_valid` accepts for the one service account it may
    impersonate. expireTime is RFC 3339 in whole seconds, as Google writes it."""

    def __init__(self, service_account, caller_valid, expires_in=3600):
        self.service_account, self.caller_valid = service_account, caller_valid
        self.issued_at = {}
        super().__init__(expires_in)

    @staticmethod
    def error(code, status, message):
        return Refused(code, {"error": {"code": code, "message": message, "status": status}})

    def handle(self, method, path, headers, body):
        m = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^/:]+):generateAccessToken", path)
        if method != "POST" or not m:
            raise self.error(404, "NOT_FOUND", "Not Found")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not self.caller_valid(auth[7:]):
            raise self.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if urllib.parse.unquote(m.group(1)) != self.service_account:
            raise self.error(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
        try:
            request = json.loads(body)
        except ValueError:
            raise self.error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if CLOUD_PLATFORM not in request.get("scope", []):
            raise self.error(400, "INVALID_ARGUMENT", "Scope required.")
        lifetime = request.get("lifetime", "3600s")
        if not re.fullmatch(r"\d+(\.\d+)?s", lifetime) or float(lifetime[:-1]) > 3600:
            raise self.error(400, "INVALID_ARGUMENT", "Invalid lifetime.")
        now = _time.time()
        expiry = float(int(now + self.expires_in) + 1)
        token = "ya29.c." + _secrets.token_urlsafe(60)
        with self._lock:
            self.issued.append(token)
            self.expiry[token] = expiry
            self.issued_at[token] = now
        expire_time = datetime.datetime.fromtimestamp(expiry, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"accessToken": token, "expireTime": expire_time}
