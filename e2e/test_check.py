"""`llm-extproc check` explains what is wrong, and `run` refuses the same configuration."""

import subprocess

import pytest

from harness import BIN, Gateway, backend_yaml, route_yaml, write_config


def check(path):
    return subprocess.run([str(BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=30)


def test_valid_guide_example_passes():
    from harness import ROOT
    r = check(ROOT / "examples" / "openai.yaml")
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_secret_keyed_key_instead_of_apikey(tmp_path):
    path = write_config(tmp_path,
                        backend_yaml("openai", "OpenAI", 9, policy="APIKey", secret_key="key"),
                        route_yaml("r", [("m", [("openai", 0, None)])]))
    r = check(path)
    assert r.returncode == 1
    # Names the Secret, the key it needs, the key it has, and the policy that needs it.
    assert "Secret `default/openai-key`" in r.stderr
    assert "no `apiKey` key" in r.stderr and "only `key`" in r.stderr
    assert "openai-policy" in r.stderr
    assert "spec.apiKey.secretRef" in r.stderr
    # `run` refuses it with the same message, before starting anything.
    gw = Gateway([path])
    with pytest.raises(RuntimeError) as e:
        gw.start(timeout=20)
    assert "no `apiKey` key" in str(e.value)


def test_dangling_reference(tmp_path):
    path = write_config(tmp_path,
                        backend_yaml("openai", "OpenAI", 9, policy="APIKey"),
                        route_yaml("r", [("m", [("opneai", 0, None)])]))
    r = check(path)
    assert r.returncode == 1
    assert "spec.rules[0].backendRefs[0].name" in r.stderr
    assert "AIServiceBackend `default/opneai` does not exist" in r.stderr
    assert "did you mean `openai`?" in r.stderr


def test_unknown_schema_and_auth_type(tmp_path):
    docs = backend_yaml("openai", "OpenAl", 9, policy="APIKey").replace("type: APIKey", "type: ApiKeys")
    path = write_config(tmp_path, docs, route_yaml("r", [("m", [("openai", 0, None)])]))
    r = check(path)
    assert r.returncode == 1
    assert "unknown schema `OpenAl`" in r.stderr and "did you mean `OpenAI`?" in r.stderr
    assert "unknown type `ApiKeys`" in r.stderr and "did you mean `APIKey`?" in r.stderr


def test_misspelt_field_gets_did_you_mean(tmp_path):
    route = route_yaml("r", [("m", [("openai", 0, None)])]).replace("backendRefs:", "backendRef:")
    path = write_config(tmp_path, backend_yaml("openai", "OpenAI", 9, policy="APIKey"), route)
    r = check(path)
    assert r.returncode == 1
    assert "spec.rules[0].backendRef: unknown field `backendRef`" in r.stderr
    assert "did you mean `backendRefs`?" in r.stderr


def test_credential_override_is_refused_not_ignored(tmp_path):
    """Ignoring it would send the configured key where the operator asked for the caller's."""
    policy = backend_yaml("openai", "OpenAI", 9, policy="APIKey").replace(
        "  type: APIKey\n",
        "  type: APIKey\n  credentialOverride:\n    fromRequestHeaders:\n      fallbackToConfigured: false\n")
    path = write_config(tmp_path, policy, route_yaml("r", [("m", [("openai", 0, None)])]))
    r = check(path)
    assert r.returncode == 1, r.stdout
    assert "spec.credentialOverride" in r.stderr and "not supported" in r.stderr
    assert "openai-policy" in r.stderr


def test_empty_file_is_not_a_valid_configuration(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("")
    r = check(path)
    assert r.returncode == 1, r.stdout
    assert "valid" not in r.stdout
    assert "no AIGatewayRoute with rules" in r.stderr and str(path) in r.stderr
    # `run` refuses it the same way, before starting anything.
    with pytest.raises(RuntimeError) as e:
        Gateway([path]).start(timeout=20)
    assert "no AIGatewayRoute with rules" in str(e.value)


def test_backends_without_a_route_are_not_a_valid_configuration(tmp_path):
    path = write_config(tmp_path, backend_yaml("openai", "OpenAI", 9, policy="APIKey"))
    r = check(path)
    assert r.returncode == 1
    assert "no AIGatewayRoute with rules" in r.stderr and str(path) in r.stderr


@pytest.mark.parametrize("field,yaml", [
    ("spec.tls.caCertificateRefs", "  tls:\n    caCertificateRefs: [{name: my-ca, kind: ConfigMap}]\n"),
    ("spec.tls.clientCertificateRef", "  tls:\n    clientCertificateRef: {name: my-cert}\n"),
    ("spec.fallback", "  fallback: true\n"),
])
def test_backend_fields_the_gateway_cannot_honour_are_named(tmp_path, field, yaml):
    """Accepting them would quietly verify against another CA, send no client
    certificate or never fall back: each is refused by name instead."""
    backend = backend_yaml("openai", "OpenAI", 443, policy="APIKey", host="api.openai.com").replace(
        "spec:\n  endpoints:", "spec:\n" + yaml + "  endpoints:", 1)
    path = write_config(tmp_path, backend, route_yaml("r", [("m", [("openai", 0, None)])]))
    r = check(path)
    assert r.returncode == 1, r.stdout
    assert field in r.stderr and "not supported" in r.stderr


def test_check_names_the_fields_it_accepts_but_does_not_act_on(tmp_path):
    route = route_yaml("r", [("m", [("openai", 0, None)])]).replace(
        "  parentRefs:", "  filterConfig: {type: ExternalProcessor}\n  parentRefs:")
    path = write_config(tmp_path, backend_yaml("openai", "OpenAI", 9, policy="APIKey"), route)
    r = check(path)
    assert r.returncode == 0, r.stderr
    assert "AIGatewayRoute default/r: spec.parentRefs: is read but not enforced" in r.stdout
    assert "spec.filterConfig: is read but not enforced" in r.stdout
