"""Benchmark payloads: OpenRouter-shaped deliveries (root + 2 children, ~10 KB prompt and
completion) and GenAI SDK-shaped batches, as OTLP/JSON and OTLP/protobuf, with distinct ids."""

from __future__ import annotations

import hashlib
import json

import orjson

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


def genai_batch(batch_index: int, spans: int, start_unix_nano: int) -> dict:
    """`spans` chat spans (GenAI semantic conventions), each its own trace, in one export request."""
    out = []
    for n in range(spans):
        trace_id = hashlib.sha256(f"{batch_index}:{n}".encode()).hexdigest()[:32]
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                      "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                      "gen_ai.response.id": f"chatcmpl-{batch_index}-{n}", "gen_ai.usage.input_tokens": 120,
                      "gen_ai.usage.output_tokens": 42, "gen_ai.conversation.id": f"conv-{batch_index}",
                      "user.id": "customer-9", "gen_ai.request.temperature": 0.2, "server.address": "api.openai.com"}
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
