"""OTLP/protobuf export requests (an HTTP body or a gRPC message alike) -> `Span`s.

Total like `otlp_json`: bytes that are not an export request raise `InvalidRequest`; a bad span,
id, value, resource or scope rejects only the spans it concerns. Must not know transports.
"""

from __future__ import annotations

import base64
from typing import Any, Final, Literal, overload

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

from ..errors import InvalidRequest
from ..values import MAX_VALUE_DEPTH
from .spans import MAX_RESOURCE_BYTES, ParsedRequest, Span, SpanProblem, bound_resource, scope_text

_SCALARS: Final = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def _pb_value(value: AnyValue, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind is None:
        return None
    if depth > MAX_VALUE_DEPTH:
        raise SpanProblem(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
    if kind == "array_value":
        return [_pb_value(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values, depth + 1)
    return base64.b64encode(value.bytes_value).decode()  # bytes_value


def _pb_attributes(items: Any, depth: int = 0) -> dict[str, Any]:
    found = {}
    for item in items:
        value = item.value
        kind = value.WhichOneof("value")
        # Scalars (nearly every attribute) are read here: a call per attribute is a third of parsing.
        found[item.key] = getattr(value, kind) if kind in _SCALARS else _pb_value(value, depth + 1)
    return found


@overload
def _pb_id(raw: bytes, size: int, what: str, *, required: Literal[True]) -> str: ...
@overload
def _pb_id(raw: bytes, size: int, what: str, *, required: bool) -> str | None: ...


def _pb_id(raw: bytes, size: int, what: str, *, required: bool) -> str | None:
    if not raw:
        if required:
            raise SpanProblem(f"{what} is missing")
        return None
    if len(raw) != size:
        raise SpanProblem(f"{what} has {len(raw)} bytes, expected {size}")
    if required and not any(raw):
        raise SpanProblem(f"{what} is all zeros")
    return raw.hex()


def _pb_span(raw: SpanMessage, resource: dict[str, Any], scope_name: str, scope_version: str) -> Span:
    return Span(
        trace_id=_pb_id(raw.trace_id, 16, "traceId", required=True),
        span_id=_pb_id(raw.span_id, 8, "spanId", required=True),
        parent_span_id=_pb_id(raw.parent_span_id, 8, "parentSpanId", required=False),
        name=raw.name,
        kind=raw.kind,
        start_time_unix_nano=raw.start_time_unix_nano,
        end_time_unix_nano=raw.end_time_unix_nano,
        status_code=raw.status.code,
        status_message=raw.status.message,
        attributes=_pb_attributes(raw.attributes),
        events=[{"name": event.name, "time_unix_nano": event.time_unix_nano,
                 "attributes": _pb_attributes(event.attributes)} for event in raw.events],
        links=[{"trace_id": _pb_id(link.trace_id, 16, "link traceId", required=True),
                "span_id": _pb_id(link.span_id, 8, "link spanId", required=True),
                "attributes": _pb_attributes(link.attributes)} for link in raw.links],
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
    )


def protobuf_request(message_class: Any, body: bytes) -> Any:
    """`message_class` read from `body`. Raises InvalidRequest if the bytes are not one."""
    try:
        return message_class.FromString(body)
    except DecodeError as exc:
        raise InvalidRequest(f"the body is not a protobuf {message_class.DESCRIPTOR.name}: {exc}") from None


def parse_protobuf(body: bytes, *, max_resource_bytes: int = MAX_RESOURCE_BYTES) -> ParsedRequest:
    """Parse a binary `ExportTraceServiceRequest`. Raises InvalidRequest if the bytes are not one."""
    request = protobuf_request(ExportTraceServiceRequest, body)
    parsed = ParsedRequest()
    for rs_index, resource_spans in enumerate(request.resource_spans):
        where = f"resourceSpans[{rs_index}]"
        try:
            resource = _pb_attributes(resource_spans.resource.attributes)
        except SpanProblem as exc:
            parsed.reject(f"{where}.resource: {exc}",
                          sum(len(scope_spans.spans) for scope_spans in resource_spans.scope_spans))
            continue
        resource, dropped = bound_resource(resource, max_resource_bytes)
        if dropped:
            parsed.warnings.append(f"{where}.resource: {dropped} attribute(s) left out of the records "
                                   f"to stay under {max_resource_bytes} bytes")
        for ss_index, scope_spans in enumerate(resource_spans.scope_spans):
            scope_name, scope_version = scope_text(scope_spans.scope.name), scope_text(scope_spans.scope.version)
            for index, raw in enumerate(scope_spans.spans):
                try:
                    parsed.spans.append(_pb_span(raw, resource, scope_name, scope_version))
                except SpanProblem as exc:
                    parsed.reject(f"{where}.scopeSpans[{ss_index}].spans[{index}]: {exc}")
    return parsed
