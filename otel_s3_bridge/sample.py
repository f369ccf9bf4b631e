"""An OpenRouter-shaped sample delivery, like the dashboard's "Send Trace" button sends.

Pure: the generation id and time are arguments. Ids follow OpenRouter's rule (sha256 of the
generation id), so the sample decodes exactly like a real delivery. Must not do I/O.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Any

MODEL = "openai/gpt-4-turbo"


def new_generation_id(unix_seconds: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return f"gen-{unix_seconds}-{''.join(secrets.choice(alphabet) for _ in range(20))}"


def _sha(text: str, digits: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:digits]


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    def value(v: Any) -> dict[str, Any]:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": v}
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"stringValue": v}

    return [{"key": key, "value": value(v)} for key, v in values.items()]


def _resource_spans(generation_id: str, span: dict[str, Any]) -> dict[str, Any]:
    resource = {"service.name": "openrouter", "openrouter.trace.id": generation_id, "service.version": "1.0.0"}
    return {"resource": {"attributes": _attributes(resource)},
            "scopeSpans": [{"scope": {"name": "openrouter"}, "spans": [span]}]}


def sample_delivery(generation_id: str, start_unix_nano: int) -> dict[str, Any]:
    """One OTLP/JSON export request: a `Test Generation` root with its attempt and generation children."""
    trace_id = _sha(generation_id, 32)
    root_id = _sha(generation_id, 16)
    end = start_unix_nano + 1_200_000_000
    root = {
        "traceId": trace_id, "spanId": root_id, "name": "Test Generation", "kind": 3,
        "startTimeUnixNano": str(start_unix_nano), "endTimeUnixNano": str(end), "status": {"code": 1},
        "attributes": _attributes({
            "trace.name": "Test Trace - OpenRouter Observability",
            "span.type": "generation", "span.level": "DEFAULT",
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": MODEL, "gen_ai.response.model": MODEL, "gen_ai.response.id": generation_id,
            "gen_ai.usage.input_tokens": 24, "gen_ai.usage.output_tokens": 12, "gen_ai.usage.total_tokens": 36,
            "gen_ai.usage.input_cost": 0.00024, "gen_ai.usage.output_cost": 0.00036,
            "gen_ai.usage.total_cost": 0.0006,
            "gen_ai.prompt": '{"messages": [{"role": "user", "content": "Say hello to otel-s3-bridge."}]}',
            "gen_ai.completion": '{"completion": "Hello, otel-s3-bridge!", "reasoning": null, "toolCalls": []}',
            "gen_ai.response.finish_reasons": '["stop"]', "gen_ai.response.finish_reason": "stop",
            "trace.metadata.openrouter.source": "openrouter",
            "trace.metadata.openrouter.api_key_name": "send-test-trace",
            "trace.metadata.openrouter.provider_name": "OpenAI",
            "trace.metadata.openrouter.provider_slug": "openai",
            "trace.metadata.openrouter.finish_reason": "stop",
            "trace.metadata.openrouter.first_token_ms": 420.0,
        }),
    }
    attempt = {
        "traceId": trace_id, "spanId": _sha(f"{generation_id}:attempt-0", 16), "parentSpanId": root_id,
        "name": "provider attempt 1: OpenAI", "kind": 2, "startTimeUnixNano": str(start_unix_nano),
        "endTimeUnixNano": str(start_unix_nano + 400_000_000), "status": {"code": 1},
        "attributes": _attributes({"span.type": "span", "span.level": "DEFAULT",
                                   "span.metadata.attempt_index": 0, "span.metadata.status_code": 200,
                                   "gen_ai.operation.name": "chat",
                                   "gen_ai.response.id": f"{generation_id}:attempt-0",
                                   "trace.metadata.openrouter.provider_name": "OpenAI"}),
    }
    generation = {
        "traceId": trace_id, "spanId": _sha(f"{generation_id}:generation", 16), "parentSpanId": root_id,
        "name": "generation", "kind": 2, "startTimeUnixNano": str(start_unix_nano + 400_000_000),
        "endTimeUnixNano": str(end), "status": {"code": 1},
        "attributes": _attributes({"span.type": "span", "span.level": "DEFAULT", "gen_ai.operation.name": "chat",
                                   "gen_ai.response.id": f"{generation_id}:generation"}),
    }
    return {"resourceSpans": [_resource_spans(generation_id, span) for span in (root, attempt, generation)]}
