"""Strict, offline validation of Kubernetes manifests: what a cluster would refuse fails here.

Custom resources are checked against the CRDs in e2e/crds (a copy of ../shared/crds) (Envoy Gateway, Gateway API,
Envoy AI Gateway, Prometheus Operator), core kinds against the Kubernetes schemas that the
`kubernetes-validate` package bundles, both with unknown fields refused (as `kubectl apply`
with the API server's strict field validation refuses them). Kustomize directories are built
with `kubectl kustomize` first; a ConfigMap whose `*.yaml` data holds manifests (the sidecar's
AI resources) has those checked too.

A CRD's openAPIV3Schema becomes a JSON Schema by the API server's rules for structural
schemas: an object that lists `properties` refuses others unless it says
`x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string` takes an integer or a
string, `nullable` admits null, an embedded resource keeps apiVersion/kind/metadata, and
`metadata` is the strict core ObjectMeta. As in the API server, the schema's defaults are
applied first, and then its CEL rules (`x-kubernetes-validations`) are evaluated (with
cel-python, plus the few Kubernetes CEL library functions the CRDs use); transition rules
(`oldSelf`) concern updates and are skipped. Not checked: string formats and list-map key
uniqueness.

    python k8s_manifests.py PATH...   (files, directories, kustomize directories)
"""

import copy
import functools
import os
import pathlib
import shutil
import subprocess
import sys

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRD_DIR = pathlib.Path(os.environ.get("LLM_EXTPROC_CRDS", ROOT / "e2e" / "crds"))
# The core schemas' version: the newest that kubernetes-validate bundles.
KUBERNETES_VERSION = kv.latest_version()
DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = {"$ref": DEFINITIONS + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(Exception):
    pass


# ---- CRD schemas -----------------------------------------------------------------------

def strict_schema(node, in_combinator=False):
    """A CRD schema node as a JSON Schema that refuses unknown fields.

    Nodes under allOf/anyOf/oneOf/not are constraints on the node that holds them (in a
    structural schema they only repeat or restrict its properties): they get no
    additionalProperties of their own, which would refuse the holder's other fields."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_schema(sub, in_combinator=True) for sub in value]
        elif key == "not":
            out[key] = strict_schema(value, in_combinator=True)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "format", "description", "example"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-embedded-resource") and "properties" in out:
        out["properties"].setdefault("apiVersion", {"type": "string"})
        out["properties"].setdefault("kind", {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    if (not in_combinator and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def resource_schema(openapi, api_version, kind):
    """The schema of a whole custom resource: its own openAPIV3Schema, with the top level
    closed, apiVersion and kind fixed, and metadata the core ObjectMeta."""
    schema = strict_schema(copy.deepcopy(openapi))
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": kind}
    props["metadata"] = OBJECT_META
    schema["additionalProperties"] = False
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return schema


@functools.lru_cache(maxsize=None)
def crd_schemas(crd_dir=CRD_DIR):
    """(apiVersion, kind) -> JSON Schema, for every served version of every CRD in crd_dir."""
    if not crd_dir.is_dir():
        raise ManifestError(f"no CRD directory at {crd_dir} (set LLM_EXTPROC_CRDS)")
    schemas = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=Loader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                api_version = f"{group}/{version['name']}"
                openapi = version.get("schema", {}).get("openAPIV3Schema", {"type": "object"})
                schemas[(api_version, kind)] = (openapi, path.name)
    return schemas


# ---- CEL rules (x-kubernetes-validations) ---------------------------------------------

def _cel_functions():
    """The Kubernetes CEL library functions the CRDs' rules use beyond standard CEL."""
    from celpy import celtypes

    def split(s, sep, limit=None):
        parts = str(s).split(str(sep)) if limit is None else str(s).split(str(sep), int(limit) - 1)
        return celtypes.ListType([celtypes.StringType(p) for p in parts])

    def substring(s, start, end=None):
        return celtypes.StringType(str(s)[int(start):None if end is None else int(end)])

    def is_ip(s):
        import ipaddress
        try:
            ipaddress.ip_address(str(s))
            return celtypes.BoolType(True)
        except ValueError:
            return celtypes.BoolType(False)

    return {
        "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
        "upperAscii": lambda s: celtypes.StringType(str(s).upper()),
        "trim": lambda s: celtypes.StringType(str(s).strip()),
        "split": split,
        "substring": substring,
        "isIP": is_ip,
    }


@functools.lru_cache(maxsize=None)
def _cel_program(rule):
    import celpy
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=_cel_functions())


def _cel_holds(rule, value):
    """Whether a rule holds for `self` = value; an evaluation error (a field read that the
    rule did not guard with has(), say) fails, as it does in the API server."""
    import celpy
    try:
        result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except Exception as e:  # celpy raises its own and Python errors alike
        return False, f"evaluation error: {e}"
    if isinstance(result, Exception):
        return False, f"evaluation error: {result}"
    return bool(result), None


def with_defaults(schema, value):
    """`value` as the API server stores it before validating: a null in a field that is
    not nullable is dropped, and a missing field with a default gets it."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for name, sub_value in value.items():
            sub = props.get(name, extra if isinstance(extra, dict) else None)
            if sub_value is None and isinstance(sub, dict) and not sub.get("nullable"):
                continue
            out[name] = with_defaults(sub, sub_value)
        for name, sub in props.items():
            if name not in out and "default" in sub:
                out[name] = with_defaults(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(schema["items"], item) for item in value]
    return value


def cel_problems(openapi, doc):
    """The CRD's CEL rules that `doc` (with its defaults) breaks. Transition rules
    (oldSelf) do not apply to a create and are skipped."""
    found = []
    _cel_walk(openapi, doc, [], found)
    return found


def _cel_walk(schema, value, path, found):
    if value is None or not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            if name in value:
                _cel_walk(sub, value[name], path + [name], found)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, sub_value in value.items():
                if name not in props:
                    _cel_walk(extra, sub_value, path + [name], found)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _cel_walk(schema["items"], item, path + [i], found)
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"]:
            continue
        holds, error = _cel_holds(rule["rule"], value)
        if not holds:
            where = ".".join(map(str, path)) or "<root>"
            found.append(f"{where}: {rule.get('message') or 'failed rule: ' + rule['rule']}"
                         + (f" ({error})" if error else ""))


# ---- validation ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _registry():
    version = f"v{KUBERNETES_VERSION}-local-strict"
    defs = kv.schema_contents(f"kubernetes-json-schema/{version}/_definitions.json", KUBERNETES_VERSION)
    return referencing.Resource.from_contents(defs) @ referencing.Registry()


@functools.lru_cache(maxsize=None)
def _core_schema(api_version, kind):
    # kubernetes-validate names its files <kind>-<group without domain>-<version>.json.
    group, _, version = api_version.rpartition("/")
    stem = f"{group.split('.')[0]}-{version}" if group else version
    name = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/{kind.lower()}-{stem}.json"
    try:
        return kv.schema_contents(name, KUBERNETES_VERSION)
    except FileNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def validator(api_version, kind):
    """The validator of one kind, or None when neither a CRD nor Kubernetes defines it."""
    crd = crd_schemas().get((api_version, kind))
    if crd is not None:
        schema = resource_schema(crd[0], api_version, kind)
    else:
        schema = _core_schema(api_version, kind)
        if schema is None:
            return None
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def problems(doc):
    """Why a cluster would refuse this manifest (an empty list when it would take it)."""
    if not isinstance(doc, dict):
        return ["not a mapping"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["no apiVersion or no kind"]
    check = validator(api_version, kind)
    if check is None:
        return [f"no schema for {kind} in {api_version}: a cluster would answer "
                f"'no matches for kind' (not a core kind, nor in {CRD_DIR})"]
    crd = crd_schemas().get((api_version, kind))
    if crd is not None:
        doc = with_defaults(crd[0], doc)
    errors = sorted(check.iter_errors(doc), key=lambda e: list(e.absolute_path))
    found = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
    if crd is not None and not found:
        # The rules assume a schema-valid object, as in the API server.
        found = cel_problems(crd[0], doc)
    return found


def embedded_manifests(doc):
    """The manifests a ConfigMap carries in its `*.yaml`/`*.yml` data (the sidecar's
    resources), with the key they came from."""
    if doc.get("apiVersion") != "v1" or doc.get("kind") != "ConfigMap":
        return []
    found = []
    for key, text in (doc.get("data") or {}).items():
        if key.endswith((".yaml", ".yml")) and isinstance(text, str):
            for inner in yaml.load_all(text, Loader=Loader):
                if isinstance(inner, dict) and ("apiVersion" in inner or "kind" in inner):
                    found.append((key, inner))
    return found


# ---- Envoy Gateway's own configuration ------------------------------------------------

# EnvoyGateway (the controller's configuration, no CRD): the top-level fields of v1.9's
# api/v1alpha1/envoygateway_types.go, closed where llm-extproc needs a setting, so that a
# misspelt flag fails here rather than leaving the Backend API or EnvoyPatchPolicy off.
_OPEN = {"type": "object"}
ENVOY_GATEWAY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "gateway.envoyproxy.io/v1alpha1"},
        "kind": {"const": "EnvoyGateway"},
        **{name: _OPEN for name in (
            "gateway", "logging", "admin", "telemetry", "xdsServer", "rateLimit", "extensionManager",
            "extensionManagers", "gatewayAPI", "envoyProxy")},
        # The RuntimeFlag enum of v1.9 (envoygateway_types.go): a misspelt flag does nothing.
        "runtimeFlags": {
            "type": "object",
            "additionalProperties": False,
            "properties": {state: {"type": "array", "items": {"enum": [
                "XDSNameSchemeV2", "EndpointSliceIndex", "PerResourceSystemCASecret"]}}
                for state in ("enabled", "disabled")},
        },
        "provider": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["Kubernetes", "Custom"]},
                "custom": _OPEN,
                "kubernetes": {
                    "type": "object",
                    "properties": {
                        "deploy": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"type": {"enum": ["ControllerNamespace", "GatewayNamespace"]}},
                        },
                    },
                },
            },
        },
        "extensionApis": {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: {"type": "boolean"} for name in (
                "enableEnvoyPatchPolicy", "enableBackend", "disableLua", "enableLua", "enableSDSSecretRef")},
        },
    },
}


def envoy_gateway_values(doc):
    """The EnvoyGateway configuration in Envoy Gateway's Helm values (`config.envoyGateway`)."""
    config = doc.get("config") if isinstance(doc, dict) else None
    return config.get("envoyGateway") if isinstance(config, dict) else None


def envoy_gateway_problems(config):
    check = jsonschema.Draft202012Validator(ENVOY_GATEWAY_SCHEMA)
    return [f"config.envoyGateway.{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in sorted(check.iter_errors(config), key=lambda e: list(e.absolute_path))]


# ---- where manifests come from --------------------------------------------------------

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def kubectl():
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not path:
        raise ManifestError("kubectl not found (scripts/setup.sh installs Debian's kubernetes-client)")
    return path


def kustomize_build(directory):
    """`kubectl kustomize DIR`: what `kubectl apply -k DIR` would send."""
    run = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise ManifestError(f"kubectl kustomize {directory} failed:\n{run.stderr.strip()}")
    return run.stdout


def is_kustomization_dir(path):
    return any((path / name).is_file() for name in KUSTOMIZATION_FILES)


def is_manifest(doc):
    """A document with neither apiVersion nor kind (a Helm values file, say) is not a
    manifest; with only one of them it is a broken one, to be refused."""
    return isinstance(doc, dict) and ("apiVersion" in doc or "kind" in doc)


def documents(text):
    return [d for d in yaml.load_all(text, Loader=Loader) if d is not None]


def sources(paths):
    """(label, documents) for every manifest file under `paths` and for the build of every
    kustomize directory there."""
    out = []
    for path in map(pathlib.Path, paths):
        if path.is_file() and path.name in KUSTOMIZATION_FILES:
            files, builds = [], [path.parent]
        elif path.is_file():
            files, builds = [path], []
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")
                           and p.name not in KUSTOMIZATION_FILES and p.is_file())
            builds = sorted(d for d in [path, *path.rglob("*")] if d.is_dir() and is_kustomization_dir(d))
        else:
            raise ManifestError(f"{path}: no such file or directory")
        for f in files:
            out.append((str(f), documents(f.read_text())))
        for d in builds:
            out.append((f"kubectl kustomize {d}", documents(kustomize_build(d))))
    return out


def validate(paths):
    """Every problem in the manifests under `paths` (and in Envoy Gateway Helm values
    there), as 'where: kind/name: problem' lines, and the number of documents checked."""
    report, checked = [], 0
    for label, docs in sources(paths):
        for doc in docs:
            if not is_manifest(doc):
                config = envoy_gateway_values(doc)
                if config is not None:
                    checked += 1
                    report += [f"{label}: Envoy Gateway values: {p}" for p in envoy_gateway_problems(config)]
                continue
            items = [(label, doc)] + [(f"{label} (ConfigMap {doc['metadata'].get('name')} {key})", inner)
                                      for key, inner in embedded_manifests(doc)]
            for where, item in items:
                checked += 1
                name = f"{item.get('kind')}/{(item.get('metadata') or {}).get('name')}"
                report += [f"{where}: {name}: {p}" for p in problems(item)]
    return report, checked


def main(argv):
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    try:
        report, checked = validate(argv)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in report:
        print(line)
    print(f"{checked} manifests checked, {len(report)} problems")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
