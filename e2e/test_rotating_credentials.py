"""Short-lived credentials the sidecar fetches and refreshes itself, end to end: the real
Envoy and sidecar, fake token services (providers.py: Entra ID, an OIDC provider,
Google's token endpoint) and providers that accept only an unexpired token those services
issued (Azure OpenAI with Entra authentication, Vertex AI).

Tokens live LIFETIME seconds, so the cache's rules show in seconds: a token is refreshed
once less than 20% of its life remains and not sent in its last twentieth. Every scenario runs
at RUST_LOG=trace and ends by searching the sidecar's log for every secret and token it
saw.
"""

import json
import time

import httpx
import pytest

from fakes import FakeProvider
from harness import _indent, backend_yaml, route_yaml
from harness import write_config
from providers import (BedrockFake, EntraTokenFake, GoogleStsFake, GoogleTokenFake, IamCredentialsFake,
                       OidcProviderFake, ServiceAccount, StsFake, VertexFake)

LIFETIME = 2  # seconds: refreshed at 1.6 s, sent until 1.9 s
MODEL = "gpt-4o-mini"
TRACE = {"RUST_LOG": "trace"}


def policy_yaml(name, target, policy_type, spec, secrets=None):
    """A BackendSecurityPolicy for one AIServiceBackend, and its Secrets ({name: {key: value}})."""
    docs = [f"""apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata:
  name: {name}
  namespace: default
spec:
  targetRefs:
    - group: aigateway.envoyproxy.io
      kind: AIServiceBackend
      name: {target}
  type: {policy_type}
{_indent(spec, 2)}"""]
    for secret, data in (secrets or {}).items():
        entries = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in data.items())
        docs.append(f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n  namespace: default\n"
                    f"type: Opaque\nstringData:\n{entries}")
    return "\n---\n".join(docs)


def oidc_exchange_yaml(oidc, discover=False, role_arn=None):
    provider = f"issuer: {oidc.issuer}" + ("" if discover else f"\n      tokenEndpoint: {oidc.token_endpoint}")
    role = f"\n  awsRoleArn: {role_arn}" if role_arn else ""
    return f"""oidcExchangeToken:{role}
  oidc:
    provider:
      {provider}
    clientID: {oidc.client_id}
    clientSecret:
      name: oidc-client
      namespace: default"""


def chat(gw, model=MODEL):
    return httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                      json={"model": model, "messages": [{"role": "user", "content": "Hello!"}]})


def messages(gw, model=MODEL):
    return httpx.post(gw.url + "/v1/messages", timeout=10, headers={"anthropic-version": "2023-06-01"},
                      json={"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hello!"}]})


def assert_no_secrets(text, secrets):
    """No secret (nor a long fragment of one) in `text`: logs, error bodies, metrics."""
    assert secrets, "nothing to look for"
    for secret in secrets:
        assert secret and secret not in text, "a credential was shown"
        # Tokens are long: a fragment would be a leak too.
        if len(secret) > 40:
            assert secret[10:40] not in text


def latest_token(service):
    """(when it was issued, how long it lives) of the service's latest token."""
    with service._lock:
        token = service.issued[-1]
        expiry = service.expiry[token]
        issued_at = getattr(service, "issued_at", {}).get(token, expiry - service.expires_in)
    return issued_at, expiry - issued_at


def rotation_scenario(gw, token_service, provider, backend, policy, policy_type, model=MODEL, messages_too=True):
    """Several lifetimes of steady traffic with no failure, an outage of the token service
    ridden out on the cached token, the prompt 503 once it expired, and recovery.
    Returns what the client and the metrics saw, for the secrets check."""
    seen = []
    assert token_service.wait_for(1), "no token was fetched"
    # Steady traffic until two refreshes ahead of expiry: every request succeeds.
    before = token_service.count()
    _, life = latest_token(token_service)
    deadline = time.time() + 3 * life
    while token_service.count() - before < 2:
        assert time.time() < deadline, "not refreshed ahead of each expiry"
        r = chat(gw, model)
        assert r.status_code == 200, r.text
        time.sleep(0.1)
    assert provider.rejected == [], "the provider never saw an expired or unknown token"

    # Outage: right after that refresh, the token service goes down.
    fresh_at, life = latest_token(token_service)
    token_service.fail = (503, {"error": "temporarily_unavailable", "error_description": "The service is unavailable."})
    # The refresh at 80% of the lifetime fails; the cached token keeps serving (it is sent
    # until 95%), and the failure is counted.
    started = []
    while time.time() < fresh_at + 0.88 * life:
        started.append(time.time())
        r = chat(gw, model)
        assert r.status_code == 200, "ridden out on the cached token: " + r.text
        time.sleep(0.02)
    with token_service._lock:
        refused = list(token_service.refused_at)
    assert refused and refused[0] < fresh_at + 0.85 * life, "the refresh was tried at 80% of the lifetime"
    assert any(t > refused[0] for t in started), "requests after the failed refresh succeeded"
    assert gw.metric("llm_extproc_credential_refresh_failures_total", policy=policy) >= 1
    assert f'policy_type="{policy_type}"' in httpx.get(gw.admin + "/metrics").text

    # Past the token's usable life: a prompt 503 naming the backend, never the provider's 401.
    time.sleep(max(0.0, fresh_at + life + 0.1 - time.time()))
    started = time.time()
    r = chat(gw, model)
    assert time.time() - started < 1.0, "answered at once"
    assert r.status_code == 503, r.text
    seen.append(r.text)
    error = r.json()["error"]
    assert backend in error["message"] and policy_type in error["message"], error
    assert "temporarily_unavailable" in error["message"] or "HTTP 503" in error["message"], error
    if messages_too:
        r = messages(gw, model)
        assert r.status_code == 503, r.text
        seen.append(r.text)
        body = r.json()
        assert body["type"] == "error" and backend in body["error"]["message"], body
    assert provider.rejected == [], "no request went out without a valid token"
    assert "access token refresh failed" in gw.read_log()

    # Recovery: within seconds of the service coming back.
    token_service.fail = None
    started = time.time()
    while True:
        r = chat(gw, model)
        if r.status_code == 200:
            break
        assert time.time() - started < 3, "no recovery within 3 s: " + r.text
        seen.append(r.text)
        time.sleep(0.1)
    seen.append(httpx.get(gw.admin + "/metrics").text)
    return "\n".join(seen)


# --------------------------------------------------------------------------- Azure


@pytest.fixture
def azure_entra():
    provider = FakeProvider(kind="azure", api_version="2025-01-01-preview")
    yield provider
    provider.stop()


def azure_config(provider, policy_spec, secrets=None):
    return [
        backend_yaml("azure", "AzureOpenAI", provider.port, version="2025-01-01-preview"),
        policy_yaml("azure-entra", "azure", "AzureCredentials", policy_spec, secrets),
        route_yaml("route", [(MODEL, [("azure", 0, None)])]),
    ]


def azure_spec(entra, extra):
    return f"azureCredentials:\n  clientID: {entra.client_id}\n  tenantID: {entra.tenant}\n{_indent(extra, 2)}"


def test_azure_client_secret_rotates_rides_out_an_outage_and_recovers(gateway_factory, azure_entra):
    entra = EntraTokenFake(client_secret="entra-client-secret-e2e", expires_in=LIFETIME)
    azure_entra.entra = entra
    try:
        gw = gateway_factory(*azure_config(azure_entra, azure_spec(entra, "clientSecretRef:\n  name: entra\n  namespace: default"),
                                           {"entra": {"client-secret": entra.client_secret}}),
                             env={**TRACE, "AZURE_AUTHORITY_HOST": entra.base})
        seen = rotation_scenario(gw, entra, azure_entra, "azure.default", "default/azure-entra", "AzureCredentials")
        sent = azure_entra.last()["headers"]
        assert sent["authorization"].startswith("Bearer ") and "api-key" not in sent
        assert {f["client_secret"] for f in entra.forms} == {entra.client_secret}
        assert_no_secrets(gw.read_log() + seen, entra.secrets())
    finally:
        entra.stop()


def test_azure_federated_oidc_token_as_client_assertion(gateway_factory, azure_entra):
    oidc = OidcProviderFake(expires_in=60)
    entra = EntraTokenFake(assertion_valid=oidc.valid, expires_in=LIFETIME)
    azure_entra.entra = entra
    try:
        gw = gateway_factory(*azure_config(azure_entra, azure_spec(entra, oidc_exchange_yaml(oidc, discover=True)),
                                           {"oidc-client": {"client-secret": oidc.client_secret}}),
                             env={**TRACE, "AZURE_AUTHORITY_HOST": entra.base})
        seen = rotation_scenario(gw, entra, azure_entra, "azure.default", "default/azure-entra", "AzureCredentials")
        assert oidc.discoveries == 1, "the discovered token endpoint is kept"
        assert {f["client_assertion"] for f in entra.forms} <= set(oidc.issued)
        assert_no_secrets(gw.read_log() + seen, entra.secrets() + oidc.secrets())
    finally:
        entra.stop()
        oidc.stop()


def test_azure_workload_identity_token_file(gateway_factory, azure_entra, tmp_path):
    # As the Azure workload identity webhook sets it up: a projected service account token
    # the kubelet rewrites, named by AZURE_FEDERATED_TOKEN_FILE.
    token_file = tmp_path / "azure-identity-token"
    current = {"token": "projected-sa-token-1-" + "x" * 40}
    token_file.write_text(current["token"])
    entra = EntraTokenFake(assertion_valid=lambda a: a == current["token"], expires_in=LIFETIME)
    azure_entra.entra = entra
    try:
        gw = gateway_factory(*azure_config(azure_entra, azure_spec(entra, "")),
                             env={**TRACE, "AZURE_AUTHORITY_HOST": entra.base, "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
                                  "AZURE_CLIENT_ID": entra.client_id, "AZURE_TENANT_ID": entra.tenant})
        assert entra.wait_for(1)
        # The kubelet rotates the file: the next refresh sends the new token.
        current["token"] = "projected-sa-token-2-" + "y" * 40
        token_file.write_text(current["token"])
        n = entra.count()
        assert entra.wait_for(n + 1, timeout=LIFETIME + 1)
        assert entra.forms[-1]["client_assertion"] == current["token"]
        assert chat(gw).status_code == 200
        assert entra.rejected == []
        assert_no_secrets(gw.read_log(), entra.secrets() + ["projected-sa-token-1-", "projected-sa-token-2-"])
    finally:
        entra.stop()


def test_a_rotated_client_secret_refreshes_at_once_without_errors(gateway_factory, azure_entra, tmp_path):
    entra = EntraTokenFake(client_secret="entra-secret-before", expires_in=60)
    azure_entra.entra = entra
    spec = azure_spec(entra, "clientSecretRef:\n  name: entra\n  namespace: default")
    try:
        gw = gateway_factory(*azure_config(azure_entra, spec, {"entra": {"client-secret": "entra-secret-before"}}),
                             env={"AZURE_AUTHORITY_HOST": entra.base})
        assert entra.wait_for(1) and chat(gw).status_code == 200
        # An unrelated change: the cached token is kept, nothing is fetched.
        write_config(tmp_path, *azure_config(azure_entra, spec, {"entra": {"client-secret": "entra-secret-before"}}),
                     "apiVersion: v1\nkind: Secret\nmetadata:\n  name: unrelated\nstringData:\n  apiKey: x")
        time.sleep(1.0)
        assert entra.count() == 1
        # The Secret rotates (the old secret stays valid a while, as in Entra): fetched at once.
        entra.client_secret = "entra-secret-after"
        write_config(tmp_path, *azure_config(azure_entra, spec, {"entra": {"client-secret": "entra-secret-after"}}))
        assert entra.wait_for(2, timeout=5), "the new secret was used at once"
        assert entra.forms[-1]["client_secret"] == "entra-secret-after"
        for _ in range(5):
            assert chat(gw).status_code == 200
        assert azure_entra.rejected == []
    finally:
        entra.stop()


# --------------------------------------------------------------------------- GCP service account


def test_gcp_service_account_key_comes_under_the_same_lifetime_rules(gateway_factory):
    account = ServiceAccount()
    google = GoogleTokenFake(account, expires_in=LIFETIME)
    vertex = VertexFake(google, project=account.project_id, region="us-east5")
    from test_vertex import gcp_policy_yaml
    try:
        gw = gateway_factory(
            backend_yaml("vertex", "GCPVertexAI", vertex.port),
            gcp_policy_yaml("gcp", ["vertex"], account.key_file(google.token_uri), account.project_id, "us-east5"),
            route_yaml("route", [("gemini", [("vertex", 0, "gemini-2.5-flash")])]),
            env=TRACE)
        seen = rotation_scenario(gw, google, vertex, "vertex.default", "default/gcp", "GCPCredentials", model="gemini",
                          messages_too=False)
        assert_no_secrets(gw.read_log() + seen, google.issued + [a for a in google.assertions if a] + account.secret_fragments())
    finally:
        vertex.stop()
        google.stop()


# --------------------------------------------------------------------------- GCP federation

PROJECT = "vertex-e2e-project"
AUDIENCE = ("//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/gateway-pool"
            "/providers/gateway-idp")


def wif_config(vertex, oidc, impersonation=False):
    spec = f"""gcpCredentials:
  projectName: {PROJECT}
  region: us-east5
  workloadIdentityFederationConfig:
    projectID: "123456789012"
    workloadIdentityPoolName: gateway-pool
    workloadIdentityProviderName: gateway-idp
{_indent(oidc_exchange_yaml(oidc), 4)}"""
    if impersonation:
        spec += "\n    serviceAccountImpersonation:\n      serviceAccountName: vertex-gateway"
    return [
        backend_yaml("vertex", "GCPVertexAI", vertex.port),
        policy_yaml("gcp", "vertex", "GCPCredentials", spec, {"oidc-client": {"client-secret": oidc.client_secret}}),
        route_yaml("route", [("gemini", [("vertex", 0, "gemini-2.5-flash")])]),
    ]


def test_gcp_workload_identity_federation(gateway_factory):
    oidc = OidcProviderFake(expires_in=60)
    sts = GoogleStsFake(AUDIENCE, oidc.valid, expires_in=LIFETIME)
    vertex = VertexFake(sts, project=PROJECT, region="us-east5")
    try:
        gw = gateway_factory(*wif_config(vertex, oidc), env={**TRACE, "CLOUDSDK_API_ENDPOINT_OVERRIDES_STS": sts.base + "/"})
        seen = rotation_scenario(gw, sts, vertex, "vertex.default", "default/gcp", "GCPCredentials", model="gemini",
                          messages_too=False)
        assert_no_secrets(gw.read_log() + seen, sts.secrets() + oidc.secrets())
    finally:
        for fake in (vertex, sts, oidc):
            fake.stop()


def test_gcp_workload_identity_federation_impersonating_a_service_account(gateway_factory):
    oidc = OidcProviderFake(expires_in=60)
    sts = GoogleStsFake(AUDIENCE, oidc.valid, expires_in=60)
    iam = IamCredentialsFake(f"vertex-gateway@{PROJECT}.iam.gserviceaccount.com", sts.valid, expires_in=LIFETIME)
    vertex = VertexFake(iam, project=PROJECT, region="us-east5")
    try:
        gw = gateway_factory(*wif_config(vertex, oidc, impersonation=True),
                             env={**TRACE, "CLOUDSDK_API_ENDPOINT_OVERRIDES_STS": sts.base,
                                  "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS": iam.base + "/"})
        seen = rotation_scenario(gw, iam, vertex, "vertex.default", "default/gcp", "GCPCredentials", model="gemini",
                          messages_too=False)
        assert {r["headers"]["authorization"][7:] for r in vertex.requests} <= set(iam.issued)
        assert_no_secrets(gw.read_log() + seen, iam.secrets() + sts.secrets() + oidc.secrets())
    finally:
        for fake in (vertex, iam, sts, oidc):
            fake.stop()


# --------------------------------------------------------------------------- AWS

ROLE_ARN = "arn:aws:iam::123456789012:role/bedrock-gateway"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
# The host's own AWS settings must not pick the chain's link.
NO_AWS_ENV = {name: "" for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                                     "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS")}


@pytest.fixture
def bedrock():
    fake = BedrockFake(region="us-east-1")
    yield fake
    fake.stop()


def bedrock_config(fake, aws_spec, secrets=None):
    return [
        backend_yaml("bedrock", "AWSBedrock", fake.port),
        policy_yaml("aws", "bedrock", "AWSCredentials", "awsCredentials:\n  region: us-east-1\n" + _indent(aws_spec, 2),
                    secrets),
        route_yaml("route", [(MODEL, [("bedrock", 0, CLAUDE)])]),
    ]


def test_aws_oidc_token_assumes_the_role_and_signs_with_the_session_token(gateway_factory, bedrock):
    oidc = OidcProviderFake(expires_in=60)
    sts = StsFake(ROLE_ARN, oidc.valid, expires_in=LIFETIME)
    bedrock.sts = sts
    try:
        spec = oidc_exchange_yaml(oidc, role_arn=ROLE_ARN)
        gw = gateway_factory(*bedrock_config(bedrock, spec, {"oidc-client": {"client-secret": oidc.client_secret}}),
                             env={**TRACE, **NO_AWS_ENV, "AWS_ENDPOINT_URL_STS": sts.base})
        seen = rotation_scenario(gw, sts, bedrock, "bedrock.default", "default/aws", "AWSCredentials")
        assert {r["headers"]["x-amz-security-token"] for r in bedrock.requests} <= {c.token for c, _ in sts.keys.values()}
        assert len({r["headers"]["authorization"].split("/")[0] for r in bedrock.requests}) >= 3, "rotated keys"
        assert_no_secrets(gw.read_log() + seen, sts.secrets() + oidc.secrets())
    finally:
        sts.stop()
        oidc.stop()


def test_aws_irsa_web_identity_token_file(gateway_factory, bedrock, tmp_path):
    # As EKS sets up IRSA: a projected token file and the role in the environment.
    token_file = tmp_path / "eks-token"
    token_file.write_text("eks-projected-sa-token-" + "z" * 40)
    sts = StsFake(ROLE_ARN, lambda t: t == token_file.read_text(), expires_in=LIFETIME)
    bedrock.sts = sts
    try:
        gw = gateway_factory(*bedrock_config(bedrock, ""),
                             env={**TRACE, **NO_AWS_ENV, "AWS_ENDPOINT_URL": sts.base,
                                  "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file), "AWS_ROLE_ARN": ROLE_ARN})
        seen = rotation_scenario(gw, sts, bedrock, "bedrock.default", "default/aws", "AWSCredentials")
        assert_no_secrets(gw.read_log() + seen, sts.secrets() + ["eks-projected-sa-token-"])
    finally:
        sts.stop()


def test_aws_credentials_file_with_a_session_token_is_reloaded_when_the_secret_changes(gateway_factory, tmp_path):
    before = BedrockFake(access_key="ASIAFILEBEFORE", secret_key="file-secret-before", session_token="file-session-before")
    try:
        def config(access, secret, token):
            text = f"[default]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\naws_session_token = {token}\n"
            return bedrock_config(before, "credentialsFile:\n  secretRef:\n    name: aws-file", {"aws-file": {"credentials": text}})
        gw = gateway_factory(*config("ASIAFILEBEFORE", "file-secret-before", "file-session-before"))
        assert chat(gw).status_code == 200
        assert before.last()["headers"]["x-amz-security-token"] == "file-session-before"
        # The Secret is rewritten with new temporary keys; the old ones stop working.
        before.credentials = type(before.credentials)("ASIAFILEAFTER", "file-secret-after", "file-session-after")
        write_config(tmp_path, *config("ASIAFILEAFTER", "file-secret-after", "file-session-after"))
        deadline = time.time() + 5
        while chat(gw).status_code != 200:
            assert time.time() < deadline, "the new keys were not picked up"
            time.sleep(0.1)
        assert before.last()["headers"]["x-amz-security-token"] == "file-session-after"
    finally:
        before.stop()
