"""A credential only ever reaches its own provider, whatever the client sends."""

import httpx

from harness import backend_yaml, route_yaml


def test_client_cannot_steer_a_credential_to_another_provider(gateway_factory, openai_fake, azure_fake):
    tiered = """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: tiers, namespace: default}
spec:
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: m}, {name: x-tier, value: gold}]}]
      backendRefs: [{name: azure}]
    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]
      backendRefs: [{name: openai}]
    - matches: [{headers: [{name: x-ai-eg-model, value: solo}]}]
      backendRefs: [{name: openai}]
"""
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        backend_yaml("azure", "AzureOpenAI", azure_fake.port, policy="AzureAPIKey", key="azure-secret-key",
                     version="2025-01-01-preview"),
        tiered,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    cases = [
        [("x-tier", "gold")],
        [("x-tier", "silver")],
        [("x-tier", "gold"), ("x-tier", "x")],  # Envoy joins repeated values: "gold,x"
        [("x-tier", "gold"), ("x-llm-extproc-backend", "openai.default")],
    ]
    for headers in cases:
        r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=10)
        assert r.status_code == 200, (headers, r.text)
    # Each provider only ever saw its own credential (the fakes refuse anything else).
    assert openai_fake.rejected == [] and azure_fake.rejected == []
    # (Which rule repeated values select is Envoy's business; both were used.)
    assert len(azure_fake.requests) >= 1 and len(openai_fake.requests) >= 1
    assert len(azure_fake.requests) + len(openai_fake.requests) == len(cases)

    # A single-backend rule the model alone decides: the client's binding header is ignored.
    r = httpx.post(gw.url + "/v1/chat/completions", json={**body, "model": "solo"},
                   headers={"x-llm-extproc-backend": "azure.default"}, timeout=10)
    assert r.status_code == 200, r.text
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-openai-secret"
    assert openai_fake.rejected == [] and azure_fake.rejected == []


def _h2_headers_then_trailers(port, headers):
    """An HTTP/2 request with headers and trailers but no data: Envoy skips the body phase."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", "/v1/chat/completions"), (":scheme", "http"),
                          (":authority", "localhost"), *headers], end_stream=False)
    conn.send_headers(1, [("x-trailer", "1")], end_stream=True)
    sock.sendall(conn.data_to_send())
    status, body = None, b""
    while True:
        data = sock.recv(65535)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[b":status"].decode()
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(len(event.data), event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                sock.close()
                return status, body
        sock.sendall(conn.data_to_send())
    return status, body


def test_a_request_without_a_body_phase_cannot_route_itself(gateway_factory, openai_fake):
    gw = gateway_factory(
        backend_yaml("openai", "OpenAI", openai_fake.port, policy="APIKey", key="sk-openai-secret"),
        route_yaml("route", [("m", [("openai", 0, None)])]),
    )
    status, body = _h2_headers_then_trailers(gw.port, [
        ("content-type", "application/json"), ("x-ai-eg-model", "m"),
        ("x-llm-extproc-backend", "openai.default"), ("authorization", "Bearer sk-client")])
    assert status is not None and status != "200", body
    assert openai_fake.requests == [] and openai_fake.rejected == []


def test_dot_segment_models_never_become_a_path(gateway_factory, azure_fake, bedrock_fake):
    """`.` and `..` as a model would move an Azure deployment path or a signed Bedrock path."""
    from harness import aws_credentials_file

    any_model = """apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: any, namespace: default}
spec:
  rules:
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: "a.*"}]}]
      backendRefs: [{name: azure}]
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: ".*"}]}]
      backendRefs: [{name: bedrock}]
"""
    gw = gateway_factory(
        backend_yaml("azure", "AzureOpenAI", azure_fake.port, policy="AzureAPIKey", key="azure-secret-key",
                     version="2025-01-01-preview"),
        backend_yaml("bedrock", "AWSBedrock", bedrock_fake.port, policy="AWSCredentials", key=aws_credentials_file()),
        any_model,
    )
    for model in [".", "..", "a/../..", "a/%2e%2e"]:
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=10,
                       json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        if model in (".", ".."):
            assert r.status_code == 400, (model, r.text)
            assert "is not a model name" in r.json()["error"]["message"]
        else:
            assert r.status_code == 200, (model, r.text)
    # Any other model stays one encoded segment of the deployment path.
    assert [seen["path"] for seen in azure_fake.requests] == [
        "/openai/deployments/a%2F..%2F../chat/completions?api-version=2025-01-01-preview",
        "/openai/deployments/a%2F%252e%252e/chat/completions?api-version=2025-01-01-preview",
    ]
    for fake in (azure_fake, bedrock_fake):
        for seen in fake.requests:
            segments = seen["path"].split("?")[0].split("/")
            assert "." not in segments and ".." not in segments, seen["path"]
