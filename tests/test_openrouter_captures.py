"""Every real OpenRouter Broadcast capture, posted as raw OTLP/JSON like OpenRouter does, lands in
the bucket as one record per generation at OpenRouter's own key, with its fields decoded."""

from __future__ import annotations

import gzip
import math
import zlib

import orjson
import pytest

from conftest import CAPTURES, attribute, capture_lines, key_for, list_keys, read_json, root_span

EXPECTED = orjson.loads((CAPTURES / "expected.json").read_bytes())
SESSIONS = ("claude-code", "codex", "pi")


def _post_all(bridge, name: str, **kwargs) -> list[dict]:
    deliveries = []
    for line in capture_lines(name):
        response = bridge.post(line, **kwargs)
        assert response.status_code == 200, response.text
        assert response.json() == {}
        assert response.headers["Content-Type"].startswith("application/json")
        deliveries.append(orjson.loads(line))
    return deliveries


def _record_of(bridge, s3, delivery: dict) -> dict:
    root = root_span(delivery)
    key = key_for(attribute(root, "gen_ai.response.id"), int(root["startTimeUnixNano"]))
    return read_json(s3, bridge.bucket, key)


@pytest.mark.parametrize("session", SESSIONS)
def test_every_generation_lands_at_openrouters_key_with_its_fields(bridge, s3, session):
    expected = EXPECTED["sessions"][session]
    deliveries = _post_all(bridge, f"{session}.ndjson")
    records = [_record_of(bridge, s3, delivery) for delivery in deliveries]

    assert [r["generation_id"] for r in records] == expected["generation_ids"]
    assert [r["trace_id"] for r in records] == expected["generation_ids"]
    assert {r["model"] for r in records} == set(expected["models"])
    assert math.isclose(sum(r["cost"] for r in records), expected["total_cost_usd"], rel_tol=1e-9)
    assert {r["session_id"] for r in records} == {expected["session_id"]}
    tool_call_ids = [call["id"] for r in records for call in (r["completion"] or {}).get("tool_calls") or ()]
    assert tool_call_ids == expected["tool_call_ids"]

    for record, delivery in zip(records, deliveries):
        root = root_span(delivery)
        assert record["schema"] == "otel-s3-bridge.trace.v1"
        assert record["source"] == "openrouter"
        assert record["status"] == "ok"
        assert record["otel_trace_id"] == root["traceId"]
        assert record["span_id"] == root["spanId"]
        assert record["name"] == "OpenRouter Request" and record["span_name"] == "LLM Generation"
        assert record["input_tokens"] == attribute(root, "gen_ai.usage.input_tokens")
        assert record["output_tokens"] == attribute(root, "gen_ai.usage.output_tokens")
        assert record["total_tokens"] == attribute(root, "gen_ai.usage.total_tokens")
        assert record["cached_tokens"] == attribute(root, "gen_ai.usage.input_tokens.cached")
        assert record["cache_write_tokens"] == attribute(root, "gen_ai.usage.input_tokens.cache_write")
        assert record["reasoning_tokens"] == attribute(root, "gen_ai.usage.output_tokens.reasoning")
        assert record["input_cost"] == attribute(root, "gen_ai.usage.input_cost")
        assert record["output_cost"] == attribute(root, "gen_ai.usage.output_cost")
        assert record["provider"] == attribute(root, "trace.metadata.openrouter.provider_name")
        assert record["model_author"] == attribute(root, "gen_ai.provider.name")
        assert record["api_key_name"] == "fixture key"
        assert record["native_finish_reason"] == attribute(root, "trace.metadata.openrouter.finish_reason")
        assert record["finish_reason"] == attribute(root, "gen_ai.response.finish_reason")
        assert record["time_to_first_token_ms"] == attribute(root, "trace.metadata.openrouter.first_token_ms")
        assert record["duration_ms"] == (int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"])) / 1e6
        assert record["prompt"] == orjson.loads(attribute(root, "gen_ai.prompt"))["messages"]
        assert record["prompt"] and all("role" in message for message in record["prompt"])
        assert [o["name"] for o in record["observations"]][0].startswith("provider attempt 1: ")
        assert {o["name"] for o in record["observations"]} >= {"generation"}
        assert record["ingest"]["key_name"] == "openrouter"
        assert record["ingest"]["transport"] == "http/json"
        # Nothing mapped into a field is repeated in attributes, nothing unmapped is lost.
        assert "gen_ai.usage.total_cost" not in record["attributes"]
        assert "span.input" not in record["attributes"] and "span.output" not in record["attributes"]
        assert record["attributes"]["trace.metadata.openrouter.router_latency_ms"] == \
            attribute(root, "trace.metadata.openrouter.router_latency_ms")
        assert "gen_ai.completion.rawRequest" in record["attributes"]


def test_user_id_becomes_customer_id_and_custom_metadata_is_kept(bridge, s3):
    record = _record_of(bridge, s3, _post_all(bridge, "claude-code.ndjson")[0])
    assert record["customer_id"] == "0" * 63 + "1"
    assert record["metadata"]["device_id"] == "0" * 63 + "3"
    assert "trace.metadata.device_id" not in record["attributes"]


def test_error_generation_is_stored_with_status_and_exception(bridge, s3):
    delivery = orjson.loads((CAPTURES / "codex-error-span.json").read_bytes())
    assert bridge.post((CAPTURES / "codex-error-span.json").read_bytes()).status_code == 200
    record = _record_of(bridge, s3, delivery)
    assert record["status"] == "error"
    assert record["status_message"] == "The client has disconnected"
    assert record["cost"] is None and record["input_tokens"] is None  # not invented
    assert record["completion"] is None
    assert record["prompt"] and record["session_id"] == EXPECTED["sessions"]["codex"]["session_id"]
    assert record["events"][0]["name"] == "exception"
    assert record["events"][0]["attributes"]["exception.message"] == "The client has disconnected"


def test_privacy_mode_delivery_has_null_prompt_and_completion(bridge, s3):
    delivery = orjson.loads(capture_lines("pi.ndjson")[0])
    for resource_spans in delivery["resourceSpans"]:
        for span in resource_spans["scopeSpans"][0]["spans"]:
            span["attributes"] = [a for a in span["attributes"]
                                  if a["key"] not in ("gen_ai.prompt", "gen_ai.completion")]
            span["traceId"] = "ab" * 16
    generation_id = "gen-1790606294-privacymodeprivacy01"
    delivery["resourceSpans"][0]["resource"]["attributes"][1]["value"]["stringValue"] = generation_id
    root = root_span(delivery)
    root["attributes"] = [a if a["key"] != "gen_ai.response.id" else
                          {"key": a["key"], "value": {"stringValue": generation_id}} for a in root["attributes"]]
    assert bridge.post(orjson.dumps(delivery)).status_code == 200
    record = _record_of(bridge, s3, delivery)
    assert record["prompt"] is None and record["completion"] is None
    assert record["input_tokens"] == 2489 and record["cost"] == 0.005334


def test_connection_test_is_acknowledged_and_not_stored(bridge, s3):
    before = list_keys(s3, bridge.bucket)
    response = bridge.post((CAPTURES / "connection-test.json").read_bytes())
    assert response.status_code == 200 and response.json() == {}
    assert list_keys(s3, bridge.bucket) == before


@pytest.mark.parametrize("body", [b"", b"{}", b'{"resourceSpans":[]}'])
def test_empty_requests_succeed_and_store_nothing(bridge, s3, body):
    before = list_keys(s3, bridge.bucket)
    response = bridge.post(body, headers={"X-Test-Connection": "true"})
    assert response.status_code == 200 and response.json() == {}
    assert list_keys(s3, bridge.bucket) == before


@pytest.mark.parametrize("coding,compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data, wbits=-15)),
])
def test_compressed_deliveries(bridge, s3, coding, compress):
    line = capture_lines("codex.ndjson")[2]
    s3.delete_object(Bucket=bridge.bucket, Key=key_for(*_ids(line)))
    response = bridge.post(compress(line), headers={"Content-Encoding": coding})
    assert response.status_code == 200, response.text
    assert _record_of(bridge, s3, orjson.loads(line))["generation_id"] == _ids(line)[0]


def test_redelivery_overwrites_the_same_key(bridge, s3):
    line = capture_lines("pi.ndjson")[3]
    generation_id, start = _ids(line)
    for _ in range(3):
        assert bridge.post(line).status_code == 200
    matching = [key for key in list_keys(s3, bridge.bucket) if generation_id in key]
    assert matching == [key_for(generation_id, start)]


def _ids(line: bytes) -> tuple[str, int]:
    root = root_span(orjson.loads(line))
    return attribute(root, "gen_ai.response.id"), int(root["startTimeUnixNano"])
