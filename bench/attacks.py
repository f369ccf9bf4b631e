"""Hostile and oversized export requests, shared by the hardening tests and `bench/hardening.py`.

Each builder returns the bytes a client would send (and, where it matters, its Content-Type and
Content-Encoding). Ids are random, so every call is a new export."""

from __future__ import annotations

import gzip
import uuid

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

JSON, PROTOBUF = "application/json", "application/x-protobuf"
START = "1790606294318000000"


def llm_span(prompt: str | None = None) -> dict:
    trace_id = uuid.uuid4().hex
    attributes = [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                  {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}}]
    if prompt is not None:
        attributes.append({"key": "gen_ai.input.messages",
                           "value": {"stringValue": orjson.dumps([{"role": "user", "content": prompt}]).decode()}})
    return {"traceId": trace_id, "spanId": trace_id[:16], "name": "chat gpt-4o-mini", "kind": 3,
            "startTimeUnixNano": START, "endTimeUnixNano": START, "attributes": attributes}


def export(spans: list[dict], resource: dict[str, str] | None = None) -> dict:
    attributes = [{"key": key, "value": {"stringValue": value}}
                  for key, value in (resource or {"service.name": "attack"}).items()]
    return {"resourceSpans": [{"resource": {"attributes": attributes}, "scopeSpans": [{"spans": spans}]}]}


def amplified_gzip() -> bytes:
    """~30 KiB of gzip: one 4 MiB resource attribute shared by 600 LLM spans (each its own trace)."""
    document = export([llm_span() for _ in range(600)], {"service.name": "attack", "blob": "x" * (4 * 1024 * 1024)})
    return gzip.compress(orjson.dumps(document), 9)


def amplified_plain() -> bytes:
    """~2.1 MiB: a 2 MiB resource attribute shared by 600 LLM spans."""
    document = export([llm_span() for _ in range(600)], {"service.name": "attack", "blob": "y" * (2 * 1024 * 1024)})
    return orjson.dumps(document)


def many_spans_protobuf(count: int = 100_000) -> bytes:
    """`count` minimal LLM spans, each its own trace, in one OTLP/protobuf request."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    for _ in range(count):
        trace_id = uuid.uuid4().bytes
        span = scope_spans.spans.add(trace_id=trace_id, span_id=trace_id[:8], name="chat", kind=3,
                                     start_time_unix_nano=int(START), end_time_unix_nano=int(START))
        attribute = span.attributes.add(key="gen_ai.request.model")
        attribute.value.string_value = "gpt-4o-mini"
    return request.SerializeToString()


def largest_json(limit_bytes: int = 20 * 1024 * 1024) -> bytes:
    """An OTLP/JSON export just under `limit_bytes`: LLM spans with ~9 KB prompts each."""
    prompt = "Summarise the meeting notes below. " * 256
    one = len(orjson.dumps(llm_span(prompt)))
    return orjson.dumps(export([llm_span(prompt) for _ in range(int(limit_bytes * 0.97) // (one + 1))]))


def small_spans_json(limit_bytes: int = 20 * 1024 * 1024) -> bytes:
    """An OTLP/JSON export just under `limit_bytes` of LLM spans of about 1.1 KB (each its own
    trace): about 18,700 of them, whose records are more than --max-decoded-bytes (32 MiB)."""
    prompt = ("Which of these invoices are overdue, and by how many days? " * 12)[:700]
    one = len(orjson.dumps(llm_span(prompt))) + 1
    return orjson.dumps(export([llm_span(prompt) for _ in range(int(limit_bytes * 0.99) // one)]))


def empty_gzip_members(size_bytes: int) -> bytes:
    """A body made only of empty gzip members (each used to copy the rest of the body)."""
    member = gzip.compress(b"")
    return member * (size_bytes // len(member))
