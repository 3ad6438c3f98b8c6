"""QuotaPolicy token budgets, enforced by the real Envoy's rate-limit filter against the
sidecar's embedded rate-limit service: per consumer (`--consumer-header`), with a CEL
cost charged when the answer ends (unary and streamed), shadow mode, and the costs in
Envoy's access log. The fake OpenAI answers with 8 input and 377 output tokens (385 in
all) unary, 12 and 100 (112) streamed."""

import json
import subprocess
import time

import httpx
import pytest

from harness import BIN, backend_yaml, route_yaml

CEL = "input_tokens + output_tokens * 2"
UNARY_COST = 8 + 377 * 2  # 762
STREAM_COST = 12 + 100 * 2  # 212

QUOTA = f"""apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {{name: budget, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}}]
  perModelQuotas:
    - modelName: gpt-q
      quota:
        costExpression: {CEL}
        bucketRules:
          - clientSelectors: [{{headers: [{{name: x-user, type: Distinct}}]}}]
            quota: {{limit: 1000, duration: 1m}}
          - clientSelectors: [{{headers: [{{name: x-tier, type: Exact, value: trial}}]}}]
            quota: {{limit: 1, duration: 1m}}
            shadowMode: true
    - modelName: gpt-s
      quota:
        defaultBucket: {{limit: 100, duration: 1s}}
"""


def route():
    text = route_yaml("r", [("gpt-q", [("openai", 0, None)]), ("gpt-s", [("openai", 0, None)])])
    return text.replace("      type: TotalToken\n",
                        f"      type: TotalToken\n    - metadataKey: llm_cel_cost\n      type: CEL\n      cel: {CEL}\n", 1)


@pytest.fixture
def gateway(gateway_factory, openai_fake):
    return gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route(), QUOTA,
        extra_args=["--consumer-header", "x-user", "--consumer-metric-attribute"])


def fresh_minute():
    """Waits out the last seconds of a minute, so a test's requests share a 1m window."""
    into = time.time() % 60
    if into > 52:
        time.sleep(60.2 - into)


def access_log(gateway):
    """Envoy's access-log lines (JSON, on the gateway's output). Envoy flushes its stdout
    every 10 s (`--file-flush-interval-msec`) and when it stops: stop the gateway first."""
    lines = []
    for line in gateway.read_log().splitlines():
        if line.startswith("{") and '"ai_gateway"' in line:
            lines.append(json.loads(line))
    return lines


def chat(gateway, user, stream=False, **headers):
    headers = dict(headers, **({"x-user": user} if user else {}))
    body = {"model": "gpt-q", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    r = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    # The charge is sent when the stream is done, just after the client has the answer.
    time.sleep(0.2)
    return r


def assert_refused(r, window=60):
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "tokens"
    assert "quota" in error["message"]
    # What is left of the window.
    assert 1 <= int(r.headers["retry-after"]) <= window


def test_a_consumer_is_refused_once_its_cel_cost_is_spent_and_others_are_not(gateway, openai_fake):
    fresh_minute()
    first = chat(gateway, "alice")
    assert first.status_code == 200, first.text
    # 762 of 1000 spent: still admitted, and charged again when it ends.
    assert chat(gateway, "alice").status_code == 200
    seen = len(openai_fake.requests)
    refused = chat(gateway, "alice")
    assert_refused(refused)
    assert len(openai_fake.requests) == seen, "a refused request never reaches the provider"
    # Anthropic SDK clients get Anthropic's shape for the same refusal.
    messages = httpx.post(gateway.url + "/v1/messages", headers={"x-user": "alice", "anthropic-version": "2023-06-01"},
                          json={"model": "gpt-q", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    assert messages.status_code == 429, messages.text
    assert messages.json()["type"] == "error" and messages.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in messages.headers
    # Another consumer has a budget of its own.
    assert chat(gateway, "bob").status_code == 200
    # The consumer labels the metrics (asked for with --consumer-metric-attribute).
    assert gateway.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output", user_id="alice") == 2 * 377
    assert gateway.metric("gen_ai_server_request_duration_seconds_count", error_type="429", user_id="alice") == 2
    assert gateway.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="output", user_id="bob") == 377
    # The costs, as Envoy's access log has them from the sidecar's metadata.
    gateway.stop()
    lines = access_log(gateway)
    served = [line for line in lines if line["status"] == 200 and line["path"] == "/v1/chat/completions"]
    assert len(served) == 3
    for line in served:
        meta = line["ai_gateway"]
        assert meta["llm_cel_cost"] == UNARY_COST and meta["llm_total_token"] == 385
        assert meta["backend_name"] == "openai.default" and meta["route_name"] == "default/r"
        assert meta["response_model"] == "gpt-5-nano-2025-08-07"
        assert [v for k, v in meta.items() if k.startswith("quota_cost_")] == [UNARY_COST]
    clients = [[v for k, v in line["ai_gateway"].items() if k.startswith("quota_client_")] for line in served]
    assert clients == [["alice"], ["alice"], ["bob"]]
    # Both refusals (chat completions and Messages) are logged, and charged nothing.
    refused = [line for line in lines if line["status"] == 429]
    assert len(refused) == 2 and all(line["details"] == "request_rate_limited" for line in refused)
    assert all(line["ai_gateway"]["llm_cel_cost"] == 0 for line in refused)
    assert "Invalid hits_addend" not in gateway.read_log()


def test_streamed_answers_are_charged_when_the_stream_ends(gateway):
    fresh_minute()
    admitted = 0
    for _ in range(8):
        r = chat(gateway, "carol", stream=True)
        if r.status_code == 429:
            break
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text
        admitted += 1
    # 212 a stream: after five (1060 > 1000) the sixth is refused, before it starts.
    assert admitted == 5
    assert_refused(r)
    gateway.stop()
    lines = [line for line in access_log(gateway) if (line["ai_gateway"] or {}).get("llm_cel_cost") == STREAM_COST]
    assert len(lines) == 5


def test_shadow_mode_counts_but_never_refuses(gateway):
    fresh_minute()
    for _ in range(3):
        # Only the shadow rule (limit 1) selects a trial request without a user.
        r = chat(gateway, None, **{"x-tier": "trial"})
        assert r.status_code == 200, r.text
    # Counted: the rate-limit headers show it spent, and the sidecar says what it spared.
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert "quota exceeded in shadow mode (not refused)" in gateway.read_log()
    assert "default/budget/openai.default/gpt-q/rule-1" in gateway.read_log()


def test_a_default_bucket_of_one_second_refuses_then_comes_back(gateway):
    """No costExpression: total_tokens (385) against 100 a second."""
    body = {"model": "gpt-s", "messages": [{"role": "user", "content": "hi"}]}
    deadline = time.time() + 10
    while True:
        # Both requests in one second: start early in a second.
        while time.time() % 1 > 0.3:
            time.sleep(0.02)
        assert httpx.post(gateway.url + "/v1/chat/completions", json=body).status_code == 200
        time.sleep(0.1)
        r = httpx.post(gateway.url + "/v1/chat/completions", json=body)
        if r.status_code == 429 or time.time() > deadline:
            break
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1"
    time.sleep(1.1)
    assert httpx.post(gateway.url + "/v1/chat/completions", json=body).status_code == 200


def test_render_ratelimit_config_names_every_bucket(tmp_path, openai_fake):
    from harness import write_config
    path = write_config(tmp_path, backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey"), route(), QUOTA)
    r = subprocess.run([str(BIN), "render", "ratelimit-config", "--config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "domain: ai-gateway-quota" in r.stdout
    for bucket in ("gpt-q/rule-0", "gpt-q/rule-1", "gpt-s/default"):
        assert f"value: default/budget/openai.default/{bucket}" in r.stdout
    assert "shadow_mode: true" in r.stdout and "unit: second" in r.stdout


def check(path):
    return subprocess.run([str(BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=30)


def test_check_and_run_name_what_is_read_but_not_enforced(tmp_path, gateway_factory, openai_fake):
    gateway_kind = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: default}\nspec: {gatewayClassName: x}"
    docs = (backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey"), route(), QUOTA, gateway_kind,
            backend_yaml("cohere", "Cohere", openai_fake.port))
    from harness import write_config
    r = check(write_config(tmp_path, *docs))
    assert r.returncode == 0, r.stderr
    assert "not enforced: " in r.stdout
    assert "AIGatewayRoute default/r: spec.parentRefs: is read but not enforced" in r.stdout
    assert "Gateway default/g: kind: `Gateway` is read but not enforced" in r.stdout
    # Every schema and credential type is served now: none is named as not served.
    assert "is read but not served" not in r.stdout
    gw = gateway_factory(*docs)
    assert "not enforced: " in gw.read_log() and "spec.parentRefs" in gw.read_log()


@pytest.mark.parametrize("selector,field", [
    ("{methods: [{value: POST}]}", "clientSelectors[0].methods"),
    ("{path: {value: /v1}}", "clientSelectors[0].path"),
    ("{headers: [{name: x-user, type: Distinct, value: a}]}", "clientSelectors[0].headers[0]"),
])
def test_selectors_the_gateway_cannot_enforce_are_refused(tmp_path, openai_fake, selector, field):
    quota = QUOTA.replace("[{headers: [{name: x-user, type: Distinct}]}]", f"[{selector}]")
    from harness import write_config
    r = check(write_config(tmp_path, backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey"), route(), quota))
    assert r.returncode == 1, r.stdout
    assert "QuotaPolicy default/budget" in r.stderr and field in r.stderr, r.stderr


def test_replicas_share_one_budget_through_a_rate_limit_service(tmp_path, gateway_factory, openai_fake):
    """`--rate-limit-service` points each Envoy at one service over gRPC (here another
    sidecar's embedded service, which speaks the same API as envoyproxy/ratelimit): what
    one replica charges, the other refuses."""
    import signal
    from fakes import free_port
    from harness import write_config
    docs = (backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"), route(), QUOTA)
    shared_dir = tmp_path / "shared"
    shared_dir.mkdir()
    config = write_config(shared_dir, *docs)
    rls_port, admin_port = free_port(), free_port()
    service = subprocess.Popen([str(BIN), "serve", "--config", str(config), "--listen", f"127.0.0.1:{rls_port}",
                                "--admin", f"127.0.0.1:{admin_port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        args = ["--consumer-header", "x-user", "--rate-limit-service", f"127.0.0.1:{rls_port}"]
        one = gateway_factory(*docs, extra_args=args)
        two = gateway_factory(config, extra_args=args)
        fresh_minute()
        first = chat(one, "alice")
        assert first.status_code == 200, first.text
        assert chat(two, "alice").status_code == 200
        assert_refused(chat(one, "alice"))
        assert_refused(chat(two, "alice"))
        assert chat(two, "bob").status_code == 200
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(10)


def test_rules_envoy_picks_are_checked_too(gateway_factory, openai_fake, azure_fake):
    """A regular-expression rule and a rule with a backup: the sidecar foresees the rule
    Envoy picks (and its first backend) and checks the budget before the request goes."""
    route_text = route_yaml("r", [("gpt-f", [("openai", 0, None), ("azure", 1, "my-deployment")])]) + """
    - matches:
        - headers:
            - type: RegularExpression
              name: x-ai-eg-model
              value: gpt-r.*
      backendRefs:
        - name: openai"""
    quota = """apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: budget, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}]
  perModelQuotas:
    - {modelName: gpt-f, quota: {defaultBucket: {limit: 100, duration: 1h}}}
    - {modelName: gpt-r1, quota: {defaultBucket: {limit: 100, duration: 1h}}}
"""
    gateway = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("azure", "AzureOpenAI", azure_fake.port, policy="AzureAPIKey", key="azure-secret-key",
                     version="2025-01-01-preview"),
        route_text, quota)
    for model in ("gpt-f", "gpt-r1"):
        assert gateway.chat(model).status_code == 200
        time.sleep(0.2)
        assert_refused(gateway.chat(model), window=3600)
    # Without --consumer-metric-attribute the metrics have no consumer.
    assert "user_id" not in httpx.get(gateway.admin + "/metrics").text


def jwt(secret, claims):
    """An HS256 JWT, signed as any issuer would."""
    import base64
    import hashlib
    import hmac

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@pytest.mark.parametrize("forwarded", [True, False], ids=["forwarded", "not-forwarded"])
def test_the_consumer_is_a_verified_jwt_claim_under_serve(tmp_path, openai_fake, forwarded):
    """`serve --consumer-claim jwt_payload.sub` behind an Envoy whose jwt_authn filter
    verifies the token and forwards its payload: buckets follow the claim, and a client
    naming another consumer in the header is not believed. `serve` says at start what
    Envoy must forward; without it no request has a consumer."""
    import base64
    import signal
    from fakes import free_port
    from harness import ROOT, write_config
    quota = QUOTA.replace("{name: x-user, type: Distinct}", "{name: x-ai-eg-consumer, type: Distinct}")
    config = write_config(tmp_path, backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey",
                                                 key="sk-openai-secret"), route(), quota)
    socket_path, port = tmp_path / "extproc.sock", free_port()
    bootstrap = json.loads(subprocess.run(
        [str(BIN), "render", "envoy", "--config", str(config), "--xds-dir", str(tmp_path / "xds"),
         "--sidecar", str(socket_path), "--port", str(port), "--envoy-admin-port", str(free_port())],
        capture_output=True, text=True, timeout=30, check=True).stdout)
    secret = b"a-test-signing-key-of-32-bytes!!"
    jwks = json.dumps({"keys": [{"kty": "oct", "alg": "HS256", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}]})
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = hcm["http_filters"][0]["typed_config"]
    if forwarded:
        ext_proc["metadata_options"]["forwarding_namespaces"] = {"untyped": ["envoy.filters.http.jwt_authn"]}
    hcm["http_filters"].insert(0, {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"test": {"issuer": "https://issuer.test", "local_jwks": {"inline_string": jwks},
                               "payload_in_metadata": "jwt_payload"}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing": {}}}]}})
    (tmp_path / "envoy.json").write_text(json.dumps(bootstrap))
    log = open(tmp_path / "serve.log", "wb")
    sidecar = subprocess.Popen([str(BIN), "serve", "--config", str(config), "--listen", str(socket_path),
                                "--admin", f"127.0.0.1:{free_port()}", "--consumer-claim", "jwt_payload.sub"],
                               stdout=log, stderr=subprocess.STDOUT)
    envoy = subprocess.Popen([str(ROOT / ".venv" / "bin" / "envoy"), "-c", str(tmp_path / "envoy.json"),
                              "--disable-hot-restart", "-l", "error"], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    body = {"model": "gpt-q", "messages": [{"role": "user", "content": "hi"}]}

    def ask(sub, claimed=None):
        headers = {"authorization": "Bearer " + jwt(secret, {"iss": "https://issuer.test", "sub": sub})} if sub else {}
        if claimed:
            headers["x-ai-eg-consumer"] = claimed
        r = httpx.post(url, json=body, headers=headers, timeout=30)
        time.sleep(0.2)
        return r
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        fresh_minute()
        said = "ext_proc must forward `envoy.filters.http.jwt_authn`"
        assert said in (tmp_path / "serve.log").read_text()
        if not forwarded:
            # What the start message warns of: no consumer, so no per-consumer limit.
            for _ in range(3):
                assert ask("alice").status_code == 200
            return
        assert ask("alice", claimed="bob").status_code == 200
        assert ask("alice").status_code == 200
        # Alice's 1524 of 1000 are spent, whatever header she sends.
        assert_refused(ask("alice", claimed="bob"))
        # Bob's own budget is untouched, even when he names Alice.
        assert ask("bob", claimed="alice").status_code == 200
        # Without a verified token there is no consumer: the header is not believed.
        for _ in range(3):
            assert ask(None, claimed="mallory").status_code == 200
    finally:
        envoy.send_signal(signal.SIGTERM)
        sidecar.send_signal(signal.SIGTERM)
        envoy.wait(10)
        sidecar.wait(10)
        log.close()


@pytest.mark.parametrize("model,stream", [("claude-q", False), ("claude-q", True), ("converse-q", False), ("converse-q", True)])
def test_translated_schemas_are_charged_and_refused_in_the_clients_shape(gateway_factory, anthropic_fake, bedrock_fake, model, stream):
    """OpenAI clients of Anthropic and Bedrock Converse, unary and streamed: the budget
    is charged from the translated usage, and the refusal is the OpenAI error, not a
    provider error translated."""
    from harness import aws_credentials_file
    quota = """apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: budget, namespace: default}
spec:
  targetRefs:
    - {group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: anthropic}
    - {group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: converse}
  serviceQuota: {costExpression: output_tokens, quota: {limit: 1, duration: 1h}}
"""
    gateway = gateway_factory(
        backend_yaml("anthropic", "Anthropic", anthropic_fake.port, policy="AnthropicAPIKey", key="sk-ant-provider-key"),
        backend_yaml("converse", "AWSBedrock", bedrock_fake.port, policy="AWSCredentials", key=aws_credentials_file()),
        route_yaml("r", [("claude-q", [("anthropic", 0, "claude-sonnet-4-5")]),
                         ("converse-q", [("converse", 0, "anthropic.claude-3-haiku-20240307-v1:0")])]),
        quota)
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    first = gateway.chat(model, **extra)
    assert first.status_code == 200, first.text
    time.sleep(0.2)
    refused = gateway.chat(model, **extra)
    assert_refused(refused, window=3600)
    # Every cost, with the override and the provider's model, in Envoy's access log.
    gateway.stop()
    served = [line["ai_gateway"] for line in access_log(gateway) if line["status"] == 200 and line["model"] == model]
    assert len(served) == 1
    meta = served[0]
    assert meta["model_name_override"] in ("claude-sonnet-4-5", "anthropic.claude-3-haiku-20240307-v1:0")
    assert meta["response_model"] and meta["route_name"] == "default/r"
    assert meta["llm_output_token"] > 0 and meta["llm_total_token"] == meta["llm_input_token"] + meta["llm_output_token"]
    assert [v for k, v in meta.items() if k.startswith("quota_cost_")] == [meta["llm_output_token"]]


def test_a_cost_above_what_envoy_takes_is_charged_at_its_most(gateway_factory, openai_fake):
    """Envoy 1.40 drops a descriptor whose hits_addend is above 10^9 (charging nothing):
    a larger cost is charged as 10^9."""
    quota = QUOTA.split("  perModelQuotas:")[0] + """  serviceQuota:
    costExpression: total_tokens * 10000000
    quota: {limit: 4294967295, duration: 1h}
"""
    gateway = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"), route(), quota)
    for _ in range(5):  # 5 * 10^9 > 4294967295
        assert gateway.chat("gpt-s").status_code == 200
        time.sleep(0.2)
    assert_refused(gateway.chat("gpt-s"), window=3600)


def test_a_quota_policy_added_by_a_reload_is_enforced(gateway_factory, openai_fake, tmp_path):
    """The rate-limit filter is in every gateway's chain, so a QuotaPolicy that a reload
    brings (Envoy gets its rate limits by file-based xDS) is enforced without a restart."""
    from harness import write_config
    backend = backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret")
    gateway = gateway_factory(backend, route())
    for _ in range(3):
        assert gateway.chat("gpt-s").status_code == 200
    pid = gateway.proc.pid
    write_config(tmp_path, backend, route(), QUOTA.replace("limit: 100, duration: 1s", "limit: 100, duration: 1h"))
    deadline = time.time() + 15
    while gateway.chat("gpt-s").status_code != 429:
        assert time.time() < deadline, gateway.read_log()[-3000:]
        time.sleep(0.2)
    assert gateway.proc.pid == pid and gateway.proc.poll() is None
    # What the new configuration reads but does not enforce is named on reload too.
    assert "not enforced: " in gateway.read_log().split("configuration reloaded", 1)[1]
