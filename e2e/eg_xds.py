"""A simulator of Envoy Gateway v1.9's translation, for the resources `render gateway` emits.

Envoy Gateway turns Gateway API and Envoy Gateway resources into xDS, in two steps:
`internal/gatewayapi` (resources to its IR) and `internal/xds/translator` (IR to xDS). This
module does both for the subset llm-extproc needs, and no more: Gateway (HTTP listeners),
HTTPRoute (header, path and query matches; RequestHeaderModifier, URLRewrite and
HTTPRouteFilter filters; timeouts), Backend (fqdn, ip and unix endpoints, fallback),
BackendTLSPolicy (system CAs), EnvoyExtensionPolicy (extProc), BackendTrafficPolicy (retry,
timeouts, circuit breaker, buffer limit), ClientTrafficPolicy (buffer limit) and
EnvoyPatchPolicy (JSONPatch). Whatever else a document says raises `NotSimulated`, naming
the field: nothing is accepted and silently ignored.

Resources are held as Envoy Gateway holds them while it patches: protobuf JSON with proto
field names (`protojson.MarshalOptions{UseProtoNames: true}`, jsonpatch.go), so a default
value (false, 0, "", an empty list) is absent, a uint64 is a string, and a Duration reads
"10s". Every shape below names the Envoy Gateway v1.9.0 file it was read from:
`xds-ir/<case>` is internal/xds/translator/testdata/out/xds-ir/<case>, `gatewayapi/<case>`
is internal/gatewayapi/testdata/<case>.

What is simulated rather than Envoy Gateway itself: the translation (read from its source
and golden files, not run), and the delivery. Envoy Gateway serves these resources over ADS;
`bootstrap()` inlines them as static resources (EDS assignments into their clusters, RDS
into the HCM, SDS secrets as static secrets), binds the listener to the test's loopback port
and leaves out what the Envoy Gateway bootstrap adds around them (its xDS cluster, the ready
and stats listeners, the default access log).
"""

import base64
import copy
import json
import re

import jsonpatch
import jsonpointer
from jsonpath_ng.exceptions import JsonPathParserError
from jsonpath_ng.ext import parse as jsonpath_parse

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SYSTEM_CA_SECRET = "system_ca_certificates"  # globalresources.go
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"  # xds-ir/http-route-with-tls-system-truststore.secrets.yaml

# Kinds that never reach xDS (infrastructure, or what only the sidecar reads).
NOT_XDS_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "Role", "RoleBinding",
                 "ClusterRole", "ClusterRoleBinding", "PodMonitor", "ServiceMonitor", "PodDisruptionBudget",
                 "AIGatewayRoute", "AIServiceBackend", "BackendSecurityPolicy", "QuotaPolicy", "ReferenceGrant"}


class NotSimulated(Exception):
    """The documents use something this simulator does not translate."""


class Rejected(Exception):
    """Envoy Gateway would refuse this: a condition False on the resource, or no xDS at all."""


class PatchNotProgrammed(Exception):
    """An EnvoyPatchPolicy is not Programmed (Envoy Gateway then drops the failing patches)."""


# ---------------------------------------------------------------- small helpers

def _duration(text):
    """A Gateway API duration ("10s", "1m30s", "500ms") in seconds."""
    if not re.fullmatch(r"(\d+(\.\d+)?(h|ms|m|s))+", text or ""):
        raise Rejected(f"invalid duration {text!r}")
    total = 0.0
    for number, _, unit in re.findall(r"(\d+(\.\d+)?)(h|ms|m|s)", text):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def _pb_duration(seconds):
    """google.protobuf.Duration as protojson writes it: whole seconds, else 3/6/9 digits."""
    nanos = round(seconds * 1e9)
    whole, frac = divmod(nanos, 10**9)
    if frac == 0:
        return f"{whole}s"
    digits = f"{frac:09d}"
    for width in (3, 6, 9):
        if digits[width:].strip("0") == "":
            return f"{whole}.{digits[:width]}s"
    return f"{whole}.{digits}s"


def _quantity(value):
    """A Kubernetes quantity ("32Mi", "1G", 1024) in bytes."""
    text = str(value)
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", text)
    if not m:
        raise Rejected(f"invalid quantity {text!r}")
    factor = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
              "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}[m.group(2)]
    return int(m.group(1)) * factor


def _only(obj, allowed, where):
    """Raises NotSimulated for a field the simulator does not translate."""
    for key in (obj or {}):
        if key not in allowed:
            raise NotSimulated(f"{where}.{key}")


def _name(doc):
    return doc["metadata"]["name"]


def _ns(doc):
    return doc["metadata"].get("namespace", "default")


def _resource_metadata(kind, name, namespace, section=None):
    """metadata.go buildXdsMetadata: the `envoy-gateway` filter metadata naming the resource."""
    entry = {"kind": kind, "name": name, "namespace": namespace}
    if section:
        entry["sectionName"] = section
    return {"filter_metadata": {"envoy-gateway": {"resources": [entry]}}}


def _namespace_selected(selector, namespace):
    """A label selector over Namespaces, of which the simulator knows one label: the
    `kubernetes.io/metadata.name` that Kubernetes sets on every Namespace."""
    _only(selector, {"matchLabels", "matchExpressions"}, "allowedRoutes.namespaces.selector")
    labels = {"kubernetes.io/metadata.name": namespace}
    for key, value in (selector.get("matchLabels") or {}).items():
        if key not in labels:
            raise NotSimulated(f"namespace label {key}")
        if labels[key] != value:
            return False
    for e in selector.get("matchExpressions") or []:
        if e["key"] not in labels:
            raise NotSimulated(f"namespace label {e['key']}")
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": lambda: value in e.get("values", []), "NotIn": lambda: value not in e.get("values", []),
              "Exists": lambda: present, "DoesNotExist": lambda: not present}[e["operator"]]()
        if not ok:
            return False
    return True


def _targets(policy):
    spec = policy["spec"]
    if "targetSelectors" in spec:
        raise NotSimulated(f"{policy['kind']} {_name(policy)}: spec.targetSelectors")
    refs = list(spec.get("targetRefs") or [])
    if spec.get("targetRef"):
        refs.append(spec["targetRef"])
    return refs


# ---------------------------------------------------------------- the IR

class Setting:
    """ir.DestinationSetting: one backendRef of a rule (gatewayapi/route.go getOrCreateBackendCluster)."""

    def __init__(self, name, endpoints, address_type, weight=1, priority=0, metadata=None, tls=None,
                 protocol="HTTP", filters=None):
        self.name = name
        self.endpoints = endpoints  # [(host, port)] or [("unix", path)], each with an optional hostname
        self.address_type = address_type  # IP | FQDN | UDS | STATIC | MIXED
        self.weight = weight
        self.priority = priority
        self.metadata = metadata
        self.tls = tls  # {"sni": ..., "san": ...}
        self.protocol = protocol
        self.filters = filters  # per-backendRef request headers to add/remove


class Route:
    """ir.HTTPRoute: one match of one rule, for one hostname."""

    def __init__(self, name):
        self.name = name
        self.hostname = "*"
        self.path = ("prefix", "/")
        self.headers = []  # [(name, kind, value)]
        self.query = []
        self.destination = None  # (name, [Setting], metadata)
        self.direct_response = None
        self.add_request_headers = []
        self.remove_request_headers = []
        self.add_response_headers = []
        self.host_rewrite = None  # ("literal", host) | ("backend",) | ("header", name)
        self.append_x_forwarded_host = True  # with a host rewrite (HTTPRouteFilter appendXForwardedHost)
        self.timeout = None
        self.traffic = None  # the BackendTrafficPolicy's spec
        self.ext_procs = []
        self.metadata = None


# ---------------------------------------------------------------- translation

class Translation:
    """The xDS resources of one Gateway, as Envoy Gateway's translator leaves them."""

    def __init__(self, docs, enable_backend=True, enable_envoy_patch_policy=True):
        self.docs = [d for d in docs if d]
        self.enable_backend = enable_backend
        self.enable_envoy_patch_policy = enable_envoy_patch_policy
        self.listeners, self.route_configs, self.clusters, self.endpoints, self.secrets = [], [], [], [], []
        self.patch_statuses = {}
        self.by_kind = {}
        for d in self.docs:
            self.by_kind.setdefault(d["kind"], []).append(d)
        unknown = set(self.by_kind) - NOT_XDS_KINDS - {
            "Gateway", "GatewayClass", "HTTPRoute", "HTTPRouteFilter", "Backend", "BackendTLSPolicy",
            "EnvoyExtensionPolicy", "BackendTrafficPolicy", "ClientTrafficPolicy", "EnvoyPatchPolicy", "EnvoyProxy"}
        if unknown:
            raise NotSimulated(f"kinds {sorted(unknown)}")
        for proxy in self.by_kind.get("EnvoyProxy", []):
            # These shape the Deployment and the Envoy process, not xDS. mergeBackends renames
            # the clusters the patches address, hence refused unless false.
            spec = proxy.get("spec") or {}
            _only(spec, {"provider", "shutdown", "concurrency", "logging", "extraArgs", "mergeBackends"},
                  f"EnvoyProxy {_name(proxy)}.spec")
            if spec.get("mergeBackends"):
                raise NotSimulated(f"EnvoyProxy {_name(proxy)}.spec.mergeBackends (it renames the clusters)")
        self._translate()

    def _get(self, kind, name, namespace):
        for d in self.by_kind.get(kind, []):
            if _name(d) == name and _ns(d) == namespace:
                return d
        return None

    # ---------------------------------------------------------- gatewayapi: resources to IR

    def _translate(self):
        gateways = self.by_kind.get("Gateway", [])
        if len(gateways) != 1:
            raise NotSimulated(f"{len(gateways)} Gateways (the simulator translates one)")
        gw = self.gateway = gateways[0]
        _only(gw["spec"], {"gatewayClassName", "listeners", "infrastructure"}, "Gateway.spec")
        listeners = []
        for listener in gw["spec"]["listeners"]:
            _only(listener, {"name", "protocol", "port", "allowedRoutes"}, f"Gateway listener {listener['name']}")
            if listener["protocol"] != "HTTP":
                raise NotSimulated(f"listener protocol {listener['protocol']}")
            namespaces = (listener.get("allowedRoutes") or {}).get("namespaces") or {}
            _only(listener.get("allowedRoutes"), {"namespaces"}, f"Gateway listener {listener['name']}.allowedRoutes")
            _only(namespaces, {"from", "selector"}, f"Gateway listener {listener['name']}.allowedRoutes.namespaces")
            if namespaces.get("from", "Same") not in ("Same", "All", "Selector"):
                raise NotSimulated(f"allowedRoutes.namespaces.from {namespaces['from']}")
            listeners.append(listener)
        for listener in listeners:
            self._translate_listener(listener)
        self._process_patch_policies_ir()

    def _attached(self, route, listener):
        """The route's parentRefs name this Gateway (and listener), and the listener admits it."""
        namespaces = (listener.get("allowedRoutes") or {}).get("namespaces") or {}
        frm = namespaces.get("from", "Same")
        if frm == "Same" and _ns(route) != _ns(self.gateway):
            return False
        if frm == "Selector" and not _namespace_selected(namespaces.get("selector") or {}, _ns(route)):
            return False
        for ref in route["spec"].get("parentRefs", []):
            _only(ref, {"name", "namespace", "kind", "group", "sectionName"}, f"HTTPRoute {_name(route)} parentRef")
            if ref.get("kind", "Gateway") != "Gateway" or ref["name"] != _name(self.gateway):
                continue
            if ref.get("namespace", _ns(route)) != _ns(self.gateway):
                continue
            if ref.get("sectionName") in (None, listener["name"]):
                return True
        return False

    def _translate_listener(self, listener):
        gw = self.gateway
        # gatewayapi/listener.go: "<ns>/<gateway>/<listener>"; ports under 1024 shift by 10000.
        name = f"{_ns(gw)}/{_name(gw)}/{listener['name']}"
        port = listener["port"] + 10000 if listener["port"] < 1024 else listener["port"]
        routes = []
        for route in self.by_kind.get("HTTPRoute", []):
            if self._attached(route, listener):
                routes.extend(self._translate_route(route))
        # gatewayapi/sort.go: descending by path kind (Exact > RegularExpression > PathPrefix),
        # path length, header matches, exact header matches, query matches; stable.
        rank = {"prefix": 0, "regex": 1, "exact": 2}

        def key(r):
            return (rank[r.path[0]], len(r.path[1]), len(r.headers), sum(1 for h in r.headers if h[1] == "exact"),
                    len(r.query), sum(1 for q in r.query if q[1] == "exact"))
        routes = sorted(routes, key=key, reverse=True)
        self._emit_listener(name, port, routes, listener)

    def _policy_for(self, kind, route, rule_name=None):
        """The policy of `kind` attached to the route's rule (targetRef.sectionName), else to
        the route, else to its Gateway: the most specific wins."""
        rule_level, route_level, gateway_level = None, None, None
        for p in self.by_kind.get(kind, []):
            for t in _targets(p):
                _only(t, {"group", "kind", "name", "sectionName"}, f"{kind} {_name(p)} targetRef")
                if t["kind"] == "HTTPRoute" and t["name"] == _name(route) and _ns(p) == _ns(route):
                    if t.get("sectionName") is None:
                        route_level = route_level or p
                    elif rule_name is not None and t["sectionName"] == rule_name:
                        rule_level = rule_level or p
                elif t["kind"] == "Gateway" and t["name"] == _name(self.gateway) and _ns(p) == _ns(self.gateway):
                    if t.get("sectionName"):
                        raise NotSimulated(f"{kind} {_name(p)}: a Gateway targetRef with sectionName")
                    gateway_level = gateway_level or p
        return rule_level or route_level or gateway_level

    def _translate_route(self, route):
        spec = route["spec"]
        _only(spec, {"parentRefs", "hostnames", "rules"}, f"HTTPRoute {_name(route)}.spec")
        hostnames = spec.get("hostnames") or ["*"]
        prefix = f"httproute/{_ns(route)}/{_name(route)}/"  # gatewayapi/helpers.go irRoutePrefix
        out = []
        # The API server's defaults (gateway-api-standard-crds.yaml): a rule, and a match, of
        # PathPrefix "/" when none is written. Envoy Gateway only ever sees defaulted objects.
        for i, rule in enumerate(spec.get("rules") or [{}]):
            _only(rule, {"matches", "backendRefs", "filters", "timeouts", "name"}, f"HTTPRoute {_name(route)} rule {i}")
            matches = rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
            btp = self._policy_for("BackendTrafficPolicy", route, rule.get("name"))
            eep = self._policy_for("EnvoyExtensionPolicy", route, rule.get("name"))
            ext_procs = self._ext_procs(eep) if eep else []
            destination = self._destination(route, i, rule)
            for j, match in enumerate(matches):
                for host in hostnames:
                    # gatewayapi/route.go: "<prefix>rule/<i>/match/<j>/<host, dots as _>".
                    r = Route(f"{prefix}rule/{i}/match/{j}/{host.replace('.', '_')}")
                    r.hostname = host
                    # gatewayapi/route.go: the route's metadata names the rule (its `name`) as sectionName.
                    r.metadata = _resource_metadata("HTTPRoute", _name(route), _ns(route), rule.get("name"))
                    self._match(r, match, route)
                    self._filters(r, rule.get("filters") or [], route)
                    timeouts = rule.get("timeouts") or {}
                    _only(timeouts, {"request", "backendRequest"}, f"HTTPRoute {_name(route)} rule {i} timeouts")
                    if "request" in timeouts:
                        r.timeout = _duration(timeouts["request"])
                    if "backendRequest" in timeouts:
                        # gatewayapi/route.go: without the rule's own `retry`, backendRequest
                        # becomes the route's timeout, replacing `request`.
                        r.timeout = _duration(timeouts["backendRequest"])
                    if r.direct_response is None:
                        r.destination = destination
                        if destination is None:
                            # A rule without backends answers 500 (gatewayapi/envoyextensionpolicy-with-extproc-with-mixed-backendrefs.out.yaml).
                            r.direct_response = {"status": 500}
                    r.traffic = btp["spec"] if btp else None
                    r.ext_procs = ext_procs
                    out.append(r)
        return out

    def _match(self, r, match, route):
        _only(match, {"path", "headers", "queryParams"}, f"HTTPRoute {_name(route)} match")
        path = match.get("path") or {"type": "PathPrefix", "value": "/"}
        kind = {"PathPrefix": "prefix", "Exact": "exact", "RegularExpression": "regex"}[path.get("type", "PathPrefix")]
        r.path = (kind, path.get("value", "/"))
        for field, target in (("headers", r.headers), ("queryParams", r.query)):
            for h in match.get(field) or []:
                _only(h, {"name", "value", "type"}, f"HTTPRoute {_name(route)} match {field}")
                target.append((h["name"], {"Exact": "exact", "RegularExpression": "regex"}[h.get("type", "Exact")],
                               h["value"]))

    def _filters(self, r, filters, route):
        for f in filters:
            kind = f["type"]
            if kind == "RequestHeaderModifier":
                mod = f["requestHeaderModifier"]
                _only(mod, {"set", "add", "remove"}, "RequestHeaderModifier")
                r.add_request_headers += [(h["name"], h["value"], False) for h in mod.get("set", [])]
                r.add_request_headers += [(h["name"], h["value"], True) for h in mod.get("add", [])]
                r.remove_request_headers += mod.get("remove", [])
            elif kind == "URLRewrite":
                rw = f["urlRewrite"]
                _only(rw, {"hostname"}, "URLRewrite")
                r.host_rewrite = ("literal", rw["hostname"])
            elif kind == "ExtensionRef":
                ref = f["extensionRef"]
                if ref.get("kind") != "HTTPRouteFilter":
                    raise NotSimulated(f"extensionRef kind {ref.get('kind')}")
                hrf = self._get("HTTPRouteFilter", ref["name"], _ns(route))
                if hrf is None:
                    raise Rejected(f"HTTPRouteFilter {ref['name']} not found")
                self._route_filter(r, hrf)
            else:
                raise NotSimulated(f"HTTPRoute filter {kind}")

    def _route_filter(self, r, hrf):
        spec = hrf["spec"]
        _only(spec, {"urlRewrite", "directResponse"}, f"HTTPRouteFilter {_name(hrf)}.spec")
        if "urlRewrite" in spec:
            rw = spec["urlRewrite"]
            _only(rw, {"hostname", "appendXForwardedHost"}, f"HTTPRouteFilter {_name(hrf)} urlRewrite")
            # gatewayapi/filters.go, translator/route.go: x-forwarded-host unless false.
            r.append_x_forwarded_host = rw.get("appendXForwardedHost", True)
            host = rw["hostname"]
            if host["type"] == "Backend":
                r.host_rewrite = ("backend",)
            elif host["type"] == "Header":
                r.host_rewrite = ("header", host["header"])
            else:
                raise NotSimulated(f"urlRewrite.hostname.type {host['type']}")
        if "directResponse" in spec:
            # gatewayapi/filters.go: status 200 unless given; contentType becomes a response header.
            dr = spec["directResponse"]
            _only(dr, {"statusCode", "contentType", "body"}, f"HTTPRouteFilter {_name(hrf)} directResponse")
            r.direct_response = {"status": dr.get("statusCode", 200)}
            body = dr.get("body")
            if body:
                if body.get("type", "Inline") != "Inline":
                    raise NotSimulated("directResponse.body from a ConfigMap")
                r.direct_response["body"] = body["inline"]
            if "contentType" in dr:
                r.add_response_headers.append(("Content-Type", dr["contentType"], False))

    def _backend_setting(self, name, ref, namespace, protocol="HTTP"):
        """gatewayapi/route.go getOrCreateBackendCluster: a Backend's endpoints as one setting."""
        # A Backend's ports are its endpoints'; a backendRef port is not simulated.
        _only(ref, {"name", "namespace", "kind", "group", "weight", "filters"}, f"backendRef {ref.get('name')}")
        # CRD defaults: kind Service, group "" (gateway-api-standard-crds.yaml, the EnvoyExtensionPolicy CRD).
        if ref.get("kind", "Service") != "Backend":
            raise NotSimulated(f"backendRef kind {ref.get('kind', 'Service')} (only Backend)")
        if ref.get("group", "") != "gateway.envoyproxy.io":
            raise Rejected(f"backendRef {ref['name']}: kind Backend needs group gateway.envoyproxy.io")
        if not self.enable_backend:
            raise Rejected("Backend references need extensionApis.enableBackend in the EnvoyGateway config")
        ns = ref.get("namespace", namespace)
        if ns != namespace:
            raise NotSimulated("cross-namespace backendRefs (ReferenceGrant)")
        backend = self._get("Backend", ref["name"], ns)
        if backend is None:
            raise Rejected(f"Backend {ns}/{ref['name']} not found")
        spec = backend["spec"]
        _only(spec, {"endpoints", "fallback", "tls"}, f"Backend {ns}/{ref['name']}.spec")
        endpoints, types = [], set()
        for e in spec["endpoints"]:
            _only(e, {"fqdn", "ip", "unix", "hostname"}, f"Backend {ref['name']} endpoint")
            if "fqdn" in e:
                types.add("FQDN")
                endpoints.append({"host": e["fqdn"]["hostname"], "port": e["fqdn"]["port"], "hostname": e.get("hostname")})
            elif "ip" in e:
                types.add("IP")
                endpoints.append({"host": e["ip"]["address"], "port": e["ip"]["port"], "hostname": e.get("hostname")})
            else:
                if len(e["unix"]["path"]) > 108:
                    raise Rejected(f"Backend {ref['name']}: unix path over 108 characters")
                types.add("UDS")
                endpoints.append({"path": e["unix"]["path"], "hostname": e.get("hostname")})
        address_type = types.pop() if len(types) == 1 else ("MIXED" if "FQDN" in types else "STATIC")
        setting = Setting(name, endpoints, address_type, weight=ref.get("weight", 1),
                          priority=1 if spec.get("fallback") else 0,
                          metadata=_resource_metadata("Backend", ref["name"], ns), protocol=protocol)
        setting.tls = self._backend_tls(backend)
        if ref.get("filters"):
            setting.filters = self._backend_ref_filters(ref["filters"])
        return setting

    def _backend_ref_filters(self, filters):
        out = {"add": [], "remove": []}
        for f in filters:
            if f["type"] != "RequestHeaderModifier":
                raise NotSimulated(f"backendRef filter {f['type']}")
            mod = f["requestHeaderModifier"]
            out["add"] += [(h["name"], h["value"], False) for h in mod.get("set", [])]
            out["add"] += [(h["name"], h["value"], True) for h in mod.get("add", [])]
            out["remove"] += mod.get("remove", [])
        return out

    def _backend_tls(self, backend):
        """gatewayapi/backendtlspolicy.go applyBackendTLSSetting: the Backend's own `tls`,
        under a BackendTLSPolicy's (which wins where both say something). The SAN checked is
        the SNI (translator.go buildValidationContext); no CA at all without the System store."""
        tls = None
        own = backend["spec"].get("tls")
        if own is not None:
            _only(own, {"sni", "wellKnownCACertificates", "insecureSkipVerify"}, f"Backend {_name(backend)}.spec.tls")
            insecure = bool(own.get("insecureSkipVerify"))
            if not insecure and own.get("wellKnownCACertificates") != "System":
                raise NotSimulated(f"Backend {_name(backend)}.spec.tls without the System CAs or insecureSkipVerify")
            tls = {"sni": own.get("sni"), "insecure": insecure}
        for p in self.by_kind.get("BackendTLSPolicy", []):
            if _ns(p) != _ns(backend):
                continue
            if not any(t.get("kind") == "Backend" and t["name"] == _name(backend) for t in p["spec"]["targetRefs"]):
                continue
            v = p["spec"]["validation"]
            _only(v, {"wellKnownCACertificates", "hostname"}, f"BackendTLSPolicy {_name(p)}.spec.validation")
            if v.get("wellKnownCACertificates") != "System":
                raise NotSimulated("BackendTLSPolicy CA certificates other than System")
            tls = {"sni": v["hostname"], "insecure": False}
            break
        return tls

    def _destination(self, route, i, rule):
        refs = rule.get("backendRefs") or []
        if not refs:
            return None
        name = f"httproute/{_ns(route)}/{_name(route)}/rule/{i}"
        settings = [self._backend_setting(f"{name}/backend/{j}", ref, _ns(route)) for j, ref in enumerate(refs)]
        return (name, settings, _resource_metadata("HTTPRoute", _name(route), _ns(route), rule.get("name")))

    def _ext_procs(self, policy):
        """gatewayapi/envoyextensionpolicy.go buildExtProc, into ir.ExtProc."""
        spec = policy["spec"]
        _only(spec, {"targetRef", "targetRefs", "extProc"}, f"EnvoyExtensionPolicy {_name(policy)}.spec")
        out = []
        for idx, ep in enumerate(spec.get("extProc") or []):
            _only(ep, {"backendRefs", "failOpen", "messageTimeout", "processingMode", "metadata", "backendSettings"},
                  f"EnvoyExtensionPolicy {_name(policy)} extProc")
            _only(ep.get("backendSettings"), {"circuitBreaker", "connection", "timeout"},
                  f"EnvoyExtensionPolicy {_name(policy)} extProc backendSettings")
            name = f"envoyextensionpolicy/{_ns(policy)}/{_name(policy)}/extproc/{idx}"
            ref = ep["backendRefs"][0]
            if len(ep["backendRefs"]) != 1:
                raise NotSimulated("extProc with several backendRefs")
            setting = self._backend_setting(f"{name}/backend/0", ref, _ns(policy), protocol="GRPC")
            authority = f"{ref['name']}.{ref.get('namespace', _ns(policy))}"  # no port: a Backend's are its endpoints
            ir = {"name": name, "destination": (name, [setting], _resource_metadata("EnvoyExtensionPolicy", _name(policy), _ns(policy))),
                  "authority": authority, "failOpen": ep.get("failOpen"), "traffic": ep.get("backendSettings") or {}}
            if "messageTimeout" in ep:
                ir["messageTimeout"] = _duration(ep["messageTimeout"])
            mode = ep.get("processingMode")
            if mode:
                _only(mode, {"request", "response", "allowModeOverride"}, "extProc.processingMode")
                for phase in ("request", "response"):
                    if mode.get(phase) is not None:
                        _only(mode[phase], {"body", "attributes"}, f"extProc.processingMode.{phase}")
                        ir[phase + "Headers"] = True
                        ir[phase + "Body"] = mode[phase].get("body")
                        ir[phase + "Attributes"] = mode[phase].get("attributes")
                ir["allowModeOverride"] = mode.get("allowModeOverride", False)
            md = ep.get("metadata")
            if md:
                _only(md, {"accessibleNamespaces", "writableNamespaces"}, "extProc.metadata")
                ir["forwarding"] = md.get("accessibleNamespaces")
                ir["receiving"] = md.get("writableNamespaces")
            out.append(ir)
        return out

    def _process_patch_policies_ir(self):
        """gatewayapi/envoypatchpolicy.go, and resource.go's order: by priority, then creation."""
        policies = sorted(self.by_kind.get("EnvoyPatchPolicy", []), key=lambda p: p["spec"].get("priority", 0))
        self.patch_policies = []
        for p in policies:
            spec = p["spec"]
            _only(spec, {"targetRef", "type", "jsonPatches", "priority"}, f"EnvoyPatchPolicy {_name(p)}.spec")
            ref = spec["targetRef"]
            if ref["name"] != _name(self.gateway) or _ns(p) != _ns(self.gateway):
                continue  # another Gateway's policy: no status from this one
            key = f"{_ns(p)}/{_name(p)}"
            if not self.enable_envoy_patch_policy:
                self.patch_statuses[key] = ("Accepted", False, "Disabled",
                                            "EnvoyPatchPolicy is disabled in the EnvoyGateway configuration")
                continue
            if ref.get("group") != "gateway.networking.k8s.io" or ref.get("kind") != "Gateway":
                self.patch_statuses[key] = ("Accepted", False, "Invalid", "only TargetRef.Kind Gateway is supported")
                continue
            if spec.get("type") != "JSONPatch":
                raise NotSimulated(f"EnvoyPatchPolicy type {spec.get('type')}")
            self.patch_policies.append((key, spec["jsonPatches"]))

    # ---------------------------------------------------------- xds translator: IR to xDS

    def _emit_listener(self, name, port, routes, listener):
        ctp = None
        for p in self.by_kind.get("ClientTrafficPolicy", []):
            for t in _targets(p):
                if t["kind"] == "Gateway" and t["name"] == _name(self.gateway) and t.get("sectionName") in (None, listener["name"]):
                    ctp = ctp or p
        buffer_limit = 32768  # listener.go default, xds-ir/ext-proc.listeners.yaml
        stream_idle_timeout = None
        if ctp:
            _only(ctp["spec"], {"targetRef", "targetRefs", "connection", "timeout"}, f"ClientTrafficPolicy {_name(ctp)}.spec")
            _only(ctp["spec"].get("timeout"), {"http"}, f"ClientTrafficPolicy {_name(ctp)}.spec.timeout")
            http = (ctp["spec"].get("timeout") or {}).get("http") or {}
            _only(http, {"streamIdleTimeout"}, f"ClientTrafficPolicy {_name(ctp)}.spec.timeout.http")
            if "streamIdleTimeout" in http:
                stream_idle_timeout = _duration(http["streamIdleTimeout"])
            _only(ctp["spec"].get("connection"), {"bufferLimit"}, f"ClientTrafficPolicy {_name(ctp)}.spec.connection")
            if "bufferLimit" in ctp["spec"].get("connection", {}):
                # xds-ir/client-buffer-limit.listeners.yaml: the listener's per_connection_buffer_limit_bytes.
                buffer_limit = _quantity(ctp["spec"]["connection"]["bufferLimit"])
                if buffer_limit > 2**32 - 1:
                    raise Rejected("ClientTrafficPolicy bufferLimit out of range")

        # The HCM of xds-ir/ext-proc.listeners.yaml: every ext_proc filter of every route, disabled,
        # sorted by name (httpfilters.go orders ext_proc at 100 + its index), then the router.
        ext_procs = {}
        for r in routes:
            for ep in r.ext_procs:
                ext_procs[ep["name"]] = ep
        http_filters = [self._ext_proc_filter(ext_procs[n]) for n in sorted(ext_procs, key=lambda n: (int(n.rsplit("/", 1)[1]), n))]
        http_filters.append({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "suppress_envoy_headers": True}})
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
            "http2_protocol_options": {"max_concurrent_streams": 100, "initial_stream_window_size": 65536,
                                       "initial_connection_window_size": 1048576},
            "http_filters": http_filters,
            "merge_slashes": True,
            "normalize_path": True,
            "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
            "rds": {"config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
                    "route_config_name": name},
            "server_header_transformation": "PASS_THROUGH",
            "stat_prefix": f"http-{port}",
            "use_remote_address": True,
        }
        if stream_idle_timeout is not None:
            hcm["stream_idle_timeout"] = _pb_duration(stream_idle_timeout)  # listener.go
        self.listener_stream_idle_timeout = stream_idle_timeout
        self.listeners.append({
            "name": name,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
            "default_filter_chain": {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
                                     "name": name},
            "max_connections_to_accept_per_socket_event": 1,
            "per_connection_buffer_limit_bytes": buffer_limit,
        })
        self._emit_routes(name, routes)
        for ep in ext_procs.values():
            self._emit_cluster(*ep["destination"], traffic=ep["traffic"])

    def _ext_proc_filter(self, ep):
        """extproc.go extProcConfig / buildProcessingMode."""
        modes = {"Buffered": "BUFFERED", "BufferedPartial": "BUFFERED_PARTIAL", "Streamed": "STREAMED",
                 "FullDuplexStreamed": "FULL_DUPLEX_STREAMED"}
        pm = {"request_header_mode": "SKIP", "response_header_mode": "SKIP",
              "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
        for phase in ("request", "response"):
            body = ep.get(phase + "Body")
            if body:
                pm[f"{phase}_body_mode"] = modes[body]
                if body == "FullDuplexStreamed":
                    pm[f"{phase}_trailer_mode"] = "SEND"
            if ep.get(phase + "Headers"):
                pm[f"{phase}_header_mode"] = "SEND"
        config = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            # 10 s, fixed (defaultExtServiceRequestTimeout). Seen on Envoy 1.40: it does not
            # bound the ext_proc stream; a streamed answer of 11.5 s went through.
            "grpc_service": {"envoy_grpc": {"cluster_name": ep["destination"][0], "authority": ep["authority"]},
                             "timeout": "10s"},
            "processing_mode": pm,
        }
        if ep.get("failOpen"):
            config["failure_mode_allow"] = True
        if "messageTimeout" in ep:
            config["message_timeout"] = _pb_duration(ep["messageTimeout"])
        if ep.get("requestAttributes"):
            config["request_attributes"] = list(ep["requestAttributes"])
        if ep.get("responseAttributes"):
            config["response_attributes"] = list(ep["responseAttributes"])
        if ep.get("forwarding") is not None or ep.get("receiving") is not None:
            config["metadata_options"] = {}
            if ep.get("forwarding") is not None:
                config["metadata_options"]["forwarding_namespaces"] = {"untyped": list(ep["forwarding"])}
            if ep.get("receiving") is not None:
                config["metadata_options"]["receiving_namespaces"] = {"untyped": list(ep["receiving"])}
        if ep.get("allowModeOverride"):
            config["allow_mode_override"] = True
        # "envoy.filters.http.ext_proc/<ir name>", disabled; each route enables it (xds-ir/ext-proc.listeners.yaml).
        return {"name": f"envoy.filters.http.ext_proc/{ep['name']}", "disabled": True, "typed_config": config}

    def _emit_routes(self, name, routes):
        """xds-ir/ext-proc.routes.yaml, xds-ir/backend-priority.routes.yaml: one virtual host per hostname."""
        vhosts = {}
        for r in routes:
            host = r.hostname
            if host not in vhosts:
                gw = self.gateway
                vhosts[host] = {"domains": [host], "name": f"{name}/{host.replace('.', '_')}",
                                "metadata": _resource_metadata("Gateway", _name(gw), _ns(gw), name.rsplit("/", 1)[1]),
                                "routes": []}
            vhosts[host]["routes"].append(self._route(r))
            if r.destination:
                self._emit_destination(r)
        self.route_configs.append({"ignore_port_in_host_matching": True, "name": name, "virtual_hosts": list(vhosts.values())})

    def _needs_cluster_per_setting(self, settings):
        """ir/xds.go NeedsClusterPerSetting: FQDN mixed with other types, or per-backendRef filters."""
        types = {s.address_type for s in settings}
        return "MIXED" in types or ("FQDN" in types and len(types) > 1) or any(s.filters for s in settings)

    def _emit_destination(self, r):
        name, settings, metadata = r.destination
        if any(c["name"] == name for c in self.clusters) or any(c["name"] == settings[0].name for c in self.clusters):
            return
        if self._needs_cluster_per_setting(settings):
            for s in settings:
                self._emit_cluster(s.name, [s], metadata, traffic=r.traffic)
        else:
            self._emit_cluster(name, settings, metadata, traffic=r.traffic)

    def _string_match(self, kind, value):
        return {"exact": value} if kind == "exact" else {"safe_regex": {"regex": value}}

    def _added_headers(self, headers):
        """route.go buildXdsAddedHeaders."""
        return [{"header": {"key": k, "value": v},
                 "append_action": "APPEND_IF_EXISTS_OR_ADD" if append else "OVERWRITE_IF_EXISTS_OR_ADD"}
                for k, v, append in headers]

    def _route(self, r):
        """route.go buildXdsRoute."""
        kind, value = r.path
        if kind == "exact":
            match = {"path": value}
        elif kind == "regex":
            match = {"safe_regex": {"regex": value}}
        elif value == "/":
            match = {"prefix": "/"}
        else:
            match = {"path_separated_prefix": value.rstrip("/")}
        if r.headers:
            match["headers"] = [{"name": n, "string_match": self._string_match(k, v)} for n, k, v in r.headers]
        if r.query:
            match["query_parameters"] = [{"name": n, "string_match": self._string_match(k, v)} for n, k, v in r.query]
        out = {"match": match, "metadata": r.metadata, "name": r.name}
        if r.add_request_headers:
            out["request_headers_to_add"] = self._added_headers(r.add_request_headers)
        if r.remove_request_headers:
            out["request_headers_to_remove"] = list(r.remove_request_headers)
        if r.add_response_headers:
            out["response_headers_to_add"] = self._added_headers(r.add_response_headers)
        if r.direct_response is not None:
            dr = {"status": r.direct_response["status"]}
            if r.direct_response.get("body"):
                dr["body_format"] = {"text_format_source": {"inline_bytes": base64.b64encode(r.direct_response["body"].encode()).decode()}}
            out["direct_response"] = dr
        else:
            out["route"] = self._route_action(r)
        if r.ext_procs:
            out["typed_per_filter_config"] = {
                f"envoy.filters.http.ext_proc/{ep['name']}": {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}
                for ep in r.ext_procs}
        return out

    def _route_action(self, r):
        name, settings, _ = r.destination
        if self._needs_cluster_per_setting(settings):
            # route.go buildXdsWeightedRouteAction (xds-ir/http-route-weighted-backend-with-filters.routes.yaml).
            clusters = []
            for s in settings:
                entry = {"name": s.name, "weight": s.weight}
                if s.filters and s.filters["add"]:
                    entry["request_headers_to_add"] = self._added_headers(s.filters["add"])
                if s.filters and s.filters["remove"]:
                    entry["request_headers_to_remove"] = list(s.filters["remove"])
                clusters.append(entry)
            action = {"cluster_not_found_response_code": "INTERNAL_SERVER_ERROR", "weighted_clusters": {"clusters": clusters}}
        else:
            action = {"cluster": name}
        # Websocket upgrades unless a request buffer is set (route.go buildUpgradeConfig).
        action["upgrade_configs"] = [{"upgrade_type": "websocket"}]
        if r.host_rewrite:
            if r.host_rewrite[0] == "literal":
                action["host_rewrite_literal"] = r.host_rewrite[1]
            elif r.host_rewrite[0] == "header":
                action["host_rewrite_header"] = r.host_rewrite[1]
            else:
                action["auto_host_rewrite"] = True
            if r.append_x_forwarded_host:
                action["append_x_forwarded_host"] = True
        traffic = r.traffic or {}
        if traffic:
            _only(traffic, {"targetRef", "targetRefs", "retry", "timeout", "circuitBreaker", "connection", "healthCheck"},
                  "BackendTrafficPolicy.spec")
        request_timeout = r.timeout
        http_timeout = (traffic.get("timeout") or {}).get("http") or {}
        _only(traffic.get("timeout"), {"http", "tcp"}, "BackendTrafficPolicy.spec.timeout")
        _only(http_timeout, {"requestTimeout", "connectionIdleTimeout", "maxConnectionDuration", "streamIdleTimeout"},
              "BackendTrafficPolicy.spec.timeout.http")
        if request_timeout is None and "requestTimeout" in http_timeout:
            request_timeout = _duration(http_timeout["requestTimeout"])
        if request_timeout is not None:
            action["timeout"] = _pb_duration(request_timeout)
        # route.go idleTimeout: the BackendTrafficPolicy's streamIdleTimeout; else none when the
        # listener has one (ClientTrafficPolicy); else at least an hour, above the route timeout.
        if "streamIdleTimeout" in http_timeout:
            action["idle_timeout"] = _pb_duration(_duration(http_timeout["streamIdleTimeout"]))
        elif self.listener_stream_idle_timeout is None and request_timeout is not None:
            action["idle_timeout"] = _pb_duration(0 if request_timeout == 0 else max(3600, request_timeout))
        retry = traffic.get("retry")
        if retry is not None:
            action["retry_policy"] = self._retry_policy(retry)
        return action

    def _retry_policy(self, retry):
        """route.go buildRetryPolicy (xds-ir/retry.routes.yaml)."""
        _only(retry, {"numRetries", "numAttemptsPerPriority", "retryOn", "perRetry"}, "BackendTrafficPolicy.spec.retry")
        policy = {
            "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
            "retriable_status_codes": [503],
            "num_retries": retry.get("numRetries", 2),
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
            "host_selection_retry_max_attempts": "5",
        }
        if retry.get("numAttemptsPerPriority"):
            policy["retry_priority"] = {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": retry["numAttemptsPerPriority"]}}
        retry_on = retry.get("retryOn")
        if retry_on is not None:
            _only(retry_on, {"triggers", "httpStatusCodes"}, "BackendTrafficPolicy.spec.retry.retryOn")
            if retry_on.get("triggers"):
                policy["retry_on"] = ",".join(retry_on["triggers"])
            codes = retry_on.get("httpStatusCodes") or []
            if codes:
                policy["retriable_status_codes"] = list(codes)
            else:
                del policy["retriable_status_codes"]
        per = retry.get("perRetry")
        if per:
            _only(per, {"timeout", "backOff"}, "BackendTrafficPolicy.spec.retry.perRetry")
            if "timeout" in per:
                policy["per_try_timeout"] = _pb_duration(_duration(per["timeout"]))
            backoff = {}
            for field, key in (("baseInterval", "base_interval"), ("maxInterval", "max_interval")):
                if field in (per.get("backOff") or {}):
                    backoff[key] = _pb_duration(_duration(per["backOff"][field]))
            if backoff:
                policy["retry_back_off"] = backoff
        return policy

    def _emit_cluster(self, name, settings, metadata, traffic=None):
        """cluster.go buildXdsCluster; xds-ir/ext-proc.clusters.yaml, xds-ir/http-route-dns-cluster.clusters.yaml."""
        if any(c["name"] == name for c in self.clusters):
            return
        traffic = traffic or {}
        dns = settings[0].address_type == "FQDN"  # cluster.go buildEndpointType: by the first setting
        breaker = {"max_retries": 1024}
        cb = traffic.get("circuitBreaker")
        if cb is not None:
            _only(cb, {"maxConnections", "maxPendingRequests", "maxParallelRequests", "maxParallelRetries"},
                  "circuitBreaker")
            # The CRD defaults each threshold to 1024 (the API server fills them in).
            for field, key in (("maxConnections", "max_connections"), ("maxPendingRequests", "max_pending_requests"),
                               ("maxParallelRequests", "max_requests"), ("maxParallelRetries", "max_retries")):
                breaker[key] = cb.get(field, 1024)
        buffer_limit = 32768
        conn = traffic.get("connection")
        if conn:
            _only(conn, {"bufferLimit"}, "BackendTrafficPolicy.spec.connection")
            buffer_limit = _quantity(conn["bufferLimit"])
        tcp = (traffic.get("timeout") or {}).get("tcp") or {}
        _only(tcp, {"connectTimeout"}, "BackendTrafficPolicy.spec.timeout.tcp")
        cluster = {
            "circuit_breakers": {"thresholds": [breaker]},
            "common_lb_config": {},
            "connect_timeout": _pb_duration(_duration(tcp["connectTimeout"])) if "connectTimeout" in tcp else "10s",
            "dns_lookup_family": "V4_PREFERRED",
            "ignore_health_on_host_removal": True,
            "load_balancing_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.least_request",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest",
                                 "locality_lb_config": {"locality_weighted_lb_config": {}}}}}]},
            "metadata": metadata,
            "name": name,
            "per_connection_buffer_limit_bytes": buffer_limit,
        }
        passive = (traffic.get("healthCheck") or {}).get("passive")
        _only(traffic.get("healthCheck"), {"passive"}, "healthCheck")
        if passive is not None:
            cluster["outlier_detection"] = self._outlier_detection(passive)
        assignment = self._load_assignment(name, settings)
        if dns:
            # v1.9 resolves FQDNs with the envoy.cluster.dns extension and keeps the assignment inline.
            cluster["cluster_type"] = {"name": "envoy.cluster.dns", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster",
                "dns_lookup_family": "V4_PREFERRED", "dns_refresh_rate": "30s", "respect_dns_ttl": True}}
            cluster["load_assignment"] = assignment
        else:
            cluster["type"] = "EDS"
            cluster["eds_cluster_config"] = {"eds_config": {"ads": {}, "resource_api_version": "V3"}, "service_name": name}
            self.endpoints.append(assignment)
        all_tls = all(s.tls for s in settings)
        # cluster.go: auto SNI only when no setting names its SNI and every one is TLS.
        auto_sni = all_tls and not any(s.tls.get("sni") for s in settings)
        matches = []
        for i, s in enumerate(settings):
            if s.tls:
                matches.append({"match": {"name": f"{name}/tls/{i}"}, "name": f"{name}/tls/{i}",
                                "transport_socket": self._tls_socket(s.tls, auto_sni)})
        if matches:
            cluster["transport_socket_matches"] = matches
        http2 = {"initial_connection_window_size": 1048576, "initial_stream_window_size": 65536}
        http_timeout = (traffic.get("timeout") or {}).get("http") or {}
        common = {}
        if "connectionIdleTimeout" in http_timeout:
            common["idle_timeout"] = _pb_duration(_duration(http_timeout["connectionIdleTimeout"]))
        if "maxConnectionDuration" in http_timeout:
            common["max_connection_duration"] = _pb_duration(_duration(http_timeout["maxConnectionDuration"]))
        options = None
        # cluster.go buildTypedExtensionProtocolOptions: HTTP/2 for gRPC, auto (ALPN) when every
        # setting is TLS, HTTP/1 when common options are needed, else no options at all.
        if any(s.protocol == "GRPC" for s in settings):
            options = {"explicit_http_config": {"http2_protocol_options": http2}}
        elif all_tls:
            options = {"auto_config": {"http2_protocol_options": http2, "http_protocol_options": {}}}
            if auto_sni:
                options["upstream_http_protocol_options"] = {"auto_sni": True}
            cluster["transport_socket"] = {"name": "dummy.transport_socket", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {}}}
        elif common:
            options = {"explicit_http_config": {"http_protocol_options": {}}}
        if options is not None:
            if common:
                options["common_http_protocol_options"] = common
            cluster["typed_extension_protocol_options"] = {
                HTTP_OPTIONS: {"@type": f"type.googleapis.com/{HTTP_OPTIONS}", **options}}
        self.clusters.append({k: v for k, v in cluster.items() if v is not None})

    def _outlier_detection(self, passive):
        """cluster.go buildXdsOutlierDetection, over the CRD's defaults for `passive`."""
        _only(passive, {"alwaysEjectOneEndpoint", "baseEjectionTime", "consecutive5XxErrors", "consecutiveGatewayErrors",
                        "consecutiveLocalOriginFailures", "interval", "maxEjectionPercent",
                        "splitExternalLocalOriginErrors"}, "healthCheck.passive")
        p = {"alwaysEjectOneEndpoint": False, "baseEjectionTime": "30s", "consecutive5XxErrors": 5,
             "consecutiveLocalOriginFailures": 5, "interval": "3s", "maxEjectionPercent": 10,
             "splitExternalLocalOriginErrors": False} | passive
        od = {"base_ejection_time": _pb_duration(_duration(p["baseEjectionTime"])),
              "interval": _pb_duration(_duration(p["interval"])),
              "consecutive_local_origin_failure": p["consecutiveLocalOriginFailures"],
              "consecutive_5xx": p["consecutive5XxErrors"],
              "always_eject_one_host": p["alwaysEjectOneEndpoint"]}
        if p["splitExternalLocalOriginErrors"]:
            od["split_external_local_origin_errors"] = True
        if p["maxEjectionPercent"] > 0:
            od["max_ejection_percent"] = p["maxEjectionPercent"]
        if "consecutiveGatewayErrors" in p:
            od["consecutive_gateway_failure"] = p["consecutiveGatewayErrors"]
            od["enforcing_consecutive_gateway_failure"] = 100
        return od

    def _tls_socket(self, tls, auto_sni):
        """translator.go buildXdsUpstreamTLSSocketWthCert (xds-ir/http-route-with-tls-system-truststore.clusters.yaml,
        xds-ir/backend-tls-skip-verify.clusters.yaml)."""
        context = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                   "common_tls_context": {}}
        if not tls["insecure"]:
            self._system_ca_secret()
            validation = {"default_validation_context": {},
                          "validation_context_sds_secret_config": {"name": SYSTEM_CA_SECRET, "sds_config": {
                              "ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}}
            if tls.get("sni"):
                validation["default_validation_context"]["match_typed_subject_alt_names"] = [
                    {"matcher": {"exact": tls["sni"]}, "san_type": "DNS"}]
            elif auto_sni:
                context["auto_sni_san_validation"] = True
            context["common_tls_context"]["combined_validation_context"] = validation
        if tls.get("sni"):
            context["sni"] = tls["sni"]
        return {"name": "envoy.transport_sockets.tls", "typed_config": context}

    def _load_assignment(self, name, settings):
        """cluster.go buildXdsClusterLoadAssignment / buildWeightedLocalities: a locality per
        setting, named after it, its priority 1 for a fallback Backend (xds-ir/backend-priority.endpoints.yaml,
        gatewayapi/route.go), a unix endpoint as a pipe (xds-ir/http-route-weighted-backend-uds-ip.endpoints.yaml,
        gatewayapi/envoyextensionpolicy-with-extproc-with-mixed-backendrefs.out.yaml)."""
        localities = []
        for i, s in enumerate(settings):
            lb_endpoints = []
            for e in s.endpoints:
                if "path" in e:
                    address = {"pipe": {"path": e["path"]}}
                else:
                    address = {"socket_address": {"address": e["host"], "port_value": e["port"]}}
                endpoint = {"address": address}
                if e.get("hostname"):
                    endpoint["hostname"] = e["hostname"]
                lb = {"endpoint": endpoint, "load_balancing_weight": 1}
                if s.tls:
                    lb["metadata"] = {"filter_metadata": {"envoy.transport_socket_match": {"name": f"{name}/tls/{i}"}}}
                lb_endpoints.append(lb)
            locality = {"lb_endpoints": lb_endpoints, "load_balancing_weight": s.weight,
                        "locality": {"region": s.name}, "metadata": s.metadata}
            if s.priority:
                locality["priority"] = s.priority
            localities.append(locality)
        return {"cluster_name": name, "endpoints": localities}

    def _system_ca_secret(self):
        if not any(s["name"] == SYSTEM_CA_SECRET for s in self.secrets):
            self.secrets.append({"name": SYSTEM_CA_SECRET, "validation_context": {"trusted_ca": {"filename": SYSTEM_CA_FILE}}})

    # ---------------------------------------------------------- EnvoyPatchPolicy

    def _resources(self, type_url):
        return {LISTENER_TYPE: self.listeners, ROUTE_TYPE: self.route_configs, CLUSTER_TYPE: self.clusters,
                ENDPOINT_TYPE: self.endpoints, SECRET_TYPE: self.secrets}.get(type_url)

    def apply_patches(self, strict=True):
        """jsonpatch.go processJSONPatches: each patch on the one resource it names; a patch that
        fails is dropped (the rest still apply) and the policy is not Programmed. With `strict`,
        a policy that is not Programmed raises, as a CI check of the rendered policy should."""
        for key, patches in self.patch_policies:
            errors, not_found = [], []
            for p in patches:
                _only(p, {"type", "name", "operation"}, f"EnvoyPatchPolicy {key} jsonPatch")
                op = p["operation"]
                _only(op, {"op", "path", "jsonPath", "from", "value"}, f"EnvoyPatchPolicy {key} operation")
                problem = _validate_operation(op)
                if problem:
                    errors.append(problem)
                    continue
                resources = self._resources(p["type"])
                if resources is None:
                    errors.append(f"unsupported patch type {p['type']}")
                    continue
                if op["op"] == "add" and not op.get("path") and not op.get("jsonPath"):
                    # An add with no path adds the value as a whole new resource.
                    value = op["value"]
                    problem = _proto_json_problem(value)
                    if problem:
                        errors.append(problem)
                    else:
                        resources.append(copy.deepcopy(value))
                    continue
                index = next((i for i, r in enumerate(resources) if r.get("name", r.get("cluster_name")) == p["name"]), None)
                if index is None:
                    not_found.append(f"{p['type']}/{p['name']}")
                    continue
                if p["type"] == SECRET_TYPE and p["name"] == SYSTEM_CA_SECRET:
                    errors.append(f'secret name "{SYSTEM_CA_SECRET}" is reserved for the system trust store')
                    continue
                patched, problem = apply_operation(resources[index], op)
                if problem is None:
                    problem = _proto_json_problem(patched)
                if problem:
                    errors.append(problem)
                    continue
                resources[index] = patched
            # status/envoypatchpolicy.go: an error, else missing resources, else Programmed.
            if errors:
                self.patch_statuses[key] = ("Programmed", False, "Invalid", "; ".join(errors))
            elif not_found:
                self.patch_statuses[key] = ("Programmed", False, "ResourceNotFound",
                                            "Unable to find xds resources: " + ",".join(not_found))
            else:
                self.patch_statuses[key] = ("Programmed", True, "Programmed", "Patches have been successfully applied.")
        if strict:
            failed = {k: v for k, v in self.patch_statuses.items() if not v[1]}
            if failed:
                raise PatchNotProgrammed(json.dumps(failed, indent=1))
        return self.patch_statuses

    # ---------------------------------------------------------- delivery

    def bootstrap(self, listen_port, admin_port, listen_address="127.0.0.1", system_ca_file=None):
        """The resources as one static bootstrap (see the module docstring for what this changes)."""
        clusters = []
        assignments = {a["cluster_name"]: a for a in self.endpoints}
        for c in copy.deepcopy(self.clusters):
            if c.get("type") == "EDS":
                del c["eds_cluster_config"]
                c["type"] = "STATIC"
                # A cluster no assignment names has no endpoints (Envoy would wait on EDS).
                c["load_assignment"] = assignments.get(c["name"], {"cluster_name": c["name"], "endpoints": []})
            for m in c.get("transport_socket_matches", []):
                ctx = m["transport_socket"]["typed_config"]["common_tls_context"]
                sds = ctx.get("combined_validation_context", {}).get("validation_context_sds_secret_config")
                if sds:
                    sds.pop("sds_config", None)  # a static secret of that name
            clusters.append(c)
        listeners = []
        routes = {r["name"]: r for r in self.route_configs}
        for listener in copy.deepcopy(self.listeners):
            listener["address"] = {"socket_address": {"address": listen_address, "port_value": listen_port}}
            for f in listener["default_filter_chain"]["filters"]:
                hcm = f["typed_config"]
                rds = hcm.pop("rds")
                hcm["route_config"] = copy.deepcopy(routes[rds["route_config_name"]])
            listeners.append(listener)
        secrets = copy.deepcopy(self.secrets)
        for s in secrets:
            if s["name"] == SYSTEM_CA_SECRET and system_ca_file:
                s["validation_context"]["trusted_ca"]["filename"] = str(system_ca_file)
        static = {"listeners": listeners, "clusters": clusters}
        if secrets:
            static["secrets"] = secrets
        return {"node": {"id": "envoy-gateway-simulated", "cluster": "envoy-gateway-simulated"},
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
                "static_resources": static}


# ---------------------------------------------------------------- JSONPatch as Envoy Gateway applies it

def _validate_operation(op):
    """ir/xds.go JSONPatchOperation.Validate (RFC 6902's required members)."""
    if "path" not in op and "jsonPath" not in op:
        return "a patch operation must specify a path or jsonPath"
    kind = op["op"]
    if kind in ("add", "replace", "test"):
        if "value" not in op:
            return f"the {kind} operation requires a value"
        if "from" in op:
            return f"the {kind} operation doesn't support a from attribute"
    elif kind == "remove":
        if "from" in op or "value" in op:
            return "value and from can't be specified with the remove operation"
    elif kind in ("move", "copy"):
        if "from" not in op:
            return f"the {kind} operation requires a valid from attribute"
        if "value" in op:
            return f"the {kind} operation doesn't support a value attribute"
    else:
        return "unsupported JSONPatch operation"
    return None


def _escape(token):
    return str(token).replace("~", "~0").replace("/", "~1")


def json_path_to_pointers(document, expression, path=""):
    """utils/jsonpatch/jsonpathtopointer.go ConvertPathToPointers: the JSONPath's matches as
    JSON pointers, each with `path` appended. Only child names and indices convert."""
    if expression.strip() == "$":
        raise ValueError("Using only Root ('$') in json path expression is not allowed!")
    if "**" in expression:
        raise NotSimulated(f"jsonPath {expression!r}: ojg's '**' has no jsonpath-ng equivalent")
    # ojg also takes a path without the root ("a.b", ".a", "..a"); jsonpath-ng needs the "$".
    if not expression.startswith("$"):
        expression = "$" + ("" if expression.startswith((".", "[")) else ".") + expression
    try:
        compiled = jsonpath_parse(expression)
    except (JsonPathParserError, Exception) as e:  # the parser raises plain Exceptions for some input
        raise ValueError(f"Error during parsing jpath: {e}") from e
    pointers = []
    for match in compiled.find(document):
        tokens = []
        m = match
        while m is not None and m.context is not None:
            tokens.append(_path_token(m.path))
            m = m.context
        pointer = "".join("/" + _escape(t) for t in reversed(tokens))
        if path:
            pointer = pointer.rstrip("/") + "/" + path.lstrip("/")
        pointers.append(pointer)
    return pointers


def _path_token(path):
    from jsonpath_ng.jsonpath import Fields, Index
    if isinstance(path, Fields) and len(path.fields) == 1:
        return path.fields[0]
    if isinstance(path, Index) and len(path.indices) == 1:
        return path.indices[0]
    raise ValueError(f"There is no conversion implemented for {type(path).__name__}")


def _ensure_path_exists(document, pointer):
    """json-patch v5's EnsurePathExistsOnAdd, which Envoy Gateway turns on (patch.go): every
    missing parent is created, an array when the next token is an index or "-", else an
    object, and a short array is padded with nulls."""
    tokens = jsonpointer.JsonPointer(pointer).parts
    node = document
    for i, token in enumerate(tokens[:-1]):
        nxt = tokens[i + 1]
        if isinstance(node, list):
            if not token.isdigit():
                return
            idx = int(token)
            if idx < len(node) and node[idx] is not None:
                node = node[idx]
                continue
            while len(node) <= idx:
                node.append(None)
            node[idx] = [] if (nxt.isdigit() or nxt == "-") else {}
            node = node[idx]
        elif isinstance(node, dict):
            if token in node and node[token] is not None:
                node = node[token]
                continue
            node[token] = [] if (nxt.isdigit() or nxt == "-") else {}
            if nxt.isdigit():
                node[token].extend([None] * int(nxt))
            node = node[token]
        else:
            return


def apply_operation(resource, op):
    """utils/jsonpatch/patch.go ApplyJSONPatches for one operation: (patched, error text)."""
    document = copy.deepcopy(resource)
    if "jsonPath" in op:
        try:
            pointers = json_path_to_pointers(document, op["jsonPath"], op.get("path", ""))
        except ValueError as e:
            return resource, f"unable to convert jsonPath: '{op['jsonPath']}' into jsonPointers, err: {e}"
        if not pointers:
            return resource, (f"no jsonPointers were found while evaluating the jsonPath: '{op['jsonPath']}'. "
                              "Ensure the elements you are trying to select with the jsonPath exist in the document.")
    else:
        pointers = [op["path"]]
    errors = []
    for pointer in pointers:
        operation = {"op": op["op"], "path": pointer}
        if "from" in op:
            operation["from"] = op["from"]
        if "value" in op:
            operation["value"] = copy.deepcopy(op["value"])
        candidate = copy.deepcopy(document)
        if op["op"] == "add":
            _ensure_path_exists(candidate, pointer)
        try:
            document = jsonpatch.JsonPatch([operation]).apply(candidate)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            errors.append(f"unable to apply patch: op={op['op']} path={pointer} err: {e}")
    return document, ("; ".join(errors) or None)


_ANY_FIELDS = ("typed_config", "typed_extension_protocol_options")


def _proto_json_problem(value, where=""):
    """What protojson.Unmarshal would refuse that Envoy's own loader might let through: a
    field under both its proto and its JSON name, and an Any without "@type". The
    rest of protojson's and the validator's checks happen in `envoy --mode validate`."""
    if isinstance(value, dict):
        for key, item in value.items():
            camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
            if camel != key and camel in value:
                return f"unable to unmarshal xds resource: duplicate field {key!r} and {camel!r} at {where or '/'}"
            if key == "typed_config" and isinstance(item, dict) and "@type" not in item:
                return f"unable to unmarshal xds resource: an Any without @type at {where}/{key}"
            if key == "typed_extension_protocol_options" and isinstance(item, dict):
                for name, options in item.items():
                    if not isinstance(options, dict) or "@type" not in options:
                        return f"unable to unmarshal xds resource: an Any without @type at {where}/{key}/{name}"
            problem = _proto_json_problem(item, f"{where}/{key}")
            if problem:
                return problem
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problem = _proto_json_problem(item, f"{where}/{i}")
            if problem:
                return problem
    return None
