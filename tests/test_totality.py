"""Parse, decode, key rendering and inflation are total: property-based tests (hypothesis) feed
thousands of generated inputs, shaped like OTLP with any JSON type in any place, and accept no
exception but the documented ones. Every record that comes out must encode as JSON and render a
key within S3's and file systems' limits.

The number of examples is the hypothesis profile's: `ci` (the default, bounded) or `fuzz`
(`HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_totality.py` for a long run)."""

from __future__ import annotations

import gzip
import os
import zlib

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

from otel_s3_bridge.decode.compression import inflate
from otel_s3_bridge.decode.conventions import FIELD_ORDER
from otel_s3_bridge.decode.records import OPERATION_DETAILS_EVENT, decode
from otel_s3_bridge.lake.encode import encode_json
from otel_s3_bridge.errors import InvalidRequest, PayloadTooLarge
from otel_s3_bridge.lake.keys import compile_template, object_key
from otel_s3_bridge.decode import otlp_protobuf, otlp_wire
from otel_s3_bridge.decode.otlp import Span, parse_json, parse_protobuf
from otel_s3_bridge.decode.otlp_logs import parse_logs_json, parse_logs_protobuf
from otel_s3_bridge.decode.prepare import completed_object

settings.register_profile("ci", max_examples=600, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100000")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NOW = 1795000000000000000
TEMPLATE = compile_template("{prefix}/{apiKeyName}/{date}")

# --- generators -----------------------------------------------------------------------------------

# Every attribute key some convention reads, plus the flattened and metadata shapes.
KNOWN_KEYS = sorted({key for convention in FIELD_ORDER for keys in convention.fields.values() for key in keys}
                    | {key for convention in FIELD_ORDER for key in convention.llm_keys + convention.finish_reason_keys
                       + convention.status_message_keys + convention.metadata_json_keys
                       + convention.json_object_keys}
                    | {"gen_ai.prompt", "gen_ai.completion", "span.input", "span.output", "gen_ai.input.messages",
                       "gen_ai.output.messages", "gen_ai.system_instructions", "ai.prompt.messages", "ai.prompt",
                       "ai.response.text", "ai.response.toolCalls", "ai.response.reasoning", "input.value",
                       "output.value", "langfuse.observation.input", "langfuse.observation.output",
                       "langfuse.observation.completion_start_time", "openinference.span.kind",
                       "langfuse.observation.type", "trace.metadata.openrouter.first_token_ms",
                       "gen_ai.response.time_to_first_chunk", "ai.response.msToFirstChunk", "metadata"})
FLATTENED_HEADS = ["llm.input_messages", "llm.output_messages", "gen_ai.prompt", "gen_ai.completion"]
METADATA_HEADS = ["trace.metadata", "traceloop.association.properties", "ai.telemetry.metadata",
                  "langfuse.trace.metadata", "langfuse.observation.metadata"]
SEGMENTS = st.sampled_from(["0", "1", "2", "²", "٣", "00", "message", "role", "content", "contents",
                            "tool_calls", "tool_call", "function", "name", "arguments", "id", "finish_reason",
                            "message_content", "text", ""])
TEXT = st.text(max_size=30) | st.sampled_from(["", ".", "..", "user", "assistant", "\u202e", "\x85", "😀" * 5])
INTEGERS = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what the wire can carry (intValue is int64)
SCALARS = st.none() | st.booleans() | INTEGERS | st.floats(allow_nan=True) | TEXT


def json_values(max_leaves: int = 12):
    return st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(TEXT | SEGMENTS, children, max_size=4), max_leaves=max_leaves)


def deep(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


# An attribute value as the bridge holds it after parsing (scalars, lists, maps), or a string that
# holds any JSON document, as conventions send prompts and completions.
ATTRIBUTE_VALUES = (json_values()
                    | json_values().map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()
                                        if _encodable(v) else "x")
                    | st.integers(0, 400).map(lambda depth: orjson.dumps(deep(1, min(depth, 250))).decode())
                    | st.sampled_from(["99999999999999999999", "-1e400", "NaN", "1e308", "2026-01-01T00:00:00",
                                       "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "{", "[1,"]))


def _encodable(value) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        return True
    except orjson.JSONEncodeError:
        return False


ATTRIBUTE_KEYS = (st.sampled_from(KNOWN_KEYS)
                  | st.builds(lambda head, parts: ".".join([head, *parts]), st.sampled_from(FLATTENED_HEADS),
                              st.lists(SEGMENTS, min_size=1, max_size=6))
                  | st.builds(lambda head, rest: f"{head}.{rest}", st.sampled_from(METADATA_HEADS + ["trace.metadata.openrouter"]), TEXT)
                  | st.just(".".join(["a"] * 2000))
                  | TEXT)
ATTRIBUTES = st.dictionaries(ATTRIBUTE_KEYS, ATTRIBUTE_VALUES, max_size=12)
HEX = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)
EVENTS = st.lists(st.fixed_dictionaries({
    "name": st.sampled_from(["gen_ai.user.message", "gen_ai.system.message", "gen_ai.tool.message", "gen_ai.choice",
                             "gen_ai.content.prompt", "gen_ai.content.completion", "exception"]) | TEXT,
    "time_unix_nano": st.integers(0, 2**64 - 1),
    "attributes": st.dictionaries(st.sampled_from(["gen_ai.event.content", "gen_ai.prompt", "gen_ai.completion",
                                                   "role", "content", "message", "tool_calls", "id", "finish_reason"])
                                  | TEXT, ATTRIBUTE_VALUES, max_size=5)}), max_size=3)


@st.composite
def spans(draw):
    trace = draw(st.sampled_from(["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"]))
    count = draw(st.integers(1, 4))
    ids = draw(st.lists(HEX, min_size=count, max_size=count))
    resource = draw(st.dictionaries(st.sampled_from(["service.name", "openrouter.trace.id"]) | TEXT,
                                    ATTRIBUTE_VALUES, max_size=3))
    result = []
    for span_id in ids:
        result.append(Span(
            trace_id=trace, span_id=span_id, parent_span_id=draw(st.none() | st.sampled_from(ids)),
            name=draw(st.sampled_from(["chat", "ai.generateText", "openrouter-connection-test"]) | TEXT),
            kind=draw(st.integers(-(2**31), 2**31 - 1)), start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
            end_time_unix_nano=draw(st.integers(0, 2**64 - 1)), status_code=draw(st.integers(-(2**31), 2**31 - 1)),
            status_message=draw(TEXT), attributes=draw(ATTRIBUTES), events=draw(EVENTS), links=[],
            resource=resource, scope_name=draw(TEXT), scope_version=draw(TEXT)))
    return result


# OTLP/JSON documents: the real structure, with any JSON value swapped into any place.
ANY_JSON = json_values(6)


def maybe(strategy, odds: int = 10):
    """Mostly the right shape; one time in `odds`, any JSON value in its place."""
    return st.integers(1, odds).flatmap(lambda n: ANY_JSON if n == 1 else strategy)


def rarely(strategy):
    return maybe(strategy, 60)


def otlp_any_value():
    return st.recursive(
        st.fixed_dictionaries({}, optional={"stringValue": rarely(TEXT), "intValue": rarely(INTEGERS.map(str)),
                                            "doubleValue": rarely(st.floats() | st.sampled_from(["NaN", "Infinity", "1e999"])),
                                            "boolValue": rarely(st.booleans()), "bytesValue": rarely(TEXT)}),
        lambda children: st.fixed_dictionaries({"arrayValue": rarely(st.fixed_dictionaries(
            {}, optional={"values": rarely(st.lists(children, max_size=3))}))})
        | st.fixed_dictionaries({"kvlistValue": rarely(st.fixed_dictionaries(
            {}, optional={"values": rarely(st.lists(st.fixed_dictionaries({"key": rarely(TEXT), "value": children}),
                                                    max_size=3))}))}),
        max_leaves=6) | st.integers(0, 300).map(lambda depth: _deep_array(depth))


def _string_values():
    """Attribute values as OTLP/JSON strings, including strings that hold JSON documents."""
    return ATTRIBUTE_VALUES.filter(lambda value: isinstance(value, str)).map(lambda text: {"stringValue": text})


def _deep_array(depth: int) -> dict:
    value: dict = {"intValue": "1"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


OTLP_ATTRIBUTES = maybe(st.lists(rarely(st.fixed_dictionaries({"key": rarely(ATTRIBUTE_KEYS),
                                                                "value": rarely(otlp_any_value() | _string_values())})),
                                 max_size=6))
ID_TEXT = st.sampled_from(["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "0" * 32, "zz" * 16,
                           "4bf92f3577b34da6a3ce929d0e0e473\n", " " * 32, "4bf92f3577b34da6a3ce929d0e0e4736é"]) | TEXT
GOOD_TRACE_IDS = st.sampled_from(["4bf92f3577b34da6a3ce929d0e0e4736", "0AF7651916CD43DD8448EB211C80319C"])
GOOD_SPAN_IDS = st.sampled_from(["00f067aa0ba902b7", "00f067aa0ba902b8", "53995c3f42cd8ad8"])
OTLP_SPAN = st.fixed_dictionaries({
    "traceId": maybe(GOOD_TRACE_IDS | ID_TEXT), "spanId": maybe(GOOD_SPAN_IDS | st.just("00f067aa0ba902b\n") | ID_TEXT),
    "attributes": OTLP_ATTRIBUTES},
    optional={"parentSpanId": maybe(GOOD_SPAN_IDS | ID_TEXT), "name": maybe(TEXT), "kind": maybe(st.integers() | TEXT),
              "startTimeUnixNano": maybe(INTEGERS.map(str) | INTEGERS), "endTimeUnixNano": maybe(INTEGERS),
              "status": maybe(st.fixed_dictionaries({}, optional={"code": maybe(st.integers() | TEXT),
                                                                  "message": maybe(TEXT)})),
              "events": maybe(st.lists(maybe(st.fixed_dictionaries({}, optional={
                  "name": maybe(TEXT), "timeUnixNano": maybe(INTEGERS), "attributes": OTLP_ATTRIBUTES})), max_size=2)),
              "links": maybe(st.lists(maybe(st.fixed_dictionaries({"traceId": maybe(ID_TEXT), "spanId": maybe(ID_TEXT)})),
                                      max_size=2))})
OTLP_REQUEST = st.fixed_dictionaries({"resourceSpans": maybe(st.lists(maybe(st.fixed_dictionaries({
    "scopeSpans": maybe(st.lists(maybe(st.fixed_dictionaries({
        "spans": maybe(st.lists(maybe(OTLP_SPAN), min_size=1, max_size=3))}, optional={
        "scope": maybe(st.fixed_dictionaries({}, optional={"name": maybe(TEXT), "version": maybe(TEXT)}))})),
        min_size=1, max_size=2))}, optional={
    "resource": maybe(st.fixed_dictionaries({}, optional={"attributes": OTLP_ATTRIBUTES}))})),
    min_size=1, max_size=2))})


# --- properties -----------------------------------------------------------------------------------

def assert_valid_key(key: str) -> None:
    assert len(key.encode()) <= 1024
    segments = key.split("/")
    assert segments[0] == "openrouter-traces"
    assert all(segment not in ("", ".", "..") and len(segment.encode()) <= 255 for segment in segments)
    assert len(segments[-1].encode()) <= 200 and key.isprintable()


def assert_records_are_storable(parsed_spans) -> None:
    result = decode(parsed_spans, key_name="k", transport="t", received_at_unix_nano=NOW)
    for record in result.records:
        encode_json(record)  # raises on anything orjson cannot write (depth, 64-bit range, types)
        assert_valid_key(object_key(TEMPLATE, record, prefix="openrouter-traces", fallback_unix_nano=NOW))


def _json_body(document) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS) if _encodable(document) else b"{}"


@given(OTLP_REQUEST)
def test_parse_json_of_any_otlp_shaped_document(document):
    try:
        parsed = parse_json(_json_body(document))
    except InvalidRequest:
        return
    assert parsed.rejected_spans >= 0
    assert_records_are_storable(parsed.spans)


@given(st.binary(max_size=200) | ANY_JSON.map(_json_body))
def test_parse_json_of_any_bytes(body):
    try:
        parsed = parse_json(body)
    except InvalidRequest:
        return
    assert_records_are_storable(parsed.spans)


def _pb_value(value, depth: int = 0) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, list) and depth < 90:
        result = AnyValue()
        result.array_value.values.extend(_pb_value(item, depth + 1) for item in value)
        return result
    if isinstance(value, dict) and depth < 90:
        result = AnyValue()
        result.kvlist_value.values.extend(KeyValue(key=str(k), value=_pb_value(v, depth + 1)) for k, v in value.items())
        return result
    return AnyValue()


def read_both_ways(body: bytes):
    """`body` read by the protobuf runtime, after checking that the wire reader reads the same spans
    from it (and raises nothing but InvalidRequest where the runtime refuses the bytes)."""
    try:
        expected = otlp_protobuf.parse_protobuf(body)
    except InvalidRequest:
        try:
            otlp_wire.parse_wire(body)
        except InvalidRequest:
            pass
        return None
    found = otlp_wire.parse_wire(body)
    # repr, not ==: a NaN attribute is equal to nothing, but prints the same.
    assert repr(found.spans) == repr(expected.spans)
    assert (found.rejected_spans, found.warnings) == (expected.rejected_spans, expected.warnings)
    assert (found.first_problem is None) == (expected.first_problem is None)
    return expected


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand: the runtime never writes a field twice."""
    size, length = len(payload), bytearray()
    while size >= 0x80:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return bytes([number << 3 | 2]) + bytes(length) + payload


def _span_message(span: Span) -> SpanMessage:
    message = SpanMessage(trace_id=bytes.fromhex(span.trace_id), span_id=bytes.fromhex(span.span_id),
                          name=span.name, start_time_unix_nano=span.start_time_unix_nano,
                          end_time_unix_nano=span.end_time_unix_nano, kind=span.kind,
                          parent_span_id=bytes.fromhex(span.parent_span_id or ""))
    message.status.code, message.status.message = span.status_code, span.status_message
    message.attributes.extend(KeyValue(key=key, value=_pb_value(value))
                              for key, value in span.attributes.items() if isinstance(key, str))
    for event in span.events:
        if isinstance(event, dict) and isinstance(event.get("name"), str):
            added = message.events.add(name=event["name"])
            attributes = event.get("attributes")
            if isinstance(attributes, dict):
                added.attributes.extend(KeyValue(key=str(key), value=_pb_value(value))
                                        for key, value in attributes.items())
    message.links.add(trace_id=bytes.fromhex(span.trace_id), span_id=bytes.fromhex(span.span_id)).attributes.extend(
        KeyValue(key=str(key), value=_pb_value(value)) for key, value in span.resource.items())
    return message


@given(st.lists(spans(), max_size=2), st.data())
def test_parse_protobuf_of_any_valid_request_and_of_its_damaged_bytes(groups, data):
    request = ExportTraceServiceRequest()
    for group in groups:
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(KeyValue(key=str(key), value=_pb_value(value))
                                                  for key, value in group[0].resource.items())
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name, scope_spans.scope.version = group[0].scope_name, group[0].scope_version
        scope_spans.spans.extend(_span_message(span) for span in group)
    body = request.SerializeToString()
    cut = data.draw(st.integers(0, len(body)))
    flip = data.draw(st.integers(0, max(len(body) - 1, 0)))
    damaged = bytearray(body[:cut] + body[cut:])
    if damaged:
        damaged[flip % len(damaged)] ^= data.draw(st.integers(1, 255))
    for candidate in (body, body[:cut], bytes(damaged)):
        parsed = read_both_ways(candidate)
        if parsed is not None:
            assert parse_protobuf(candidate) is not None  # the build's own choice of reader accepts it too
            assert_records_are_storable(parsed.spans)


@given(spans(), spans())
def test_the_wire_reader_merges_fields_seen_twice_and_takes_fields_in_any_order(first, second):
    """What the protobuf runtime does with bytes it would never write itself: a span's fields twice
    (scalars: the last wins; attributes, events, links: appended; status: merged), the resource
    after the scope spans, and an attribute whose value comes before its key or is written twice."""
    twice = _span_message(first[0]).SerializeToString() + _span_message(second[0]).SerializeToString()
    value_first = _field(2, _pb_value([1, "a"]).SerializeToString()) + _field(1, b"k")
    value_twice = value_first + _field(2, _pb_value(["b", {"c": 2}]).SerializeToString()) \
        + _field(2, _pb_value([3.5]).SerializeToString())
    # A oneof's members in turn: the array after the string starts again, it does not merge.
    value_switch = _field(1, b"s") + _field(2, _pb_value([1]).SerializeToString()
                                          + AnyValue(string_value="x").SerializeToString()
                                          + _pb_value([2]).SerializeToString())
    resource = ResourceSpans()
    resource.resource.attributes.extend(KeyValue(key=str(key), value=_pb_value(value))
                                        for key, value in first[0].resource.items())
    scope_spans = ScopeSpans(spans=[_span_message(span) for span in second])
    scope_spans.scope.name = first[0].scope_name
    spans_then_scope = _field(2, b"".join(_field(9, kv) for kv in (value_first, value_twice, value_switch))
                              + SpanMessage(trace_id=b"\1" * 16, span_id=b"\2" * 8).SerializeToString())
    body = (_field(1, ResourceSpans(scope_spans=[scope_spans]).SerializeToString() + resource.SerializeToString())
            + _field(1, _field(2, _field(2, twice) + _field(1, b"\x0a\x01s"))
                     + _field(2, spans_then_scope)))
    parsed = read_both_ways(body)
    assert parsed is not None and parsed.spans
    assert_records_are_storable(parsed.spans)


@given(st.binary(max_size=300))
def test_parse_protobuf_of_any_bytes(body):
    parsed = read_both_ways(body)
    if parsed is not None:
        assert_records_are_storable(parsed.spans)


@given(spans())
def test_decode_of_any_spans_gives_storable_records(group):
    assert_records_are_storable(group)


OTLP_LOG_RECORD = st.fixed_dictionaries({}, optional={
    "traceId": maybe(GOOD_TRACE_IDS | ID_TEXT), "spanId": maybe(GOOD_SPAN_IDS | ID_TEXT),
    "eventName": maybe(st.sampled_from(["gen_ai.user.message", "gen_ai.choice", OPERATION_DETAILS_EVENT]) | TEXT),
    "timeUnixNano": maybe(INTEGERS), "observedTimeUnixNano": maybe(INTEGERS),
    "body": maybe(otlp_any_value() | _string_values()), "attributes": OTLP_ATTRIBUTES})
OTLP_LOGS_REQUEST = st.fixed_dictionaries({"resourceLogs": maybe(st.lists(maybe(st.fixed_dictionaries({
    "scopeLogs": maybe(st.lists(maybe(st.fixed_dictionaries({
        "logRecords": maybe(st.lists(maybe(OTLP_LOG_RECORD), min_size=1, max_size=3))})), min_size=1, max_size=2))})),
    min_size=1, max_size=2))})


@given(OTLP_LOGS_REQUEST | st.binary(max_size=200).map(lambda body: {"raw": body}), spans())
def test_logs_of_any_shape_join_any_span_into_storable_records(document, group):
    """Parsing a logs export is total, and whatever events it yields complete any record (as the
    join store keeps it, JSON) into a record that can be stored."""
    body = document["raw"] if "raw" in document else _json_body(document)
    for parse in (parse_logs_json, parse_logs_protobuf):
        try:
            parsed = parse(body)
        except InvalidRequest:
            continue
        events = [event.as_span_event() for event in parsed.events]
        for record in decode(group, key_name="k", transport="t", received_at_unix_nano=NOW).records:
            stored = orjson.loads(encode_json(record))  # as the join store keeps it
            key, stored = completed_object("k", stored, events, NOW)
            assert key == "k" and orjson.loads(stored)["span_id"] == record["span_id"]


@given(st.fixed_dictionaries({
    "trace_id": TEXT | st.text(min_size=100, max_size=2000), "span_id": HEX,
    "generation_id": st.none() | TEXT, "api_key_name": st.none() | TEXT | st.text(min_size=100, max_size=500),
    "start_time_unix_nano": st.none() | st.integers(0, 2**64 - 1),
    "ingest": st.fixed_dictionaries({"key_name": st.none() | TEXT})}))
def test_object_key_of_any_record_fields(record):
    assert_valid_key(object_key(TEMPLATE, record, prefix="openrouter-traces", fallback_unix_nano=NOW))


def _gzip_members(parts: list[bytes]) -> bytes:
    return b"".join(gzip.compress(part) for part in parts)


@given(st.one_of(st.binary(max_size=500), st.lists(st.binary(max_size=200), max_size=20).map(_gzip_members),
                 st.binary(max_size=2000).map(zlib.compress)),
       st.sampled_from(["gzip", "deflate", "x-gzip", "", "identity", "br", "GZIP"]), st.integers(0, 5000),
       st.integers(0, 3000))
def test_inflate_of_any_bytes(body, coding, limit, cut):
    for candidate in (body, body[:cut]):
        try:
            inflated = inflate(candidate, coding, limit)
        except (InvalidRequest, PayloadTooLarge):
            continue
        assert len(inflated) <= limit


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=30))
def test_inflate_round_trips_concatenated_members(parts):
    assert inflate(_gzip_members(parts), "gzip", 10**6) == b"".join(parts)


def test_many_empty_gzip_members_are_inflated_without_copying_the_rest_each_time():
    """Linear: every member used to copy the rest of the body (1/2/4/8 MiB took 1/4/15/129 s).
    The largest allocation while inflating is now one window, not the body."""
    import tracemalloc

    body = gzip.compress(b"") * (2 * 1024 * 1024 // len(gzip.compress(b"")))
    tracemalloc.start()
    try:
        assert inflate(body, "gzip", 1024) == b""
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(body) // 4, f"inflating copied {peak} bytes at once for a {len(body)}-byte body"

