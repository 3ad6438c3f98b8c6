"""An OTLP/HTTP receiver of traces and metrics on loopback: it decodes what it gets with the
OpenTelemetry protobuf definitions (`opentelemetry-proto`), as a collector does, and
refuses anything a collector would refuse (wrong path, method or content type)."""

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from fakes import free_port

SPAN_KIND_CLIENT = Span.SPAN_KIND_CLIENT


def attribute_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [attribute_value(v) for v in value.array_value.values]
    return None if kind is None else getattr(value, kind)


class OtlpReceiver:
    def __init__(self):
        self.port = free_port()
        self.spans = []  # (resource attributes, span)
        self.metric_exports = []  # ExportMetricsServiceRequest, in arrival order
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                if self.path not in ("/v1/traces", "/v1/metrics"):
                    return self._answer(404, b"")
                if self.headers.get("content-type") != "application/x-protobuf":
                    return self._answer(415, b"")
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest()
                    request.ParseFromString(body)
                    with receiver.lock:
                        receiver.metric_exports.append(request)
                    return self._answer(200, ExportMetricsServiceResponse().SerializeToString())
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        resource = {a.key: attribute_value(a.value) for a in resource_spans.resource.attributes}
                        for scope_spans in resource_spans.scope_spans:
                            for span in scope_spans.spans:
                                receiver.spans.append((resource, span))
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status, body):
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def wait_spans(self, count, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.spans) >= count:
                    return list(self.spans)
            time.sleep(0.05)
        with self.lock:
            return list(self.spans)

    def metric_points(self, name):
        """The data points of metric `name` in the latest export holding it (cumulative:
        the latest is the total)."""
        with self.lock:
            exports = list(self.metric_exports)
        for export in reversed(exports):
            for resource_metrics in export.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name == name:
                            data = getattr(metric, metric.WhichOneof("data"))
                            return list(data.data_points)
        return []

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def attributes(span):
    return {a.key: attribute_value(a.value) for a in span.attributes}
