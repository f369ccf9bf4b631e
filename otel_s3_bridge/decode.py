"""Spans -> LLM trace records (schema v1): the one decode path for every transport.

Pure: spans, the authenticated key name, the transport and the receive time go in; records come
out. Spans are grouped by OTLP trace id; each span with LLM attributes yields one record and the
other spans of its group become its `observations`; a group without one yields one `otlp`
record. A value the payload does not carry is null, never guessed; every attribute not mapped to
a field stays in `attributes`. This module must not do I/O, read clocks or know about transports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from .otlp import Span
from .record import SCHEMA

CONNECTION_TEST_SPAN = "openrouter-connection-test"

MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name",
              "llm.request.model_name", "llm.response.model_name")
USAGE_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
              "gen_ai.usage.completion_tokens", "llm.token_count.prompt", "llm.token_count.completion",
              "llm.token_count.total")
STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}
KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
METADATA_PREFIX = "trace.metadata."
OPENROUTER_METADATA_PREFIX = "trace.metadata.openrouter."


@dataclass(slots=True)
class DecodeResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    connection_tests: int = 0


def rfc3339(unix_nano: int) -> str:
    """`2026-09-28T10:01:02.318Z`: UTC with milliseconds."""
    seconds, rest = divmod(unix_nano, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}.{rest // 1_000_000:03d}Z"


def _duration_ms(start: int, end: int) -> float | None:
    return (end - start) / 1e6 if start and end >= start else None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _json_text(value: Any) -> Any:
    """A JSON document carried in a string attribute, or None when it is not one (e.g. truncated)."""
    if not isinstance(value, str):
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


class _Attributes:
    """The LLM span's attributes, remembering which ones a record field consumed."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.values = attributes
        self.used: set[str] = set()
        self.added: dict[str, Any] = {}

    def pick(self, *keys: str, convert: Callable[[Any], Any] = lambda v: v) -> Any:
        """First key (in precedence order) with a usable value wins; equal losers are duplicates
        and are consumed too, a disagreeing loser stays visible in `attributes`."""
        winner = None
        for key in keys:
            if key not in self.values:
                continue
            value = convert(self.values[key])
            if value is None:
                continue
            if winner is None:
                winner = value
                self.used.add(key)
            elif value == winner:
                self.used.add(key)
        return winner

    def drop_duplicate(self, key: str, of_value: Any) -> None:
        if key in self.values and self.values[key] == of_value:
            self.used.add(key)

    def remaining(self) -> dict[str, Any]:
        rest = {key: value for key, value in self.values.items() if key not in self.used}
        rest.update(self.added)
        return rest


def _is_llm(span: Span) -> bool:
    attributes = span.attributes
    return (any(attributes.get(key) is not None for key in MODEL_KEYS)
            or any(attributes.get(key) is not None for key in USAGE_KEYS)
            or attributes.get("openinference.span.kind") == "LLM")


def _source(span: Span) -> str:
    keys = span.attributes.keys()
    if (span.resource.get("service.name") == "openrouter" or span.scope_name == "openrouter"
            or any(key.startswith(OPENROUTER_METADATA_PREFIX) for key in keys)):
        return "openrouter"
    if "openinference.span.kind" in keys or any(key.startswith("llm.") for key in keys):
        return "openinference"
    if any(key.startswith(("traceloop.", "gen_ai.prompt.0.", "gen_ai.completion.0.")) for key in keys):
        return "openllmetry"
    if any(key.startswith("gen_ai.") for key in keys):
        return "gen_ai"
    return "otlp"


def _prompt(a: _Attributes) -> Any:
    raw = a.values.get("gen_ai.prompt")
    document = _json_text(raw)
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        a.used.add("gen_ai.prompt")
        a.drop_duplicate("span.input", raw)
        for key, value in document.items():
            if key != "messages":
                a.added[f"gen_ai.prompt.{key}"] = value
        return document["messages"]
    if isinstance(document, list):
        a.used.add("gen_ai.prompt")
        a.drop_duplicate("span.input", raw)
        return document

    messages = _structured(a, "gen_ai.input.messages")
    system = _structured(a, "gen_ai.system_instructions")
    if messages is None and system is None:
        return None
    prompt = [{"role": "system", "parts": system}] if system else []
    return prompt + (messages or [])


def _structured(a: _Attributes, key: str) -> list[Any] | None:
    """A message list sent either as a JSON string or as a structured (array) attribute value."""
    value = a.values.get(key)
    if isinstance(value, str):
        value = _json_text(value)
    if isinstance(value, list):
        a.used.add(key)
        return value
    return None


def _completion(a: _Attributes) -> dict[str, Any] | None:
    raw = a.values.get("gen_ai.completion")
    document = _json_text(raw)
    if isinstance(document, dict) and {"completion", "reasoning", "toolCalls", "tool_calls"} & document.keys():
        a.used.add("gen_ai.completion")
        a.drop_duplicate("span.output", raw)
        for key, value in document.items():
            if key not in ("completion", "reasoning", "toolCalls", "tool_calls"):
                a.added[f"gen_ai.completion.{key}"] = value
        completion = {"text": document.get("completion"), "reasoning": document.get("reasoning"),
                      "tool_calls": document.get("toolCalls") or document.get("tool_calls") or None}
        return completion if any(value not in (None, "") for value in completion.values()) else None

    messages = _structured(a, "gen_ai.output.messages")
    if messages is None:
        return None
    parts = [part for message in messages if isinstance(message, dict)
             for part in message.get("parts") or () if isinstance(part, dict)]
    text = "".join(str(p.get("content", "")) for p in parts if p.get("type") == "text") or None
    reasoning = "".join(str(p.get("content", "")) for p in parts if p.get("type") == "reasoning") or None
    tool_calls = [p for p in parts if p.get("type") == "tool_call"] or None
    return {"text": text, "reasoning": reasoning, "tool_calls": tool_calls}


def _finish_reason(a: _Attributes) -> str | None:
    reason = a.pick("gen_ai.response.finish_reason", convert=_as_text)
    raw_list = a.values.get("gen_ai.response.finish_reasons")
    reasons = _json_text(raw_list) if isinstance(raw_list, str) else raw_list
    if isinstance(reasons, list):
        if reason is None and reasons:
            reason = str(reasons[0])
            a.used.add("gen_ai.response.finish_reasons")
        elif reasons == [reason]:
            a.used.add("gen_ai.response.finish_reasons")
    return reason


def _metadata(a: _Attributes) -> dict[str, Any] | None:
    metadata: dict[str, Any] = {}
    for key, value in a.values.items():
        if key.startswith(METADATA_PREFIX) and not key.startswith(OPENROUTER_METADATA_PREFIX):
            metadata[key[len(METADATA_PREFIX):]] = value
            a.used.add(key)
    openinference = a.values.get("metadata")
    document = _json_text(openinference) if isinstance(openinference, str) else openinference
    if isinstance(document, dict):
        metadata.update(document)
        a.used.add("metadata")
    return metadata or None


def _status_message(span: Span, a: _Attributes) -> str | None:
    message = span.status_message or None
    attribute = a.values.get("span.status_message")
    if attribute is not None and (message is None or attribute == message):
        a.used.add("span.status_message")
        message = message or _as_text(attribute)
    return message


def _time_to_first_token_ms(a: _Attributes) -> float | None:
    first_token_ms = a.pick("trace.metadata.openrouter.first_token_ms", convert=_as_float)
    if first_token_ms is not None:
        return first_token_ms
    seconds = a.pick("gen_ai.response.time_to_first_chunk", convert=_as_float)
    return None if seconds is None else seconds * 1000.0


def _total_tokens(a: _Attributes, input_tokens: int | None, output_tokens: int | None) -> int | None:
    total = a.pick("gen_ai.usage.total_tokens", "llm.token_count.total", "llm.usage.total_tokens",
                   convert=_as_int)
    if total is None and input_tokens is not None and output_tokens is not None:
        return input_tokens + output_tokens
    return total


def _events(span: Span) -> list[dict[str, Any]]:
    return [{"name": e["name"], "timestamp": rfc3339(e["time_unix_nano"]) if e["time_unix_nano"] else None,
             "time_unix_nano": e["time_unix_nano"] or None, "attributes": e["attributes"]} for e in span.events]


def _observation(span: Span) -> dict[str, Any]:
    return {
        "name": span.name,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "kind": KIND_NAMES.get(span.kind, str(span.kind)),
        "start_time_unix_nano": span.start_time_unix_nano or None,
        "end_time_unix_nano": span.end_time_unix_nano or None,
        "duration_ms": _duration_ms(span.start_time_unix_nano, span.end_time_unix_nano),
        "status": STATUS_NAMES.get(span.status_code, "unset"),
        "status_message": span.status_message or None,
        "attributes": span.attributes,
        "events": _events(span),
    }


def build_record(span: Span, observations: list[Span], *, key_name: str | None, transport: str,
                 received_at_unix_nano: int) -> dict[str, Any]:
    """One schema-v1 record for an LLM span (or a non-LLM root) and its sibling spans."""
    a = _Attributes(span.attributes)
    input_tokens = a.pick("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
                          convert=_as_int)
    output_tokens = a.pick("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                           "llm.token_count.completion", convert=_as_int)
    generation_id = a.pick("gen_ai.response.id", convert=_as_text)
    prompt = _prompt(a)
    completion = _completion(a)
    start = span.start_time_unix_nano
    record = {
        "schema": SCHEMA,
        "trace_id": _as_text(span.resource.get("openrouter.trace.id")) or span.trace_id,
        "otel_trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "generation_id": generation_id,
        "name": a.pick("trace.name", convert=_as_text) or span.name,
        "span_name": span.name,
        "timestamp": rfc3339(start) if start else None,
        "start_time_unix_nano": start or None,
        "end_time_unix_nano": span.end_time_unix_nano or None,
        "duration_ms": _duration_ms(start, span.end_time_unix_nano),
        "model": a.pick("gen_ai.response.model", "gen_ai.request.model", "llm.response.model_name",
                        "llm.model_name", convert=_as_text),
        "requested_model": a.pick("gen_ai.request.model", "llm.request.model_name", convert=_as_text),
        "provider": a.pick("trace.metadata.openrouter.provider_name", "gen_ai.provider.name", "gen_ai.system",
                           "llm.provider", convert=_as_text),
        "model_author": a.pick("gen_ai.provider.name", "gen_ai.system", "llm.provider", convert=_as_text),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": _total_tokens(a, input_tokens, output_tokens),
        "cached_tokens": a.pick("gen_ai.usage.input_tokens.cached", "gen_ai.usage.cache_read.input_tokens",
                                "llm.token_count.prompt_details.cache_read", convert=_as_int),
        "cache_write_tokens": a.pick("gen_ai.usage.input_tokens.cache_write",
                                     "gen_ai.usage.cache_creation.input_tokens",
                                     "llm.token_count.prompt_details.cache_write", convert=_as_int),
        "reasoning_tokens": a.pick("gen_ai.usage.output_tokens.reasoning", "gen_ai.usage.reasoning.output_tokens",
                                   "llm.token_count.completion_details.reasoning", convert=_as_int),
        "input_cost": a.pick("gen_ai.usage.input_cost", "llm.cost.prompt", convert=_as_float),
        "output_cost": a.pick("gen_ai.usage.output_cost", "llm.cost.completion", convert=_as_float),
        "cost": a.pick("gen_ai.usage.total_cost", "gen_ai.usage.cost", "llm.cost.total", convert=_as_float),
        "session_id": a.pick("session.id", "gen_ai.conversation.id", "langfuse.session.id", convert=_as_text),
        "customer_id": a.pick("user.id", "langfuse.user.id", convert=_as_text),
        "api_key_name": a.pick("trace.metadata.openrouter.api_key_name", convert=_as_text),
        "finish_reason": _finish_reason(a),
        "native_finish_reason": a.pick("trace.metadata.openrouter.finish_reason", convert=_as_text),
        "time_to_first_token_ms": _time_to_first_token_ms(a),
        "status": STATUS_NAMES.get(span.status_code, "unset"),
        "status_message": _status_message(span, a),
        "prompt": prompt,
        "completion": completion,
        "metadata": _metadata(a),
        "observations": [_observation(other) for other in observations],
        "events": _events(span),
        "links": span.links,
        "attributes": None,
        "resource": span.resource,
        "scope": {"name": span.scope_name or None, "version": span.scope_version or None},
        "source": _source(span),
        "ingest": {"received_at": rfc3339(received_at_unix_nano), "key_name": key_name, "transport": transport},
    }
    record["attributes"] = a.remaining()
    return record


def _group_by_trace(spans: Iterable[Span]) -> dict[str, list[Span]]:
    groups: dict[str, list[Span]] = {}
    for span in spans:
        groups.setdefault(span.trace_id, []).append(span)
    return groups


def _owner(span: Span, by_id: dict[str, Span], llm_ids: set[str], default: str) -> str:
    """The nearest LLM ancestor of a span within its group, else the group's first LLM span."""
    seen: set[str] = set()
    parent = span.parent_span_id
    while parent and parent in by_id and parent not in seen:
        if parent in llm_ids:
            return parent
        seen.add(parent)
        parent = by_id[parent].parent_span_id
    return default


def decode(spans: Iterable[Span], *, key_name: str | None, transport: str,
           received_at_unix_nano: int) -> DecodeResult:
    """Group spans by trace and build one record per LLM span (or per group without one)."""
    result = DecodeResult()
    kept = []
    for span in spans:
        if span.name == CONNECTION_TEST_SPAN:
            result.connection_tests += 1
        else:
            kept.append(span)

    for group in _group_by_trace(kept).values():
        llm_spans = [span for span in group if _is_llm(span)]
        if not llm_spans:
            ids = {span.span_id for span in group}
            roots = [span for span in group if span.parent_span_id not in ids] or group
            llm_spans = [min(roots, key=lambda span: span.start_time_unix_nano)]
        llm_ids = {span.span_id for span in llm_spans}
        by_id = {span.span_id: span for span in group}
        observations: dict[str, list[Span]] = {span.span_id: [] for span in llm_spans}
        for span in group:
            if span.span_id not in llm_ids:
                observations[_owner(span, by_id, llm_ids, llm_spans[0].span_id)].append(span)
        for span in llm_spans:
            result.records.append(build_record(
                span, observations[span.span_id], key_name=key_name, transport=transport,
                received_at_unix_nano=received_at_unix_nano))
    return result
