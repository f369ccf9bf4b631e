"""Decoding is pure: OTLP/JSON and protobuf parse to the same spans, spans decode to exact records."""

from __future__ import annotations

import orjson
import pytest

from conftest import CAPTURES, capture_lines
from otel_s3_bridge.decode import messages
from otel_s3_bridge.decode.records import decode
from otel_s3_bridge.decode.otlp import parse_json, parse_protobuf
from otel_s3_bridge.lake.record import RECORD_FIELDS
from otel_s3_bridge.values import MAX_VALUE_DEPTH
from otlp_builders import request, span, to_protobuf

NOW = 1795000000000000000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def records_of(document: dict, **kwargs) -> list[dict]:
    return decode(parse_json(orjson.dumps(document)).spans, key_name="k", transport="http/json",
                  received_at_unix_nano=NOW, **kwargs).records


ALL_CAPTURES = [line for name in ("claude-code.ndjson", "codex.ndjson", "pi.ndjson") for line in capture_lines(name)]
ALL_CAPTURES.append((CAPTURES / "codex-error-span.json").read_bytes())


@pytest.mark.parametrize("line", ALL_CAPTURES, ids=lambda line: orjson.loads(line)["resourceSpans"][0]["resource"]
                         ["attributes"][1]["value"]["stringValue"])
def test_json_and_protobuf_decode_to_identical_records(line):
    from_json = decode(parse_json(line).spans, key_name="k", transport="t", received_at_unix_nano=NOW).records
    from_protobuf = decode(parse_protobuf(to_protobuf(orjson.loads(line))).spans, key_name="k", transport="t",
                           received_at_unix_nano=NOW).records
    assert orjson.dumps(from_json) == orjson.dumps(from_protobuf)
    assert len(from_json) == 1 and tuple(from_json[0]) == RECORD_FIELDS


def test_int64_and_double_as_strings_or_numbers_and_enum_names():
    document = request(span(TRACE, "00f067aa0ba902b7", "chat", {}))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update({
        "kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
        "startTimeUnixNano": 1790606294318000000, "futureField": {"ignored": True},
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 3}},
            {"key": "gen_ai.usage.total_cost", "value": {"doubleValue": "0.5"}},
            {"key": "flags", "value": {"arrayValue": {"values": [{"boolValue": True}, {"intValue": "1"}]}}},
            {"key": "nested", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"doubleValue": 1}}]}}},
            {"key": "blob", "value": {"bytesValue": "aGk="}},
            {"key": "empty", "value": {}},
        ]})
    [record] = records_of(document)
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (7, 3, 10)
    assert record["cost"] == 0.5 and record["status"] == "error" and record["status_message"] == "boom"
    assert record["attributes"] == {"flags": [True, 1], "nested": {"a": 1.0}, "blob": "aGk=", "empty": None}
    assert record["timestamp"] == "2026-09-28T14:38:14.318Z"


def test_a_group_without_llm_spans_is_dropped_by_default():
    root = span(TRACE, "00f067aa0ba902b7", "GET /checkout", {"http.route": "/checkout"}, start=NOW)
    result = decode(parse_json(orjson.dumps(request(root))).spans, key_name="k", transport="http/json",
                    received_at_unix_nano=NOW)
    assert result.records == [] and result.dropped_spans == 1


def test_a_group_without_llm_spans_becomes_one_otlp_record_when_kept():
    root = span(TRACE, "00f067aa0ba902b7", "GET /checkout", {"http.route": "/checkout"}, start=NOW)
    child = span(TRACE, "00f067aa0ba902b8", "SELECT", {"db.system": "postgresql"}, parent=root["spanId"], start=NOW + 5)
    [record] = records_of(request(child, root), non_llm_spans="keep")
    assert record["source"] == "otlp" and record["span_id"] == root["spanId"]
    assert record["model"] is None and record["input_tokens"] is None and record["cost"] is None
    assert record["attributes"] == {"http.route": "/checkout"}
    assert [o["name"] for o in record["observations"]] == ["SELECT"]


def test_each_llm_span_is_a_record_and_owns_its_descendants():
    root = span(TRACE, "0000000000000001", "agent", {}, start=NOW)
    chat_a = span(TRACE, "000000000000000a", "chat a", {"gen_ai.request.model": "a"}, parent=root["spanId"])
    tool_a = span(TRACE, "00000000000000aa", "tool under a", {}, parent=chat_a["spanId"])
    chat_b = span(TRACE, "000000000000000b", "chat b", {"gen_ai.request.model": "b"}, parent=root["spanId"])
    records = records_of(request(root, chat_a, tool_a, chat_b))
    assert [r["model"] for r in records] == ["a", "b"]
    assert sorted(o["name"] for o in records[0]["observations"]) == ["agent", "tool under a"]
    assert records[1]["observations"] == []


def test_precedence_keeps_a_disagreeing_loser_visible():
    attributes = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.prompt_tokens": 12,
                  "gen_ai.provider.name": "anthropic", "gen_ai.system": "anthropic",
                  "gen_ai.request.model": "m"}
    [record] = records_of(request(span(TRACE, "00f067aa0ba902b7", "chat", attributes)))
    assert record["input_tokens"] == 10 and record["model_author"] == "anthropic"
    assert record["attributes"] == {"gen_ai.usage.prompt_tokens": 12}


def test_connection_test_span_is_dropped():
    result = decode(parse_json((CAPTURES / "connection-test.json").read_bytes()).spans, key_name=None,
                    transport="http/json", received_at_unix_nano=NOW)
    assert result.records == [] and result.connection_tests == 1


def test_unparsable_prompt_stays_in_attributes():
    attributes = {"gen_ai.request.model": "m", "gen_ai.prompt": '{"messages": [{"role": "us',
                  "gen_ai.completion": "not json"}
    [record] = records_of(request(span(TRACE, "00f067aa0ba902b7", "LLM Generation", attributes)))
    assert record["prompt"] is None and record["completion"] is None
    assert record["attributes"]["gen_ai.prompt"].startswith('{"messages"')


@pytest.mark.parametrize("mutate,problem", [
    (lambda s: s.update(traceId="abc"), "traceId"),
    (lambda s: s.update(spanId="zz" * 8), "spanId"),
    (lambda s: s.update(traceId="0" * 32), "all zeros"),
    (lambda s: s.update(startTimeUnixNano="soon"), "startTimeUnixNano"),
    (lambda s: s["attributes"].append({"key": "n", "value": {"intValue": "9" * 30}}), "intValue"),
])
def test_bad_spans_are_rejected_with_the_first_problem(mutate, problem):
    good = span(TRACE, "00f067aa0ba902b7", "chat", {"gen_ai.request.model": "m"})
    bad = span(TRACE, "00f067aa0ba902b8", "chat", {"gen_ai.request.model": "m"})
    mutate(bad)
    parsed = parse_json(orjson.dumps(request(good, bad)))
    assert parsed.rejected_spans == 1 and problem in parsed.first_problem
    assert [s.span_id for s in parsed.spans] == [good["spanId"]]


def _any(value) -> dict:
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": _any(v)} for k, v in value.items()]}}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any(v) for v in value]}}
    return {"stringValue": value}


def test_genai_messages_as_structured_values():
    chat = span(TRACE, "00f067aa0ba902b7", "chat", {"gen_ai.request.model": "m"})
    messages = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    output = [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}]
    chat["attributes"] += [{"key": "gen_ai.input.messages", "value": _any(messages)},
                           {"key": "gen_ai.output.messages", "value": _any(output)}]
    [record] = records_of(request(chat))
    assert record["prompt"] == messages
    assert record["completion"] == {"text": "hello", "reasoning": None, "tool_calls": None}
    assert record["finish_reason"] == "stop"
    assert record["attributes"] == {}


def test_deprecated_content_events_and_event_bodies():
    chat = span(TRACE, "00f067aa0ba902b7", "chat", {"gen_ai.system": "openai", "gen_ai.request.model": "m"})
    chat["events"] = [
        {"name": "gen_ai.content.prompt", "timeUnixNano": "1", "attributes": [
            {"key": "gen_ai.prompt", "value": {"stringValue": '[{"role": "user", "content": "2+2?"}]'}}]},
        {"name": "gen_ai.content.completion", "timeUnixNano": "2", "attributes": [
            {"key": "gen_ai.completion", "value": {"stringValue": '[{"role": "assistant", "content": "4", '
                                                                  '"finish_reason": "stop"}]'}}]},
    ]
    [record] = records_of(request(chat))
    assert record["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert record["completion"]["text"] == "4" and record["finish_reason"] == "stop"
    assert record["events"] == []

    tool = span(TRACE, "00f067aa0ba902b8", "chat", {"gen_ai.request.model": "m"})
    tool["events"] = [{"name": "gen_ai.tool.message", "timeUnixNano": "1", "attributes": [
        {"key": "gen_ai.event.content", "value": {"stringValue": '{"content": "42", "id": "call_1"}'}}]}]
    [record] = records_of(request(tool))
    assert record["prompt"] == [{"role": "tool", "content": "42", "tool_call_id": "call_1"}]


def test_a_vercel_wrapper_is_never_a_record_whatever_the_batching():
    """Exported span by span (the call first, its wrapper in a later request) or in one batch:
    one record per call, decided from the wrapper's own name, not from its neighbours."""
    outer = span(TRACE, "0000000000000001", "ai.generateText",
                 {"ai.operationId": "ai.generateText", "ai.model.id": "m", "ai.usage.promptTokens": 5})
    inner = span(TRACE, "0000000000000002", "ai.generateText.doGenerate",
                 {"ai.operationId": "ai.generateText.doGenerate", "ai.model.id": "m", "ai.usage.promptTokens": 5},
                 parent=outer["spanId"])
    [record] = records_of(request(outer, inner))
    assert record["span_id"] == inner["spanId"]
    assert [o["name"] for o in record["observations"]] == ["ai.generateText"]
    [alone] = records_of(request(inner))
    assert alone["span_id"] == inner["spanId"]
    assert records_of(request(outer)) == []
    # with a function id the span name changes; the operation id does not
    outer["name"] = "ai.generateText my-function"
    assert records_of(request(outer)) == []


def test_nested_llm_spans_of_other_conventions_are_each_a_record():
    """A framework's LLM span around a client's LLM span: two calls as far as each span says, in
    one batch as span by span (no record may depend on what else the export holds)."""
    outer = span(TRACE, "0000000000000001", "ChatOpenAI", {"openinference.span.kind": "LLM", "llm.model_name": "m"})
    inner = span(TRACE, "0000000000000002", "chat m", {"gen_ai.request.model": "m"}, parent=outer["spanId"])
    assert [r["span_id"] for r in records_of(request(outer, inner))] == [outer["spanId"], inner["spanId"]]


def test_input_and_output_value_are_the_last_resort():
    llm = span(TRACE, "00f067aa0ba902b7", "llm", {"openinference.span.kind": "LLM", "input.value": "Hello?",
                                                   "output.value": '{"choices": [{"message": {"content": "Hi!"}}]}'})
    [record] = records_of(request(llm))
    assert record["prompt"] == [{"role": "user", "content": "Hello?"}]
    assert record["completion"]["text"] == "Hi!"
    assert record["attributes"] == {"openinference.span.kind": "LLM"}


def test_a_time_without_a_zone_is_utc_whatever_the_host_zone():
    """Langfuse's completion_start_time without an offset used to be read in the host's local time."""
    import os
    import subprocess
    import sys

    script = (
        "import orjson, sys\n"
        "from otel_s3_bridge.decode.records import decode\n"
        "from otel_s3_bridge.decode.otlp import parse_json\n"
        "[record] = decode(parse_json(sys.stdin.buffer.read()).spans, key_name=None, transport='t',\n"
        "                  received_at_unix_nano=0).records\n"
        "print(record['time_to_first_token_ms'])\n")
    start = 1790606294000000000  # 2026-09-28T14:38:14Z
    document = request(span(TRACE, "00f067aa0ba902b7", "generation", {
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "m",
        "langfuse.observation.completion_start_time": "2026-09-28T14:38:14.250000"}, start=start))
    for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        result = subprocess.run([sys.executable, "-c", script], input=orjson.dumps(document), capture_output=True,
                                env={**os.environ, "TZ": zone}, timeout=60, check=True)
        assert float(result.stdout) == 250.0, (zone, result.stdout)


@pytest.mark.parametrize("year", [2026, 2300, 2500, 2550])
def test_a_langfuse_first_token_time_is_exact_to_the_microsecond(year):
    """Read through a float (`timestamp() * 1e6`), times after ~2255 lost microseconds: the time to
    first token came out 123.449 or 123.451 ms where it is 123.45. Expected from integer seconds
    (calendar.timegm) and the microseconds written, not from the code's own arithmetic."""
    import calendar

    start_seconds = calendar.timegm((year, 3, 1, 9, 30, 0, 0, 0, 0))
    start = start_seconds * 10**9 + 7_000  # 7 µs into the second
    first_chunk = f"{year}-03-01T09:30:00.123457Z"  # 123.45 ms later
    [record] = records_of(request(span(TRACE, "00f067aa0ba902b7", "generation", {
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "m",
        "langfuse.observation.completion_start_time": first_chunk}, start=start)))
    assert record["time_to_first_token_ms"] == (123_457_000 - 7_000) / 1e6


def test_openinference_failed_call_reads_the_model_from_its_invocation_parameters():
    """What openinference-instrumentation-openai sends for a call the server refused."""
    failed = span(TRACE, "00f067aa0ba902b7", "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.system": "openai",
        "llm.invocation_parameters": '{"model": "no-such-model", "temperature": 0.2}'})
    [record] = records_of(request(failed))
    assert (record["model"], record["requested_model"], record["model_author"]) == ("no-such-model",) * 2 + ("openai",)
    assert record["attributes"]["llm.invocation_parameters"] == '{"model": "no-such-model", "temperature": 0.2}'


def test_openllmetry_reasoning_tokens_and_association_properties():
    traced = span(TRACE, "00f067aa0ba902b7", "openai.chat", {
        "gen_ai.request.model": "m", "gen_ai.usage.reasoning_tokens": 3,
        "traceloop.association.properties.session_id": "s-1", "traceloop.association.properties.user_id": "u-1",
        "traceloop.association.properties.team": "search"})
    [record] = records_of(request(traced))
    assert (record["reasoning_tokens"], record["session_id"], record["customer_id"]) == (3, "s-1", "u-1")
    assert record["metadata"] == {"team": "search"}


def test_langfuse_usage_details_with_openai_names():
    """Langfuse's OpenAI integration passes OpenAI's usage object on, nested details included."""
    usage = ('{"completion_tokens": 7, "prompt_tokens": 22, "total_tokens": 29, '
             '"completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0}, '
             '"prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}}')
    generation = span(TRACE, "00f067aa0ba902b7", "OpenAI-generation", {
        "langfuse.observation.type": "generation", "langfuse.observation.model.name": "m",
        "langfuse.observation.usage_details": usage})
    [record] = records_of(request(generation))
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (22, 7, 29)
    assert (record["cached_tokens"], record["reasoning_tokens"]) == (4, 3)


def test_spans_with_ever_new_attribute_keys_decode_right_and_keep_what_is_remembered_bounded():
    """Key plans are remembered per set of keys; a client sending a new set on every span (say,
    a request id in a key name) gets right records and cannot grow what the decoder remembers."""
    from otel_s3_bridge.decode.conventions import base

    for batch in range(3):
        spans = [span(f"{batch:02d}{n + 1:030x}", f"{n + 1:016x}", "chat",
                      {"gen_ai.request.model": f"m-{n}", "gen_ai.usage.input_tokens": n, f"req.{batch}.{n}": "x",
                       **({"user.id": "u"} if n % 2 else {})}, start=NOW)
                 for n in range(base.PLAN_LIMIT // 2)]
        records = records_of(request(*spans))
        assert len(records) == len(spans)
        for n, record in enumerate(records):
            assert (record["model"], record["input_tokens"]) == (f"m-{n}", n)
            assert record["customer_id"] == ("u" if n % 2 else None)
            assert record["attributes"] == {f"req.{batch}.{n}": "x"}
        assert len(base._PLANS) <= base.PLAN_LIMIT
    assert len(base._KEY_INFO) <= base.KEY_INFO_LIMIT


@pytest.mark.parametrize("depth,parsed", [(1, True), (MAX_VALUE_DEPTH, True), (MAX_VALUE_DEPTH + 1, False),
                                          (300, False)])
def test_a_json_text_nested_deeper_than_the_limit_stays_text(depth, parsed):
    for opening, closing, inner in (("[", "]", "1"), ('{"a":', "}", '"x"')):
        text = opening * depth + inner + closing * depth
        assert (messages.json_text(text) is not None) is parsed, (depth, text[:20])
    assert messages.json_or_value("[" * depth + "]" * depth) == ("[" * depth + "]" * depth if not parsed
                                                                 else orjson.loads("[" * depth + "]" * depth))
