"""OTLP/protobuf `ExportTraceServiceRequest` bytes -> `Span`s, read straight off the wire format.

The same result as `otlp_protobuf.parse_protobuf` (which reads through the protobuf runtime) for
every export the runtime accepts, without building a message object per attribute key and value:
the compiled build's protobuf reader (`otlp` picks it), where the generic attribute reads
of those objects were most of the parse. Protobuf's rules are kept: fields in any order, the last of
a repeated scalar wins, a message field seen twice is merged, unknown fields and fields of the wrong
wire type are skipped, strings must be UTF-8. Bytes that are not a request raise `InvalidRequest`;
a span that cannot be read raises `SpanProblem` for that span alone. Must not know transports or
LLM conventions.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Final

from ..errors import InvalidRequest
from ..values import MAX_VALUE_DEPTH
from .otlp_protobuf import _pb_id
from .spans import MAX_RESOURCE_BYTES, ParsedRequest, Span, SpanProblem, bound_resource, scope_text

# Wire types.
# Final: compiled code reads them as constants, not from the module's dict on every use.
VARINT: Final = 0
FIXED64: Final = 1
LEN: Final = 2
START_GROUP: Final = 3
END_GROUP: Final = 4
FIXED32: Final = 5
# Unknown groups nest; the protobuf runtime stops at 100 levels of messages, and so does skipping.
MAX_GROUP_DEPTH: Final = 100
_DOUBLE: Final = struct.Struct("<d")
_UINT64: Final = struct.Struct("<Q")
_U64: Final = (1 << 64) - 1


def _not_a_request(why: str) -> InvalidRequest:
    return InvalidRequest(f"the body is not a protobuf ExportTraceServiceRequest: {why}")


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` (as an unsigned 64-bit value) and the position after it."""
    result = 0
    shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise _not_a_request("a varint is longer than 10 bytes")
    raise _not_a_request("it ends inside a varint")


def _tag(data: bytes, pos: int, end: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        tag, pos = byte, pos + 1
    else:
        tag, pos = _varint(data, pos, end)
    if tag >> 3 == 0 or tag > 0xFFFFFFFF:
        raise _not_a_request("a field number is out of range")
    return tag, pos


def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The end of the length-delimited field whose length is at `pos`, and where its bytes start."""
    byte = data[pos] if pos < end else 0x80
    if byte < 0x80:
        size, pos = byte, pos + 1
    else:
        size, pos = _varint(data, pos, end)
    if size > end - pos:
        raise _not_a_request("a field is longer than what holds it")
    return pos + size, pos


def _skip(data: bytes, pos: int, end: int, tag: int) -> int:
    """The position after the value of an unread field whose tag was just read."""
    wire_type = tag & 7
    if wire_type == VARINT:
        return _varint(data, pos, end)[1]
    if wire_type == FIXED64:
        pos += 8
    elif wire_type == FIXED32:
        pos += 4
    elif wire_type == LEN:
        return _length(data, pos, end)[0]
    elif wire_type == START_GROUP:
        return _skip_group(data, pos, end, tag >> 3)
    else:
        raise _not_a_request(f"wire type {wire_type} where a field starts")
    if pos > end:
        raise _not_a_request("it ends inside a fixed-size field")
    return pos


def _skip_group(data: bytes, pos: int, end: int, field: int) -> int:
    open_fields = [field]
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag & 7 == START_GROUP:
            if len(open_fields) >= MAX_GROUP_DEPTH:
                raise _not_a_request(f"groups are nested deeper than {MAX_GROUP_DEPTH} levels")
            open_fields.append(tag >> 3)
        elif tag & 7 == END_GROUP:
            if tag >> 3 != open_fields.pop():
                raise _not_a_request("a group ends with another field number than it started")
            if not open_fields:
                return pos
        else:
            pos = _skip(data, pos, end, tag)
    raise _not_a_request("it ends inside a group")


def _text(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode()
    except UnicodeDecodeError:
        raise _not_a_request("a string field is not UTF-8") from None


def _fixed64(data: bytes, pos: int, end: int) -> int:
    if pos + 8 > end:
        raise _not_a_request("it ends inside a fixed-size field")
    value: int = _UINT64.unpack_from(data, pos)[0]
    return value


def _int32(value: int) -> int:
    """A varint read as protobuf's int32 (an enum): the low 32 bits, signed."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _any_value(data: bytes, pos: int, end: int, depth: int, more: list[tuple[int, int]] | None = None) -> Any:
    """An AnyValue as plain Python, from data[pos:end] and then each range of `more` (a KeyValue whose
    value field came more than once: protobuf merges them, as if they were one). The last member of
    the oneof wins; an array or kvlist seen again right after itself is merged with it. Nothing is
    copied: a merged or nested value is read where it lies."""
    kind = 0
    value: Any = None
    parts: list[tuple[int, int]] | None = None  # the array or kvlist member, in as many pieces as it came
    next_range = 0
    while True:
        while pos < end:
            tag, pos = _tag(data, pos, end)
            if tag == 0x0A:  # string_value
                stop, start = _length(data, pos, end)
                kind, value, pos = 1, _text(data, start, stop), stop
            elif tag == 0x10:  # bool_value
                number, pos = _varint(data, pos, end)
                kind, value = 2, number != 0
            elif tag == 0x18:  # int_value
                number, pos = _varint(data, pos, end)
                kind, value = 3, number - (1 << 64) if number >= 1 << 63 else number
            elif tag == 0x21:  # double_value
                if pos + 8 > end:
                    raise _not_a_request("it ends inside a fixed-size field")
                kind, value, pos = 4, _DOUBLE.unpack_from(data, pos)[0], pos + 8
            elif tag == 0x2A or tag == 0x32:  # array_value, kvlist_value
                stop, start = _length(data, pos, end)
                member = 5 if tag == 0x2A else 6
                if kind != member or parts is None:
                    parts = []
                parts.append((start, stop))
                kind, pos = member, stop
            elif tag == 0x3A:  # bytes_value
                stop, start = _length(data, pos, end)
                kind, value, pos = 7, data[start:stop], stop
            elif tag == 0x40:  # string_value_strindex (a profiles-only member): read as the runtime path reads it
                pos = _varint(data, pos, end)[1]
                kind, value = 8, b""
            else:
                pos = _skip(data, pos, end, tag)
        if more is None or next_range == len(more):
            break
        pos, end = more[next_range]
        next_range += 1
    if kind < 5:
        return value
    if depth > MAX_VALUE_DEPTH:
        raise SpanProblem(f"an attribute value is nested deeper than {MAX_VALUE_DEPTH} levels")
    if kind >= 7:
        return base64.b64encode(value).decode()
    assert parts is not None
    if kind == 5:
        items: list[Any] = []
        for start, stop in parts:
            _array(data, start, stop, items, depth + 1)
        return items
    found: dict[str, Any] = {}
    for start, stop in parts:
        # A kvlist's values are two levels below it, as `otlp_protobuf` counts them.
        _attributes(data, start, stop, found, depth + 2)
    return found


def _array(data: bytes, pos: int, end: int, items: list[Any], depth: int) -> None:
    """Add the values of an ArrayValue's body data[pos:end] to `items`."""
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag == 0x0A:
            stop, start = _length(data, pos, end)
            items.append(_any_value(data, start, stop, depth))
            pos = stop
        else:
            pos = _skip(data, pos, end, tag)


def _attributes(data: bytes, pos: int, end: int, found: dict[str, Any], depth: int) -> None:
    """Add the KeyValues of a KeyValueList's body data[pos:end] to `found`."""
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag == 0x0A:
            stop, start = _length(data, pos, end)
            _key_value(data, start, stop, found, depth)
            pos = stop
        else:
            pos = _skip(data, pos, end, tag)


def _key_value(data: bytes, pos: int, end: int, found: dict[str, Any], depth: int) -> None:
    key = ""
    value_start = value_stop = -1
    more: list[tuple[int, int]] | None = None  # the value field's further pieces, if it came more than once
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag == 0x0A:
            stop, start = _length(data, pos, end)
            key, pos = _text(data, start, stop), stop
        elif tag == 0x12:
            stop, start = _length(data, pos, end)
            if value_start < 0:
                value_start, value_stop = start, stop
            else:
                if more is None:
                    more = []
                more.append((start, stop))
            pos = stop
        else:
            pos = _skip(data, pos, end, tag)
    found[key] = None if value_start < 0 else _any_value(data, value_start, value_stop, depth, more)


def _event(data: bytes, pos: int, end: int) -> dict[str, Any]:
    name = ""
    time_unix_nano = 0
    attributes: dict[str, Any] = {}
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag == 0x09:
            time_unix_nano, pos = _fixed64(data, pos, end), pos + 8
        elif tag == 0x12:
            stop, start = _length(data, pos, end)
            name, pos = _text(data, start, stop), stop
        elif tag == 0x1A:
            stop, start = _length(data, pos, end)
            _key_value(data, start, stop, attributes, 1)
            pos = stop
        else:
            pos = _skip(data, pos, end, tag)
    return {"name": name, "time_unix_nano": time_unix_nano, "attributes": attributes}


def _link(data: bytes, pos: int, end: int) -> dict[str, Any]:
    trace = (0, 0)
    span = (0, 0)
    attributes: dict[str, Any] = {}
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag & 7 != LEN:
            pos = _skip(data, pos, end, tag)
            continue
        stop, start = _length(data, pos, end)
        if tag == 0x0A:
            trace = (start, stop)
        elif tag == 0x12:
            span = (start, stop)
        elif tag == 0x22:
            _key_value(data, start, stop, attributes, 1)
        pos = stop
    return {"trace_id": _pb_id(data[trace[0]:trace[1]], 16, "link traceId", required=True),
            "span_id": _pb_id(data[span[0]:span[1]], 8, "link spanId", required=True),
            "attributes": attributes}


def _status(data: bytes, pos: int, end: int, message: str, code: int) -> tuple[str, int]:
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag == 0x12:
            stop, start = _length(data, pos, end)
            message, pos = _text(data, start, stop), stop
        elif tag == 0x18:
            number, pos = _varint(data, pos, end)
            code = _int32(number)
        else:
            pos = _skip(data, pos, end, tag)
    return message, code


def _span(data: bytes, pos: int, end: int, resource: dict[str, Any], scope_name: str, scope_version: str) -> Span:
    trace = (0, 0)
    span = (0, 0)
    parent = (0, 0)
    name = ""
    kind = 0
    start_time = end_time = 0
    status_code = 0
    status_message = ""
    attributes: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag & 7 == LEN:
            stop, start = _length(data, pos, end)
            if tag == 0x4A:  # attributes, the most frequent field
                _key_value(data, start, stop, attributes, 1)
            elif tag == 0x0A:
                trace = (start, stop)
            elif tag == 0x12:
                span = (start, stop)
            elif tag == 0x22:
                parent = (start, stop)
            elif tag == 0x2A:
                name = _text(data, start, stop)
            elif tag == 0x5A:
                events.append(_event(data, start, stop))
            elif tag == 0x6A:
                links.append(_link(data, start, stop))
            elif tag == 0x7A:  # status: merged field by field when seen twice, as any message field
                status_message, status_code = _status(data, start, stop, status_message, status_code)
            pos = stop
        elif tag == 0x30:
            number, pos = _varint(data, pos, end)
            kind = _int32(number)
        elif tag == 0x39:
            start_time, pos = _fixed64(data, pos, end), pos + 8
        elif tag == 0x41:
            end_time, pos = _fixed64(data, pos, end), pos + 8
        else:
            pos = _skip(data, pos, end, tag)
    return Span(
        trace_id=_pb_id(data[trace[0]:trace[1]], 16, "traceId", required=True),
        span_id=_pb_id(data[span[0]:span[1]], 8, "spanId", required=True),
        parent_span_id=_pb_id(data[parent[0]:parent[1]], 8, "parentSpanId", required=False),
        name=name,
        kind=kind,
        start_time_unix_nano=start_time,
        end_time_unix_nano=end_time,
        status_code=status_code,
        status_message=status_message,
        attributes=attributes,
        events=events,
        links=links,
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
    )


def _fields(data: bytes, pos: int, end: int, wanted: int) -> list[tuple[int, int]]:
    """Where each length-delimited field with tag `wanted` starts and ends in data[pos:end], in order."""
    found: list[tuple[int, int]] = []
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag == wanted:
            stop, start = _length(data, pos, end)
            found.append((start, stop))
            pos = stop
        else:
            pos = _skip(data, pos, end, tag)
    return found


def _resource(data: bytes, pieces: list[tuple[int, int]]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for start, stop in pieces:
        for kv_start, kv_stop in _fields(data, start, stop, 0x0A):
            _key_value(data, kv_start, kv_stop, attributes, 1)
    return attributes


def _scope(data: bytes, pieces: list[tuple[int, int]]) -> tuple[str, str]:
    name = version = ""
    for start, stop in pieces:
        pos = start
        while pos < stop:
            tag, pos = _tag(data, pos, stop)
            if tag == 0x0A or tag == 0x12:
                text_stop, text_start = _length(data, pos, stop)
                if tag == 0x0A:
                    name = _text(data, text_start, text_stop)
                else:
                    version = _text(data, text_start, text_stop)
                pos = text_stop
            else:
                pos = _skip(data, pos, stop, tag)
    return scope_text(name), scope_text(version)


def parse_wire(body: bytes, *, max_resource_bytes: int = MAX_RESOURCE_BYTES) -> ParsedRequest:
    """Parse a binary `ExportTraceServiceRequest`. Raises InvalidRequest if the bytes are not one."""
    parsed = ParsedRequest()
    for rs_index, (rs_start, rs_stop) in enumerate(_fields(body, 0, len(body), 0x0A)):
        _resource_spans(body, rs_start, rs_stop, f"resourceSpans[{rs_index}]", parsed, max_resource_bytes)
    return parsed


def _resource_spans(data: bytes, pos: int, end: int, where: str, parsed: ParsedRequest,
                    max_resource_bytes: int) -> None:
    resource_pieces: list[tuple[int, int]] = []
    scope_spans: list[tuple[int, int]] = []
    while pos < end:
        tag, pos = _tag(data, pos, end)
        if tag == 0x0A or tag == 0x12:
            stop, start = _length(data, pos, end)
            (resource_pieces if tag == 0x0A else scope_spans).append((start, stop))
            pos = stop
        else:
            pos = _skip(data, pos, end, tag)
    # Each scope's spans, and its scope pieces, found before any is read: fields come in any order.
    scopes = [(_fields(data, start, stop, 0x0A), _fields(data, start, stop, 0x12)) for start, stop in scope_spans]
    try:
        resource = _resource(data, resource_pieces)
    except SpanProblem as exc:
        parsed.reject(f"{where}.resource: {exc}", sum(len(spans) for _, spans in scopes))
        return
    resource, dropped = bound_resource(resource, max_resource_bytes)
    if dropped:
        parsed.warnings.append(f"{where}.resource: {dropped} attribute(s) left out of the records "
                               f"to stay under {max_resource_bytes} bytes")
    for ss_index, (scope_pieces, spans) in enumerate(scopes):
        scope_name, scope_version = _scope(data, scope_pieces)
        for index, (start, stop) in enumerate(spans):
            try:
                parsed.spans.append(_span(data, start, stop, resource, scope_name, scope_version))
            except SpanProblem as exc:
                parsed.reject(f"{where}.scopeSpans[{ss_index}].spans[{index}]: {exc}")
