"""Starting the real gateway (`llm-extproc run`: the sidecar plus a real Envoy) for tests,
and writing configurations in the Envoy AI Gateway resource format."""

import os
import pathlib
import signal
import subprocess
import tempfile
import time

import httpx

from fakes import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(os.environ.get("LLM_EXTPROC_BIN", ROOT / "target" / "debug" / "llm-extproc"))


def metric_sum(admin_url, name, **labels):
    """Sum of a Prometheus sample's values on the sidecar's /metrics over the series
    matching `labels`."""
    text = httpx.get(admin_url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


class Gateway:
    """`llm-extproc run` on free ports, with its log in a file."""

    def __init__(self, config_paths, extra_args=(), env=None):
        self.config_paths = [str(p) for p in config_paths]
        self.port = free_port()
        self.admin_port = free_port()
        self.run_dir = tempfile.mkdtemp(prefix="llm-gw-")
        self.log_path = pathlib.Path(self.run_dir) / "gateway.log"
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self):
        # Envoy's admin is a unix socket in the run directory (run's default).
        args = [str(BIN), "run", "--port", str(self.port), "--admin-port", str(self.admin_port),
                "--run-dir", self.run_dir]
        for p in self.config_paths:
            args += ["--config", p]
        return args + self.extra_args

    def start(self, timeout=30, attempts=3):
        """Starts the gateway. A port that `free_port` handed out can be taken by another
        process before Envoy binds it: then it is retried on fresh ports."""
        for attempt in range(attempts):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                text = str(e)
                if attempt + 1 == attempts or not ("already in use" in text or "cannot bind" in text):
                    raise
                self.stop()
                self.port, self.admin_port = free_port(), free_port()

    def _start(self, timeout):
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        if self.env:
            env.update(self.env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                # Ready when Envoy routes to the sidecar (the sidecar answers /v1/models).
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway not ready after {timeout}s:\n{self.read_log()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def read_log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def chat(self, model, content="Hello!", headers=None, **extra):
        body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        return httpx.post(self.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)

    def metric(self, name, **labels):
        return metric_sum(self.admin, name, **labels)

    def envoy_stats(self, prefix=""):
        """Envoy's counters whose names start with `prefix` (over `run`'s admin socket)."""
        transport = httpx.HTTPTransport(uds=str(pathlib.Path(self.run_dir) / "envoy-admin.sock"))
        with httpx.Client(transport=transport) as client:
            text = client.get("http://envoy/stats", params={"usedonly": "", "filter": f"^{prefix}"}).text
        stats = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.isdigit():
                stats[name] = int(value)
        return stats

    def in_flight(self):
        return self.metric("llm_extproc_requests_in_flight")

    def wait_in_flight_zero(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.in_flight() == 0:
                return True
            time.sleep(0.05)
        return False


def _indent(text, spaces):
    return "\n".join(" " * spaces + line for line in text.splitlines())


def aws_credentials_file(access_key="AKIDEXAMPLE", secret_key="bedrock-secret-key"):
    return f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"


def backend_yaml(name, schema, port, policy=None, host="127.0.0.1", version=None, secret_key="apiKey", key="sk-provider-key"):
    """A provider as the guide writes it: Backend, AIServiceBackend, BackendSecurityPolicy, Secret."""
    endpoint = f"ip:\n        address: {host}\n        port: {port}" if host[0].isdigit() else \
        f"fqdn:\n        hostname: {host}\n        port: {port}"
    schema_yaml = f"name: {schema}" + (f"\n    version: {version}" if version else "")
    docs = [f"""apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: {name}
  namespace: default
spec:
  endpoints:
    - {endpoint}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata:
  name: {name}
  namespace: default
spec:
  schema:
    {schema_yaml}
  backendRef:
    name: {name}
    kind: Backend
    group: gateway.envoyproxy.io"""]
    if policy:
        field = {"APIKey": "apiKey", "AzureAPIKey": "azureAPIKey", "AnthropicAPIKey": "anthropicAPIKey"}.get(policy)
        if field:
            spec, entry = f"  {field}:\n    secretRef:\n      name: {name}-key\n      namespace: default", secret_key
        elif policy == "AzureCredentials":
            spec, entry = ("  azureCredentials:\n    clientID: client-id\n    tenantID: tenant-id\n"
                           f"    clientSecretRef:\n      name: {name}-key"), "client-secret"
        else:
            spec, entry = ("  awsCredentials:\n    region: us-east-1\n    credentialsFile:\n      secretRef:\n        name: "
                           + name + "-key"), "credentials"
        docs.append(f"""apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata:
  name: {name}-policy
  namespace: default
spec:
  targetRefs:
    - group: aigateway.envoyproxy.io
      kind: AIServiceBackend
      name: {name}
  type: {policy}
{spec}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-key
  namespace: default
type: Opaque
stringData:
  {entry}: |-
{_indent(key, 4)}""")
    return "\n---\n".join(docs)


def route_yaml(name, rules, costs=True):
    """An AIGatewayRoute. `rules` is a list of (model, [(backend, priority, override)], timeout)."""
    out = [f"""apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata:
  name: {name}
  namespace: default
spec:
  parentRefs:
    - name: envoy-ai-gateway-basic
      kind: Gateway
      group: gateway.networking.k8s.io"""]
    if costs:
        out.append("""  llmRequestCosts:
    - metadataKey: llm_input_token
      type: InputToken
    - metadataKey: llm_output_token
      type: OutputToken
    - metadataKey: llm_total_token
      type: TotalToken""")
    out.append("  rules:")
    for rule in rules:
        model, refs = rule[0], rule[1]
        timeout = rule[2] if len(rule) > 2 else None
        out.append(f"""    - matches:
        - headers:
            - type: Exact
              name: x-ai-eg-model
              value: {model}
      backendRefs:""")
        for backend, priority, override in refs:
            line = f"        - name: {backend}\n          priority: {priority}"
            if override:
                line += f"\n          modelNameOverride: {override}"
            out.append(line)
        if timeout:
            out.append(f"      timeouts:\n        request: {timeout}")
    return "\n".join(out)


def write_config(directory, *docs):
    path = pathlib.Path(directory) / "config.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n---\n".join(docs) + "\n")
    tmp.rename(path)
    return path
