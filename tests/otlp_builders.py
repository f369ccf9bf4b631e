"""Test-side request builders: OTLP/JSON deliveries and their protobuf twins.

The protobuf twin goes through protobuf's own JSON parser (fine in tests, never in the bridge),
after turning OTLP/JSON's hex ids into the base64 that proto3 JSON expects.
"""

from __future__ import annotations

import base64
import copy
import time

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def to_protobuf(delivery: dict) -> bytes:
    document = copy.deepcopy(delivery)
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for name in ID_FIELDS:
                    if span.get(name):
                        span[name] = base64.b64encode(bytes.fromhex(span[name])).decode()
    return json_format.ParseDict(document, ExportTraceServiceRequest()).SerializeToString()


def span(trace_id: str, span_id: str, name: str, attributes: dict, *, parent: str | None = None,
         start: int | None = None, duration_ns: int = 1_500_000_000) -> dict:
    start = start or time.time_ns()
    body = {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + duration_ns),
            "status": {"code": 1}, "attributes": [{"key": k, "value": any_value(v)} for k, v in attributes.items()]}
    if parent:
        body["parentSpanId"] = parent
    return body


def any_value(value) -> dict:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": any_value(v)} for k, v in value.items()]}}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": value}


def request(*spans: dict, resource: dict | None = None) -> dict:
    attributes = [{"key": k, "value": any_value(v)} for k, v in (resource or {"service.name": "test-app"}).items()]
    return {"resourceSpans": [{"resource": {"attributes": attributes},
                               "scopeSpans": [{"scope": {"name": "tests"}, "spans": list(spans)}]}]}
