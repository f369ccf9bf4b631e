"""OTLP wire formats: export requests in, responses and `google.rpc.Status` bodies out.

OTLP/JSON (parsed with orjson, hex ids, int64 as number or string, unknown fields ignored) and
OTLP/protobuf (HTTP body or gRPC message) both become the same list of `Span`s, the one
normalised form every transport hands to `ingest`. A span that cannot be read (bad id length,
bad int64) is counted as rejected, the rest of the request goes on. This module must not know
about LLM conventions (that is `decode`) nor touch sockets. Never use protobuf's `json_format`
here: it is ~20x slower than orjson and treats hex ids as base64.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status as StatusMessage

from .errors import InvalidRequest

JSON = "json"
PROTOBUF = "protobuf"
CONTENT_TYPES = {JSON: "application/json", PROTOBUF: "application/x-protobuf"}
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


@dataclass(slots=True)
class Span:
    """One OTLP span with its resource and scope, values already plain Python (str, int, float, ...)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str


@dataclass(slots=True)
class ParsedRequest:
    spans: list[Span] = field(default_factory=list)
    rejected_spans: int = 0
    first_problem: str | None = None

    def reject(self, problem: str) -> None:
        self.rejected_spans += 1
        if self.first_problem is None:
            self.first_problem = problem


class SpanProblem(ValueError):
    """One span cannot be read; it is rejected and counted, the request goes on."""


# ---------------------------------------------------------------------------------------------
# OTLP/JSON


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SpanProblem(f"{what} {value!r} is not an integer")
    try:
        number = int(value)
    except ValueError:
        raise SpanProblem(f"{what} {value!r} is not an integer") from None
    if not low <= number <= high:
        raise SpanProblem(f"{what} {value!r} is out of range")
    return number


def _int64(value: Any, what: str) -> int:
    return _integer(value, what, INT64_MIN, INT64_MAX)


def _uint64(value: Any, what: str) -> int:
    return 0 if value is None or value == "" else _integer(value, what, 0, UINT64_MAX)


def _double(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpanProblem(f"doubleValue {value!r} is not a number") from None


def _json_string(inner: Any) -> str:
    return inner if isinstance(inner, str) else str(inner)


def _json_bool(inner: Any) -> bool:
    return inner if isinstance(inner, bool) else str(inner).lower() == "true"


def _json_bytes(inner: Any) -> str:
    try:
        raw = base64.b64decode(str(inner).replace("-", "+").replace("_", "/") + "==")
    except binascii.Error:
        raise SpanProblem("bytesValue is not base64") from None
    return base64.b64encode(raw).decode()


# AnyValue's one field -> how to read it (lowerCamelCase as OTLP/JSON senders write it, and the
# proto field names that proto3 JSON parsers also accept).
_JSON_VALUE_READERS: dict[str, Any] = {}
for _names, _reader in (
    (("stringValue", "string_value"), _json_string),
    (("intValue", "int_value"), lambda inner: _int64(inner, "intValue")),
    (("doubleValue", "double_value"), lambda inner: _double(inner)),
    (("boolValue", "bool_value"), _json_bool),
    (("arrayValue", "array_value"), lambda inner: [_json_value(item) for item in (inner or {}).get("values") or ()]),
    (("kvlistValue", "kvlist_value"), lambda inner: _json_attributes((inner or {}).get("values"))),
    (("bytesValue", "bytes_value"), _json_bytes),
):
    for _name in _names:
        _JSON_VALUE_READERS[_name] = _reader


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    for key, inner in value.items():
        reader = _JSON_VALUE_READERS.get(key)
        if reader is not None:
            return reader(inner)
    return None


def _json_attributes(items: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for item in items or ():
        if type(item) is not dict or type(key := item.get("key")) is not str:
            continue
        value = item.get("value")
        # Most values are plain strings: read them without the general dispatch.
        if type(value) is dict and len(value) == 1 and type(inner := value.get("stringValue")) is str:
            attributes[key] = inner
        else:
            attributes[key] = _json_value(value)
    return attributes


def _hex_id(value: Any, size: int, what: str, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise SpanProblem(f"{what} is missing")
        return None
    text = str(value).lower()
    if len(text) != size * 2:
        raise SpanProblem(f"{what} {value!r} must be {size * 2} hex digits")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SpanProblem(f"{what} {value!r} is not hex") from None
    if required and not any(raw):
        raise SpanProblem(f"{what} is all zeros")
    return text


def _enum(value: Any, enum: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        try:
            return enum.Value(value)
        except ValueError:
            raise SpanProblem(f"{what} {value!r} is not a known value") from None
    return _int64(value, what)


def _json_span(raw: dict[str, Any], resource: dict[str, Any], scope: dict[str, Any]) -> Span:
    status = raw.get("status") or {}
    return Span(
        trace_id=_hex_id(_get(raw, "traceId", "trace_id"), 16, "traceId", required=True),
        span_id=_hex_id(_get(raw, "spanId", "span_id"), 8, "spanId", required=True),
        parent_span_id=_hex_id(_get(raw, "parentSpanId", "parent_span_id"), 8, "parentSpanId", required=False),
        name=str(raw.get("name") or ""),
        kind=_enum(raw.get("kind"), SpanMessage.SpanKind, "kind"),
        start_time_unix_nano=_uint64(_get(raw, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
        end_time_unix_nano=_uint64(_get(raw, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
        status_code=_enum(status.get("code"), StatusMessage.StatusCode, "status.code"),
        status_message=str(status.get("message") or ""),
        attributes=_json_attributes(raw.get("attributes")),
        events=[{
            "name": str(event.get("name") or ""),
            "time_unix_nano": _uint64(_get(event, "timeUnixNano", "time_unix_nano"), "event timeUnixNano"),
            "attributes": _json_attributes(event.get("attributes")),
        } for event in raw.get("events") or () if isinstance(event, dict)],
        links=[{
            "trace_id": _hex_id(_get(link, "traceId", "trace_id"), 16, "link traceId", required=True),
            "span_id": _hex_id(_get(link, "spanId", "span_id"), 8, "link spanId", required=True),
            "attributes": _json_attributes(link.get("attributes")),
        } for link in raw.get("links") or () if isinstance(link, dict)],
        resource=resource,
        scope_name=str(scope.get("name") or ""),
        scope_version=str(scope.get("version") or ""),
    )


def _list(obj: Any, camel: str, snake: str, where: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{where} must be a JSON object")
    value = _get(obj, camel, snake)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}.{camel} must be an array")
    return value


def parse_json(body: bytes) -> ParsedRequest:
    """Parse an OTLP/JSON `ExportTraceServiceRequest`. Raises InvalidRequest if the body is not one."""
    if not body.strip():
        return ParsedRequest()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    parsed = ParsedRequest()
    for rs_index, resource_spans in enumerate(_list(document, "resourceSpans", "resource_spans", "request")):
        where = f"resourceSpans[{rs_index}]"
        resource_raw = resource_spans.get("resource") if isinstance(resource_spans, dict) else None
        try:
            resource = _json_attributes((resource_raw or {}).get("attributes"))
        except SpanProblem as exc:
            raise InvalidRequest(f"{where}.resource: {exc}") from None
        for ss_index, scope_spans in enumerate(_list(resource_spans, "scopeSpans", "scope_spans", where)):
            scope_where = f"{where}.scopeSpans[{ss_index}]"
            spans = _list(scope_spans, "spans", "spans", scope_where)
            scope = scope_spans.get("scope") or {}
            for index, raw in enumerate(spans):
                if not isinstance(raw, dict):
                    parsed.reject(f"{scope_where}.spans[{index}] is not an object")
                    continue
                try:
                    parsed.spans.append(_json_span(raw, resource, scope if isinstance(scope, dict) else {}))
                except SpanProblem as exc:
                    parsed.reject(f"{scope_where}.spans[{index}]: {exc}")
    return parsed


# ---------------------------------------------------------------------------------------------
# OTLP/protobuf (HTTP body and gRPC message alike)


def _pb_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _pb_attributes(items: Any) -> dict[str, Any]:
    return {item.key: _pb_value(item.value) for item in items}


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


def _pb_span(raw: SpanMessage, resource: dict[str, Any], scope: Any) -> Span:
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
        scope_name=scope.name,
        scope_version=scope.version,
    )


def parse_protobuf(body: bytes) -> ParsedRequest:
    """Parse a binary `ExportTraceServiceRequest`. Raises InvalidRequest if the bytes are not one."""
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise InvalidRequest(f"the body is not a protobuf ExportTraceServiceRequest: {exc}") from None
    parsed = ParsedRequest()
    for rs_index, resource_spans in enumerate(request.resource_spans):
        resource = _pb_attributes(resource_spans.resource.attributes)
        for ss_index, scope_spans in enumerate(resource_spans.scope_spans):
            for index, raw in enumerate(scope_spans.spans):
                try:
                    parsed.spans.append(_pb_span(raw, resource, scope_spans.scope))
                except SpanProblem as exc:
                    parsed.reject(f"resourceSpans[{rs_index}].scopeSpans[{ss_index}].spans[{index}]: {exc}")
    return parsed


def parse(body: bytes, encoding: str) -> ParsedRequest:
    return parse_json(body) if encoding == JSON else parse_protobuf(body)


# ---------------------------------------------------------------------------------------------
# Responses


def encode_response(rejected_spans: int, message: str | None, encoding: str) -> bytes:
    """`ExportTraceServiceResponse`; partial_success only when something was rejected or warned."""
    if encoding == JSON:
        if not rejected_spans and not message:
            return b"{}"
        return orjson.dumps({"partialSuccess": {"rejectedSpans": str(rejected_spans),
                                                "errorMessage": message or ""}})
    response = ExportTraceServiceResponse()
    if rejected_spans or message:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected_spans, error_message=message or ""))
    return response.SerializeToString()


def status_message(code: grpc.StatusCode, message: str, retry_after_seconds: int | None) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if retry_after_seconds is not None:
        detail = AnyMessage()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_seconds)))
        status.details.append(detail)
    return status


def encode_status(code: grpc.StatusCode, message: str, encoding: str,
                  retry_after_seconds: int | None = None) -> bytes:
    """A `google.rpc.Status` body in the request's encoding (OTLP spec, failure responses)."""
    if encoding == PROTOBUF:
        return status_message(code, message, retry_after_seconds).SerializeToString()
    body: dict[str, Any] = {"code": code.value[0], "message": message}
    if retry_after_seconds is not None:
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{retry_after_seconds}s"}]
    return orjson.dumps(body)
