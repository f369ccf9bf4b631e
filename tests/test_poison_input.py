"""Malformed input is the client's error, never "retry later": a batch of 50 valid spans plus one
malformed one is answered 200, the malformed span alone is rejected (counted in partial_success)
or stored with the fields that cannot be read as null, and the 50 are in the bucket. Each shape
below used to be answered 503 on every retry, storing nothing. Against the real bridge and S3."""

from __future__ import annotations

import json
import re
import uuid

import orjson
import pytest

from conftest import list_keys, read_json
from otlp_builders import request, span

VALID = 50


def _llm(trace_id: str, **attributes) -> dict:
    return span(trace_id, trace_id[:16], "chat gpt-4o-mini",
                {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 10, **attributes})


def _nested_array(depth: int) -> dict:
    value: dict = {"stringValue": "bottom"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


def _nested_json_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _with(field: str, value):
    def poison(span: dict, document: dict) -> None:
        span[field] = value
    return poison


def _attribute(key: str, value: dict):
    def poison(span: dict, document: dict) -> None:
        span["attributes"].append({"key": key, "value": value})
    return poison


def _resource_spans(field: str, value):
    def poison(span: dict, document: dict) -> None:
        document["resourceSpans"][0][field] = value
    return poison


def _scope_spans(field: str, value):
    def poison(span: dict, document: dict) -> None:
        document["resourceSpans"][0]["scopeSpans"][0][field] = value
    return poison


# (shape, how to poison the extra span or its envelope, rejected spans expected: 1, or 0 when
# the span is stored with what can be read)
SHAPES = [
    ("status as a string", _with("status", "ERROR"), 1),
    ("resource as a string", _resource_spans("resource", "service=x"), 1),
    ("scope as a string", _scope_spans("scope", "lib"), 1),
    ("attributes as an int", _with("attributes", 7), 1),
    ("events as an int", _with("events", 7), 1),
    ("links as an int", _with("links", 7), 1),
    ("an event as a string", _with("events", ["boom"]), 1),
    ("kind as an object", _with("kind", {"client": True}), 1),
    ("start time as a list", _with("startTimeUnixNano", [1]), 1),
    ("name as an object", _with("name", {"a": 1}), 1),
    ("arrayValue as a list", _attribute("tags", {"arrayValue": [{"stringValue": "a"}]}), 1),
    ("kvlistValue as a string", _attribute("tags", {"kvlistValue": "a=b"}), 1),
    ("an attribute value as a string", _attribute("tags", "plain"), 1),
    ("arrays nested 260 levels", _attribute("deep", _nested_array(260)), 1),
    ("an 11-byte trace id (spaces are not hex)", _with("traceId", "00 11 22 33 44 55 66 77 88 99 aa"), 1),
    ("a span id with a newline", _with("spanId", "00f067aa0ba902b\n"), 1),
    ("llm.input_messages.0.message as a string",
     _attribute("llm.input_messages.0.message", {"stringValue": "hello"}), 0),
    ("its tool_calls as an int", _attribute("llm.input_messages.0.message.tool_calls", {"intValue": "3"}), 0),
    ("a message index ²", _attribute("llm.input_messages.².message.role", {"stringValue": "user"}), 0),
    ("input tokens beyond 64 bits", _attribute("gen_ai.usage.input_tokens", {"stringValue": "99999999999999999999"}), 0),
    ("a JSON-string attribute nested 300 levels",
     _attribute("gen_ai.input.messages", {"stringValue": _nested_json_text(300)}), 0),
    ("a key with 2,000 dotted segments",
     _attribute("llm.input_messages.0." + ".".join(["m"] * 2000), {"stringValue": "x"}), 0),
    ("output message parts as an int",
     _attribute("gen_ai.output.messages", {"stringValue": json.dumps([{"role": "assistant", "parts": 5}])}), 0),
    ("tool calls with a string function",
     _attribute("gen_ai.completion", {"stringValue": json.dumps({"completion": "x", "toolCalls": [{"function": "f"}]})}), 0),
]


def _body(document: dict) -> bytes:
    """orjson refuses to write documents nested more than 254 levels; the standard library does not."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document).encode()


def _batch(poison) -> tuple[dict, list[str], str]:
    valid = [_llm(uuid.uuid4().hex) for _ in range(VALID)]
    extra = _llm(uuid.uuid4().hex)
    document = request(*valid)
    envelope = request(extra)  # the malformed span in an envelope of its own
    poison(extra, envelope)
    document["resourceSpans"].extend(envelope["resourceSpans"])
    return document, [s["traceId"] for s in valid], extra["traceId"]


@pytest.mark.parametrize("shape,poison,rejected", SHAPES, ids=[shape for shape, _, _ in SHAPES])
def test_one_malformed_span_is_rejected_alone_and_the_rest_stored(bridge, s3, shape, poison, rejected):
    document, valid_ids, extra_id = _batch(poison)
    response = bridge.post(_body(document))
    assert response.status_code == 200, response.text
    partial = response.json().get("partialSuccess", {})
    assert int(partial.get("rejectedSpans", 0)) == rejected, partial
    if rejected:
        assert partial["errorMessage"]
    keys = list_keys(s3, bridge.bucket)
    for trace_id in valid_ids:
        [key] = [key for key in keys if trace_id in key]
        assert read_json(s3, bridge.bucket, key)["model"] == "gpt-4o-mini"
    stored_extra = [key for key in keys if extra_id in key or extra_id[:16] in key]
    assert len(stored_extra) == (0 if rejected else 1)


def test_unreadable_fields_become_null_and_the_attribute_stays_visible(bridge, s3):
    trace_id = uuid.uuid4().hex
    extra = _llm(trace_id)
    extra["attributes"] = [attribute for attribute in extra["attributes"]
                           if attribute["key"] != "gen_ai.usage.input_tokens"]
    extra["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": {"stringValue": "99999999999999999999"}})
    extra["attributes"].append({"key": "gen_ai.input.messages", "value": {"stringValue": _nested_json_text(300)}})
    assert bridge.post(orjson.dumps(request(extra))).status_code == 200
    [key] = [key for key in list_keys(s3, bridge.bucket) if trace_id in key]
    record = read_json(s3, bridge.bucket, key)
    assert record["input_tokens"] is None and record["prompt"] is None
    assert record["attributes"]["gen_ai.usage.input_tokens"] == "99999999999999999999"
    assert record["attributes"]["gen_ai.input.messages"] == _nested_json_text(300)


def test_client_errors_are_not_logged_as_errors(bridge):
    for _, poison, _ in SHAPES:
        bridge.post(_body(_batch(poison)[0]))
    assert bridge.post(b"{not json").status_code == 400
    assert not re.search(r" (ERROR|CRITICAL) ", bridge.log), bridge.log[-2000:]
    assert "Traceback" not in bridge.log


def test_a_flattened_message_index_of_thousands_of_digits_is_kept_as_an_attribute(bridge, s3):
    """`llm.input_messages.<4,400 digits>.message.content` made int() raise (Python's digit limit):
    503 + Retry-After forever and a traceback per attempt. Such a "index" is no list index: the
    attribute stays in `attributes`, the call is stored, the others beside it too."""
    index = "9" * 4400
    trace_id = uuid.uuid4().hex
    poisoned = span(trace_id, trace_id[:16], "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
        f"llm.input_messages.{index}.message.content": "hi", "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "hello", f"llm.output_messages.{index}.message.content": "x"})
    neighbour = _llm(uuid.uuid4().hex)
    response = bridge.post(orjson.dumps(request(poisoned, neighbour)))
    assert response.status_code == 200, response.text
    [key] = [key for key in list_keys(s3, bridge.bucket) if trace_id in key]
    record = read_json(s3, bridge.bucket, key)
    assert record["prompt"] == [{"role": "user", "content": "hello"}]
    assert record["attributes"][f"llm.input_messages.{index}.message.content"] == "hi"
    assert any(neighbour["traceId"] in key for key in list_keys(s3, bridge.bucket))
    assert "Traceback" not in bridge.log
