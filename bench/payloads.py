"""Benchmark payloads: OpenRouter-shaped deliveries (root + 2 children, ~10 KB prompt and
completion) and GenAI SDK-shaped batches, as OTLP/JSON and OTLP/protobuf, with distinct ids."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_s3_bridge.sample import sample_delivery

PROMPT_TEXT = ("You are a careful assistant. " * 40)[:1000]
COMPLETION_TEXT = ("The answer, step by step: " * 50)[:1200]


def openrouter_delivery(generation_id: str, start_unix_nano: int) -> dict:
    """The "Send Trace" sample with a ~10 KB prompt and completion, like a real agent turn."""
    delivery = sample_delivery(generation_id, start_unix_nano)
    messages = [{"role": "system", "content": PROMPT_TEXT}]
    messages += [{"role": "user" if n % 2 else "assistant", "content": PROMPT_TEXT} for n in range(8)]
    completion = {"completion": COMPLETION_TEXT * 8, "reasoning": COMPLETION_TEXT,
                  "toolCalls": [{"id": "call_1", "type": "function",
                                 "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}]}
    for attribute in delivery["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]:
        if attribute["key"] == "gen_ai.prompt":
            attribute["value"] = {"stringValue": json.dumps({"messages": messages})}
        elif attribute["key"] == "gen_ai.completion":
            attribute["value"] = {"stringValue": json.dumps(completion)}
    return delivery


CONTENT = {"gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]}]',
           "gen_ai.output.messages": '[{"role": "assistant", "finish_reason": "stop", '
                                     '"parts": [{"type": "text", "content": "Paris."}]}]'}


def genai_batch(batch_index: int, spans: int, start_unix_nano: int, content: bool = False) -> dict:
    """`spans` chat spans (GenAI semantic conventions), each its own trace, in one export request.
    Without `content` as OpenTelemetry's instrumentation sends them by default (prompt and
    completion go as log records: each record also leaves a join half); with it, on the span."""
    out = []
    for n in range(spans):
        trace_id = hashlib.sha256(f"{batch_index}:{n}".encode()).hexdigest()[:32]
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                      "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                      "gen_ai.response.id": f"chatcmpl-{batch_index}-{n}", "gen_ai.usage.input_tokens": 120,
                      "gen_ai.usage.output_tokens": 42, "gen_ai.conversation.id": f"conv-{batch_index}",
                      "user.id": "customer-9", "gen_ai.request.temperature": 0.2, "server.address": "api.openai.com",
                      **(CONTENT if content else {})}
        out.append({"traceId": trace_id, "spanId": trace_id[:16], "name": "chat gpt-4o-mini", "kind": 3,
                    "startTimeUnixNano": str(start_unix_nano), "endTimeUnixNano": str(start_unix_nano + 900_000_000),
                    "attributes": [{"key": k, "value": ({"intValue": str(v)} if isinstance(v, int) else
                                                        {"doubleValue": v} if isinstance(v, float) else
                                                        {"stringValue": v})} for k, v in attributes.items()]})
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                            "value": {"stringValue": "bench-app"}}]},
                               "scopeSpans": [{"scope": {"name": "bench"}, "spans": out}]}]}


def to_json(document: dict) -> bytes:
    return orjson.dumps(document)


# --- templates for the load generators: distinct ids are spliced in per request --------------------

GEN_MARKER = "G" * 20  # 20 characters of the generation id, replaced per request
TRACE_MARKER = "feedfacefeedfacefeedfacefeedface"  # an OpenRouter delivery's trace id
BATCH_MARKER = "deadbeefdeadbeef"  # first half of every trace id in a GenAI batch


def to_protobuf(document: dict) -> bytes:
    """OTLP/JSON (hex ids) -> OTLP/protobuf, through protobuf's own JSON parser (bench tooling only)."""
    document = copy.deepcopy(document)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if span.get(name):
                        span[name] = base64.b64encode(bytes.fromhex(span[name])).decode()
    return json_format.ParseDict(document, ExportTraceServiceRequest()).SerializeToString()


def openrouter_template(start_unix_nano: int) -> dict:
    delivery = openrouter_delivery(f"gen-{start_unix_nano // 10**9}-{GEN_MARKER}", start_unix_nano)
    for resource_spans in delivery["resourceSpans"]:
        for span in resource_spans["scopeSpans"][0]["spans"]:
            span["traceId"] = TRACE_MARKER
    return delivery


def batch_template(spans: int, start_unix_nano: int, content: bool = False) -> dict:
    document = genai_batch(0, spans, start_unix_nano, content)
    for n, span in enumerate(document["resourceSpans"][0]["scopeSpans"][0]["spans"]):
        span["traceId"] = BATCH_MARKER + f"{n + 1:016x}"
        span["spanId"] = f"{n + 1:016x}"
    return document


MARKERS_JSON = {GEN_MARKER.encode(): "gen20", TRACE_MARKER.encode(): "hex32", BATCH_MARKER.encode(): "hex16"}
MARKERS_PROTOBUF = {GEN_MARKER.encode(): "gen20", bytes.fromhex(TRACE_MARKER): "raw16",
                    bytes.fromhex(BATCH_MARKER): "raw8"}


def marker_positions(body: bytes, markers: dict[bytes, str]) -> list[tuple[int, int, str]]:
    found = []
    for marker, kind in markers.items():
        start = body.find(marker)
        while start >= 0:
            found.append((start, len(marker), kind))
            start = body.find(marker, start + len(marker))
    return sorted(found)


def fill(body: bytes, markers: dict[bytes, str], thread: int, counter: int) -> bytes:
    """The same substitution the Lua script makes, for the Python load generators."""
    hex16 = f"{thread:08x}{counter:08x}"
    values = {"gen20": f"{thread:04d}{counter:016d}".encode(), "hex16": hex16.encode(),
              "hex32": (hex16 + "0123456789abcdef").encode(), "raw8": bytes.fromhex(hex16),
              "raw16": bytes.fromhex(hex16 + "0123456789abcdef")}
    for marker, kind in markers.items():
        body = body.replace(marker, values[kind])
    return body


INSTRUCTION = ("Summarise the quarterly figures for the board, region by region, in plain words. " * 13)[:1000]


def openinference_batch(spans: int) -> bytes:
    """OTLP/protobuf: `spans` OpenInference LLM spans (a 1 KB prompt each, ~1.5 KB a span), each
    its own trace, random ids: issue 21's honest export (100 spans: 149 KB)."""
    out = []
    for _ in range(spans):
        trace_id = uuid.uuid4().hex
        attributes = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
                      "llm.token_count.prompt": 250, "llm.token_count.completion": 40, "llm.token_count.total": 290,
                      "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": INSTRUCTION,
                      "llm.output_messages.0.message.role": "assistant",
                      "llm.output_messages.0.message.content": "Revenue rose in every region but one.",
                      "session.id": "session-1", "user.id": "customer-7"}
        out.append({"traceId": trace_id, "spanId": trace_id[:16], "name": "ChatCompletion", "kind": 1,
                    "startTimeUnixNano": "1790606294318000000", "endTimeUnixNano": "1790606295318000000",
                    "attributes": [{"key": key, "value": {"intValue": str(value)} if isinstance(value, int)
                                    else {"stringValue": value}} for key, value in attributes.items()]})
    return to_protobuf({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "bench-app"}}]}, "scopeSpans": [{"spans": out}]}]})
