"""OTLP/JSON export requests -> `Span`s: parsed with orjson, hex ids, int64 as a number or a
string, enums as numbers or names, lowerCamelCase or proto field names, unknown fields ignored.

Parsing is total: a body that is not an export request raises `InvalidRequest` (400); anything
wrong below the request (a span, its ids, an attribute value, its resource or scope) rejects only
the spans it concerns, counted in `rejected_spans` with the first problem, and the rest goes on.
No other exception leaves this module for any input. A resource larger than `max_resource_bytes`
is cut once here, so that records sharing it cannot multiply it. Must not use protobuf's
`json_format`: it is ~20x slower than orjson and treats hex ids as base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final, Literal, overload

import orjson
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status as StatusMessage

from ..errors import InvalidRequest
from ..values import INT64_MAX, INT64_MIN, MAX_VALUE_DEPTH, UINT64_MAX, bounded_int
from .spans import (
    INT32_MAX,
    INT32_MIN,
    MAX_RESOURCE_BYTES,
    ParsedRequest,
    Span,
    SpanProblem,
    bound_resource,
    scope_text,
)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _integer(value: Any, what: str, low: int, high: int) -> int:
    try:
        return bounded_int(value, low, high)
    except ValueError as exc:
        raise SpanProblem(f"{what}: {exc}") from None


def _uint64(value: Any, what: str) -> int:
    return 0 if value is None or value == "" else _integer(value, what, 0, UINT64_MAX)


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpanProblem(f"{what} must be a string")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpanProblem(f"{what} must be an object")
    return value


def _array(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpanProblem(f"{what} must be an array")
    return value


def _json_string(inner: Any, depth: int) -> str:
    if isinstance(inner, (str, int, float)) and not isinstance(inner, bool):
        return inner if isinstance(inner, str) else str(inner)
    raise SpanProblem("stringValue must be a string")


def _json_int(inner: Any, depth: int) -> int:
    return _integer(inner, "intValue", INT64_MIN, INT64_MAX)


def _json_double(inner: Any, depth: int) -> float:
    if isinstance(inner, bool) or not isinstance(inner, (int, float, str)) or (isinstance(inner, str)
                                                                               and len(inner) > 64):
        raise SpanProblem("doubleValue must be a number")
    try:
        return float(inner)
    except (ValueError, OverflowError):
        raise SpanProblem(f"doubleValue {inner!r} is not a number") from None


def _json_bool(inner: Any, depth: int) -> bool:
    if isinstance(inner, bool):
        return inner
    if isinstance(inner, str) and inner.lower() in ("true", "false"):
        return inner.lower() == "true"
    raise SpanProblem("boolValue must be true or false")


def _json_array(inner: Any, depth: int) -> list[Any]:
    values = _array(_object(inner, "arrayValue").get("values"), "arrayValue.values")
    return [_json_value(item, depth + 1) for item in values]


def _json_kvlist(inner: Any, depth: int) -> dict[str, Any]:
    return _json_attributes(_object(inner, "kvlistValue").get("values"), depth + 1)


def _json_bytes(inner: Any, depth: int) -> str:
    if not isinstance(inner, str):
        raise SpanProblem("bytesValue must be a base64 string")
    try:
        raw = base64.b64decode(inner.replace("-", "+").replace("_", "/") + "==")
    except (binascii.Error, ValueError):
        raise SpanProblem("bytesValue is not base64") from None
    return base64.b64encode(raw).decode()


# AnyValue's one field -> how to read it (lowerCamelCase as OTLP/JSON senders write it, and the
# proto field names that proto3 JSON parsers also accept).
_JSON_VALUE_READERS: Final[dict[str, Any]] = {}
for _names, _reader in (
    (("stringValue", "string_value"), _json_string),
    (("intValue", "int_value"), _json_int),
    (("doubleValue", "double_value"), _json_double),
    (("boolValue", "bool_value"), _json_bool),
    (("arrayValue", "array_value"), _json_array),
    (("kvlistValue", "kvlist_value"), _json_kvlist),
    (("bytesValue", "bytes_value"), _json_bytes),
):
    for _name in _names:
        _JSON_VALUE_READERS[_name] = _reader


def _json_value(value: Any, depth: int) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpanProblem("an attribute value must be an AnyValue object")
    if depth > MAX_VALUE_DEPTH:
        raise SpanProblem(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
    for key, inner in value.items():
        reader = _JSON_VALUE_READERS.get(key)
        if reader is not None:
            return None if inner is None else reader(inner, depth)
    return None  # an empty AnyValue, or one of a kind this bridge does not know: unset


def _json_attributes(items: Any, depth: int = 0) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for item in _array(items, "attributes"):
        if type(item) is not dict or type(key := item.get("key")) is not str:
            raise SpanProblem("an attribute must be an object with a string key")
        value = item.get("value")
        # Most values are plain strings: read them without the general dispatch.
        if type(value) is dict and len(value) == 1 and type(inner := value.get("stringValue")) is str:
            attributes[key] = inner
        else:
            attributes[key] = _json_value(value, depth + 1)
    return attributes


_HEX_IDS: Final = {16: re.compile(r"[0-9a-fA-F]{32}"), 8: re.compile(r"[0-9a-fA-F]{16}")}


@overload
def _hex_id(value: Any, size: int, what: str, *, required: Literal[True]) -> str: ...
@overload
def _hex_id(value: Any, size: int, what: str, *, required: bool) -> str | None: ...


def _hex_id(value: Any, size: int, what: str, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise SpanProblem(f"{what} is missing")
        return None
    if not isinstance(value, str) or not _HEX_IDS[size].fullmatch(value):
        raise SpanProblem(f"{what} {_short(value)} must be {size * 2} hex digits")
    text = value.lower()
    if required and text.count("0") == len(text):
        raise SpanProblem(f"{what} is all zeros")
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _enum(value: Any, enum: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
        try:
            return enum.Value(value)
        except ValueError:
            raise SpanProblem(f"{what} {_short(value)} is not a known value") from None
    return _integer(value, what, INT32_MIN, INT32_MAX)


def _json_event(raw: Any) -> dict[str, Any]:
    event = _object(raw, "an event")
    return {"name": _text(event.get("name"), "event name"),
            "time_unix_nano": _uint64(_get(event, "timeUnixNano", "time_unix_nano"), "event timeUnixNano"),
            "attributes": _json_attributes(event.get("attributes"))}


def _json_link(raw: Any) -> dict[str, Any]:
    link = _object(raw, "a link")
    return {"trace_id": _hex_id(_get(link, "traceId", "trace_id"), 16, "link traceId", required=True),
            "span_id": _hex_id(_get(link, "spanId", "span_id"), 8, "link spanId", required=True),
            "attributes": _json_attributes(link.get("attributes"))}


def _json_span(raw: dict[str, Any], resource: dict[str, Any], scope_name: str, scope_version: str) -> Span:
    status = _object(raw.get("status"), "status")
    return Span(
        trace_id=_hex_id(_get(raw, "traceId", "trace_id"), 16, "traceId", required=True),
        span_id=_hex_id(_get(raw, "spanId", "span_id"), 8, "spanId", required=True),
        parent_span_id=_hex_id(_get(raw, "parentSpanId", "parent_span_id"), 8, "parentSpanId", required=False),
        name=_text(raw.get("name"), "name"),
        kind=_enum(raw.get("kind"), SpanMessage.SpanKind, "kind"),
        start_time_unix_nano=_uint64(_get(raw, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
        end_time_unix_nano=_uint64(_get(raw, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
        status_code=_enum(status.get("code"), StatusMessage.StatusCode, "status.code"),
        status_message=_text(status.get("message"), "status.message"),
        attributes=_json_attributes(raw.get("attributes")),
        events=[_json_event(event) for event in _array(raw.get("events"), "events")],
        links=[_json_link(link) for link in _array(raw.get("links"), "links")],
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
    )


def _countable_spans(resource_spans: Any) -> int:
    """How many spans a part that cannot be read holds, as far as that can be told."""
    if not isinstance(resource_spans, dict):
        return 0
    scope_spans = _get(resource_spans, "scopeSpans", "scope_spans")
    if not isinstance(scope_spans, list):
        return 0
    return sum(len(spans) for item in scope_spans if isinstance(item, dict)
               and isinstance(spans := item.get("spans"), list))


def json_request_parts(body: bytes, camel: str, snake: str) -> list[Any]:
    """The top-level array (`resourceSpans`, `resourceLogs`) of an OTLP/JSON request; an empty body
    is an empty request. Raises InvalidRequest if the body is not such a request."""
    if not body.strip():
        return []
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the request must be a JSON object")
    parts = _get(document, camel, snake)
    if not isinstance(parts, (list, type(None))):
        raise InvalidRequest(f"request.{camel} must be an array")
    return parts or []


def parse_json(body: bytes, *, max_resource_bytes: int = MAX_RESOURCE_BYTES) -> ParsedRequest:
    """Parse an OTLP/JSON `ExportTraceServiceRequest`. Raises InvalidRequest if the body is not one."""
    all_resource_spans = json_request_parts(body, "resourceSpans", "resource_spans")
    parsed = ParsedRequest()
    for rs_index, resource_spans in enumerate(all_resource_spans or ()):
        where = f"resourceSpans[{rs_index}]"
        try:
            resource_spans = _object(resource_spans, where)
            resource_raw = _object(resource_spans.get("resource"), "resource")
            resource = _json_attributes(resource_raw.get("attributes"))
            all_scope_spans = _array(_get(resource_spans, "scopeSpans", "scope_spans"), "scopeSpans")
        except SpanProblem as exc:
            parsed.reject(f"{where}: {exc}", _countable_spans(resource_spans))
            continue
        resource, dropped = bound_resource(resource, max_resource_bytes)
        if dropped:
            parsed.warnings.append(f"{where}.resource: {dropped} attribute(s) left out of the records "
                                   f"to stay under {max_resource_bytes} bytes")
        for ss_index, scope_spans in enumerate(all_scope_spans):
            scope_where = f"{where}.scopeSpans[{ss_index}]"
            try:
                scope_spans = _object(scope_spans, scope_where)
                spans = _array(scope_spans.get("spans"), "spans")
                scope = _object(scope_spans.get("scope"), "scope")
                scope_name = scope_text(_text(scope.get("name"), "scope.name"))
                scope_version = scope_text(_text(scope.get("version"), "scope.version"))
            except SpanProblem as exc:
                sent = scope_spans.get("spans") if isinstance(scope_spans, dict) else None
                parsed.reject(f"{scope_where}: {exc}", len(sent) if isinstance(sent, list) else 0)
                continue
            for index, raw in enumerate(spans):
                try:
                    parsed.spans.append(_json_span(_object(raw, "a span"), resource, scope_name, scope_version))
                except SpanProblem as exc:
                    parsed.reject(f"{scope_where}.spans[{index}]: {exc}")
    return parsed
