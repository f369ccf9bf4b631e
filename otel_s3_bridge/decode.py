"""Spans -> LLM trace records (schema v1): the one decode path for every transport.

Pure: spans, the authenticated key name, the transport and the receive time go in; records come
out. Spans are grouped by OTLP trace id; each LLM span (one with model or usage attributes in any
convention) that has no LLM span below it yields one record, and the other spans of its group
become `observations`; a group without one yields one `otlp` record (or is dropped and counted,
with `non_llm_spans="drop"`). Field precedence follows `openrouter-broadcast.md` §6: the first
source that has a value wins, a loser with a different value stays in `attributes`. A value the
payload does not carry is null, never guessed. Must not do I/O, read clocks or know transports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import messages
from .messages import json_or_value, json_text
from .otlp import Span
from .record import SCHEMA

CONNECTION_TEST_SPAN = "openrouter-connection-test"

MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name", "llm.request.model_name",
              "llm.response.model_name", "ai.model.id", "langfuse.observation.model.name")
USAGE_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
              "gen_ai.usage.completion_tokens", "llm.token_count.prompt", "llm.token_count.completion",
              "llm.token_count.total", "llm.usage.total_tokens", "ai.usage.promptTokens", "ai.usage.inputTokens",
              "langfuse.observation.usage_details")
STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}
KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
OPENROUTER_PREFIXES = ("trace.metadata.openrouter.", "trace.metadata.openrouter_generation.")
METADATA_PREFIXES = ("trace.metadata.", "traceloop.association.properties.", "ai.telemetry.metadata.",
                     "langfuse.trace.metadata.", "langfuse.observation.metadata.")
LANGFUSE_JSON = ("langfuse.observation.usage_details", "langfuse.observation.cost_details")
METADATA_HEADS = {".".join(prefix.split(".")[:2]) for prefix in METADATA_PREFIXES}
OPENINFERENCE_PREFIXES = ("openinference.", "llm.input_messages.", "llm.output_messages.", "llm.token_count.",
                          "llm.cost.", "llm.model_name", "llm.provider", "llm.system", "llm.invocation_parameters")
OPENLLMETRY_PREFIXES = ("traceloop.", "llm.request.type", "llm.usage.", "gen_ai.prompt.0.", "gen_ai.completion.0.")
NON_LLM_KEEP, NON_LLM_DROP = "keep", "drop"


USAGE_DETAILS, COST_DETAILS = "langfuse.observation.usage_details.", "langfuse.observation.cost_details."


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


# Record fields taken straight from attributes: the sources in precedence order, and the type.
FIELD_SOURCES: dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]] = {
    "generation_id": (("gen_ai.response.id", "ai.response.id"), _as_text),
    "name": (("trace.name", "langfuse.trace.name"), _as_text),
    "model": (("gen_ai.response.model", "gen_ai.request.model", "llm.response.model_name", "llm.model_name",
               "ai.response.model", "ai.model.id", "langfuse.observation.model.name"), _as_text),
    "requested_model": (("gen_ai.request.model", "llm.request.model_name", "ai.model.id"), _as_text),
    "provider": (("trace.metadata.openrouter.provider_name", "gen_ai.provider.name", "gen_ai.system",
                  "llm.provider", "ai.model.provider"), _as_text),
    "model_author": (("gen_ai.provider.name", "gen_ai.system", "llm.system", "llm.provider"), _as_text),
    "input_tokens": (("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
                      "ai.usage.inputTokens", "ai.usage.promptTokens", USAGE_DETAILS + "input"), _as_int),
    "output_tokens": (("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion",
                       "ai.usage.outputTokens", "ai.usage.completionTokens", USAGE_DETAILS + "output"), _as_int),
    "total_tokens": (("gen_ai.usage.total_tokens", "llm.token_count.total", "llm.usage.total_tokens",
                      "ai.usage.totalTokens", USAGE_DETAILS + "total"), _as_int),
    "cached_tokens": (("gen_ai.usage.input_tokens.cached", "gen_ai.usage.cache_read.input_tokens",
                       "gen_ai.usage.cache_read_input_tokens", "llm.token_count.prompt_details.cache_read",
                       "ai.usage.cachedInputTokens", USAGE_DETAILS + "input_cached_tokens",
                       USAGE_DETAILS + "cache_read_input_tokens"), _as_int),
    "cache_write_tokens": (("gen_ai.usage.input_tokens.cache_write", "gen_ai.usage.cache_creation.input_tokens",
                            "gen_ai.usage.cache_creation_input_tokens", "llm.token_count.prompt_details.cache_write",
                            USAGE_DETAILS + "cache_creation_input_tokens"), _as_int),
    "reasoning_tokens": (("gen_ai.usage.output_tokens.reasoning", "gen_ai.usage.reasoning.output_tokens",
                          "llm.token_count.completion_details.reasoning", "ai.usage.reasoningTokens",
                          USAGE_DETAILS + "output_reasoning_tokens"), _as_int),
    "input_cost": (("gen_ai.usage.input_cost", "llm.cost.prompt", COST_DETAILS + "input"), _as_float),
    "output_cost": (("gen_ai.usage.output_cost", "llm.cost.completion", COST_DETAILS + "output"), _as_float),
    "cost": (("gen_ai.usage.total_cost", "gen_ai.usage.cost", "llm.cost.total", COST_DETAILS + "total",
              "trace.metadata.openrouter_generation.usage"), _as_float),
    "session_id": (("session.id", "gen_ai.conversation.id", "langfuse.session.id"), _as_text),
    "customer_id": (("user.id", "langfuse.user.id"), _as_text),
    "api_key_name": (("trace.metadata.openrouter.api_key_name",), _as_text),
    "native_finish_reason": (("trace.metadata.openrouter.finish_reason",), _as_text),
}
# attribute key -> the fields it can fill, with its rank in each
KEY_FIELDS: dict[str, list[tuple[str, int]]] = {}
for _field, (_keys, _) in FIELD_SOURCES.items():
    for _rank, _key in enumerate(_keys):
        KEY_FIELDS.setdefault(_key, []).append((_field, _rank))


@dataclass(slots=True)
class DecodeResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    connection_tests: int = 0
    dropped_spans: int = 0


def rfc3339(unix_nano: int) -> str:
    """`2026-09-28T10:01:02.318Z`: UTC with milliseconds."""
    seconds, rest = divmod(unix_nano, 1_000_000_000)
    t = time.gmtime(seconds)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            f".{rest // 1_000_000:03d}Z")


def _unix_nano(rfc3339_text: Any) -> int | None:
    if not isinstance(rfc3339_text, str):
        return None
    try:
        moment = datetime.fromisoformat(rfc3339_text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp() * 1_000_000) * 1000


def _duration_ms(start: int, end: int) -> float | None:
    return (end - start) / 1e6 if start and end >= start else None


KEY_PLAIN, KEY_METADATA, KEY_OPENROUTER = 0, 1, 2
# What decoding needs to know of an attribute key, computed once per distinct key: the same few
# dozen keys arrive on every span. Bounded, since keys come from clients.
_KEY_INFO: dict[str, tuple[str, str, list[tuple[str, int]], int]] = {}
KEY_INFO_LIMIT = 50_000


def _key_info(key: str) -> tuple[str, str, list[tuple[str, int]], int]:
    first = key.find(".")
    second = key.find(".", first + 1) if first >= 0 else -1
    head = key[:second] if second >= 0 else key
    kind = KEY_PLAIN
    if head in METADATA_HEADS and key.startswith(METADATA_PREFIXES):
        kind = KEY_OPENROUTER if key.startswith(OPENROUTER_PREFIXES) else KEY_METADATA
    info = (key[:first] if first >= 0 else key, head, KEY_FIELDS.get(key, []), kind)
    if len(_KEY_INFO) < KEY_INFO_LIMIT:
        _KEY_INFO[key] = info
    return info


class _Attributes:
    """The LLM span's attributes, remembering which ones a record field consumed."""

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.values = attributes
        self.used: set[str] = set()
        self.added: dict[str, Any] = {}
        for key in LANGFUSE_JSON:  # JSON objects whose parts map to separate fields
            document = json_text(attributes.get(key))
            if isinstance(document, dict):
                self.values = values = {name: value for name, value in self.values.items() if name != key}
                values.update({f"{key}.{part}": value for part, value in document.items()})
        # One pass over the keys: the first one and two dotted segments of each ("gen_ai",
        # "gen_ai.prompt") let each convention's code skip a span that carries nothing of it;
        # the candidates of every table field and the metadata keys are collected on the way.
        self.roots: set[str] = set()
        self.heads: set[str] = set()
        self.candidates: dict[str, list[tuple[int, str, Any]]] = {}
        self.metadata_keys: list[str] = []
        self.openrouter = False
        for key, value in self.values.items():
            root, head, fields, kind = _KEY_INFO.get(key) or _key_info(key)
            self.roots.add(root)
            self.heads.add(head)
            for field_name, rank in fields:
                self.candidates.setdefault(field_name, []).append((rank, key, value))
            if kind == KEY_OPENROUTER:
                self.openrouter = True
            elif kind == KEY_METADATA:
                self.metadata_keys.append(key)

    def _choose(self, candidates: Iterable[tuple[str, Any]], convert: Callable[[Any], Any]) -> Any:
        """The first candidate (in precedence order) with a usable value wins; equal losers are
        duplicates and are consumed too, a disagreeing loser stays visible in `attributes`."""
        winner = None
        for key, value in candidates:
            value = convert(value)
            if value is None:
                continue
            if winner is None:
                winner = value
                self.used.add(key)
            elif value == winner:
                self.used.add(key)
        return winner

    def pick(self, *keys: str, convert: Callable[[Any], Any] = lambda v: v) -> Any:
        return self._choose(((key, self.values[key]) for key in keys if key in self.values), convert)

    def pick_fields(self) -> dict[str, Any]:
        """Every FIELD_SOURCES field at once, from the candidates collected in `__init__`."""
        fields = dict.fromkeys(FIELD_SOURCES)
        for field_name, found in self.candidates.items():
            ranked = found if len(found) == 1 else sorted(found, key=lambda item: item[0])
            fields[field_name] = self._choose(((key, value) for _, key, value in ranked),
                                              FIELD_SOURCES[field_name][1])
        return fields

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Unused attributes under `prefix`, keyed by the rest of their name."""
        return {key[len(prefix):]: value for key, value in self.values.items()
                if key.startswith(prefix) and key not in self.used}

    def consume(self, *keys: str) -> None:
        self.used.update(keys)

    def consume_prefix(self, prefix: str, rests: Iterable[str]) -> None:
        self.used.update(prefix + rest for rest in rests)

    def drop_duplicate(self, key: str, of_value: Any) -> None:
        if key in self.values and self.values[key] == of_value:
            self.used.add(key)

    def remaining(self) -> dict[str, Any]:
        rest = {key: value for key, value in self.values.items() if key not in self.used}
        rest.update(self.added)
        return rest


LLM_MARKER_KEYS = frozenset(MODEL_KEYS + USAGE_KEYS)


def _is_llm(span: Span) -> bool:
    attributes = span.attributes
    if any(attributes[key] is not None for key in LLM_MARKER_KEYS.intersection(attributes)):
        return True
    return (attributes.get("openinference.span.kind") == "LLM"
            or attributes.get("langfuse.observation.type") == "generation")


def _source(span: Span, a: _Attributes) -> str:
    keys = span.attributes.keys()
    if span.resource.get("service.name") == "openrouter" or span.scope_name == "openrouter" or a.openrouter:
        return "openrouter"
    if "langfuse" in a.roots:
        return "langfuse"
    if "ai" in a.roots:
        return "vercel_ai"
    if ("llm" in a.roots or "openinference" in a.roots) and any(key.startswith(OPENINFERENCE_PREFIXES)
                                                                for key in keys):
        return "openinference"
    if ("traceloop" in a.roots or a.heads & {"llm.request", "llm.usage"}
            or (a.heads & {"gen_ai.prompt", "gen_ai.completion"}
                and any(key.startswith(OPENLLMETRY_PREFIXES) for key in keys))):
        return "openllmetry"
    if "gen_ai" in a.roots:
        return "gen_ai"
    return "otlp"


# --- prompt and completion, in precedence order ----------------------------------------------------

def _openrouter_prompt(a: _Attributes) -> Any:
    raw = a.values.get("gen_ai.prompt")
    document = json_text(raw)
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        a.consume("gen_ai.prompt")
        a.drop_duplicate("span.input", raw)
        a.added.update({f"gen_ai.prompt.{key}": value for key, value in document.items() if key != "messages"})
        return document["messages"]
    if isinstance(document, list):
        a.consume("gen_ai.prompt")
        a.drop_duplicate("span.input", raw)
        return document
    return None


def _structured(a: _Attributes, key: str) -> list[Any] | None:
    """A message list sent as a JSON string or as a structured (array) attribute value."""
    value = json_or_value(a.values.get(key))
    if isinstance(value, list):
        a.consume(key)
        return value
    return None


def _genai_prompt(a: _Attributes) -> Any:
    system = _structured(a, "gen_ai.system_instructions")
    conversation = _structured(a, "gen_ai.input.messages")
    if system is None and conversation is None:
        return None
    return ([{"role": "system", "parts": system}] if system else []) + (conversation or [])


def _indexed(a: _Attributes, prefix: str) -> dict[str, Any]:
    """`prefix.N.…` attributes (N a list index), keyed `N.…`; other keys under the prefix are not."""
    if prefix[:-1] not in a.heads:
        return {}
    return {rest: value for rest, value in a.prefixed(prefix).items() if rest.split(".", 1)[0].isdigit()}


def _flattened_prompt(a: _Attributes, prefix: str, convert: Callable[[dict[str, Any]], list]) -> Any:
    flattened = _indexed(a, prefix)
    if not flattened:
        return None
    a.consume_prefix(prefix, flattened)
    return convert(flattened) or None


def _json_attribute_prompt(a: _Attributes, key: str) -> Any:
    value = json_or_value(a.values.get(key))
    if isinstance(value, list):
        a.consume(key)
        return value
    return None


def _text_prompt(a: _Attributes, key: str) -> Any:
    if key not in a.values or key in a.used:
        return None
    prompt = messages.messages_from_text(a.values[key])
    if prompt is not None:
        a.consume(key)
    return prompt


PROMPT_HEADS = {"gen_ai.prompt", "gen_ai.system_instructions", "gen_ai.input", "llm.input_messages",
                "ai.prompt", "langfuse.observation", "input.value"}
COMPLETION_HEADS = {"gen_ai.completion", "gen_ai.output", "llm.output_messages", "ai.response",
                    "langfuse.observation", "output.value"}


def _prompt(a: _Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    if not events and not a.heads & PROMPT_HEADS:
        return None
    for source in (
        _openrouter_prompt,
        _genai_prompt,
        lambda a: _flattened_prompt(a, "llm.input_messages.", messages.openinference_messages),
        lambda a: _flattened_prompt(a, "gen_ai.prompt.", messages.openllmetry_messages),
        lambda a: _json_attribute_prompt(a, "ai.prompt.messages"),
        lambda a: _text_prompt(a, "langfuse.observation.input"),
    ):
        prompt = source(a)
        if prompt is not None:
            return prompt
    from_events, used = messages.prompt_from_events(events)
    if from_events is not None:
        used_events.update(used)
        return from_events
    return _text_prompt(a, "input.value") or _text_prompt(a, "ai.prompt")


# A completion source returns None when the span does not use it, else (completion or None,
# finish reason carried inside that source or None).
CompletionFound = tuple[dict[str, Any] | None, str | None] | None


def _openrouter_completion(a: _Attributes) -> CompletionFound:
    raw = a.values.get("gen_ai.completion")
    document = json_text(raw)
    parts = ("completion", "reasoning", "toolCalls", "tool_calls")
    if not (isinstance(document, dict) and set(parts) & document.keys()):
        return None
    a.consume("gen_ai.completion")
    a.drop_duplicate("span.output", raw)
    a.added.update({f"gen_ai.completion.{key}": value for key, value in document.items() if key not in parts})
    return messages.completion(document.get("completion"), document.get("reasoning"),
                               document.get("toolCalls") or document.get("tool_calls")), None


def _genai_completion(a: _Attributes) -> CompletionFound:
    output = _structured(a, "gen_ai.output.messages")
    if output is None:
        return None
    first = output[0] if output and isinstance(output[0], dict) else {}
    return messages.completion_from_parts(output), _as_text(first.get("finish_reason"))


def _first_of_flattened(a: _Attributes, prefix: str, convert: Callable[[dict[str, Any]], list]) -> CompletionFound:
    """The first choice/message of a flattened list; later ones stay in `attributes`."""
    first = {rest: value for rest, value in _indexed(a, prefix).items() if rest.split(".", 1)[0] == "0"}
    if not first:
        return None
    a.consume_prefix(prefix, first)
    converted = convert(first)
    if not converted:
        return None, None
    return messages.completion_from_chat(converted[0]), _as_text(converted[0].get("finish_reason"))


def _as_list(value: Any) -> list[Any] | None:
    value = json_or_value(value)
    return value if isinstance(value, list) else None


def _vercel_completion(a: _Attributes) -> CompletionFound:
    text = a.pick("ai.response.text", convert=_as_text)
    tool_calls = a.pick("ai.response.toolCalls", convert=_as_list)
    reasoning = a.pick("ai.response.reasoning", convert=_as_text)
    if text is None and tool_calls is None and reasoning is None:
        return None
    return messages.completion(text, reasoning, tool_calls), None


def _text_completion(a: _Attributes, key: str) -> CompletionFound:
    if key not in a.values or key in a.used:
        return None
    result = messages.completion_from_text(a.values[key])
    if result is None:
        return None
    a.consume(key)
    return result, None


def _completion(a: _Attributes, events: list[dict[str, Any]], used_events: set[int]) -> tuple[Any, Any]:
    """(completion, finish reason found inside the completion's own source)."""
    if not events and not a.heads & COMPLETION_HEADS:
        return None, None
    for source in (
        _openrouter_completion,
        _genai_completion,
        lambda a: _first_of_flattened(a, "llm.output_messages.", messages.openinference_messages),
        lambda a: _first_of_flattened(a, "gen_ai.completion.", messages.openllmetry_messages),
        _vercel_completion,
        lambda a: _text_completion(a, "langfuse.observation.output"),
    ):
        found = source(a)
        if found is not None:
            return found
    from_events, finish, used = messages.completion_from_events(events)
    if used:
        used_events.update(used)
        return from_events, finish
    return _text_completion(a, "output.value") or (None, None)


def _single_reason(value: Any) -> str | None:
    """A finish reason, or a list of exactly one (a longer list is not one reason)."""
    value = json_or_value(value)
    if isinstance(value, list):
        return str(value[0]) if len(value) == 1 else None
    return _as_text(value)


def _finish_reason(a: _Attributes, from_completion: Any) -> str | None:
    reason = a.pick("gen_ai.response.finish_reason", "gen_ai.response.finish_reasons", "llm.finish_reason",
                    "ai.response.finishReason", convert=_single_reason)
    if reason is None:
        reasons = json_or_value(a.values.get("gen_ai.response.finish_reasons"))
        reason = str(reasons[0]) if isinstance(reasons, list) and reasons else None  # the list stays visible
    return reason or _as_text(from_completion)


# --- the other fields ------------------------------------------------------------------------------

def _metadata(a: _Attributes) -> dict[str, Any] | None:
    if not a.metadata_keys and "metadata" not in a.values:
        return None
    metadata: dict[str, Any] = {}
    for key in a.metadata_keys:
        if key in a.used:
            continue
        prefix = next(p for p in METADATA_PREFIXES if key.startswith(p))
        metadata.setdefault(key[len(prefix):], a.values[key])
        a.consume(key)
    openinference = json_or_value(a.values.get("metadata"))
    if isinstance(openinference, dict):
        for key, value in openinference.items():
            metadata.setdefault(key, value)
        a.consume("metadata")
    return metadata or None


def _status_message(span: Span, a: _Attributes) -> str | None:
    message = span.status_message or None
    for key in ("span.status_message", "langfuse.observation.status_message"):
        attribute = a.values.get(key)
        if attribute is not None and (message is None or attribute == message):
            a.consume(key)
            message = message or _as_text(attribute)
    return message


def _time_to_first_token_ms(a: _Attributes, start: int) -> float | None:
    first_token_ms = a.pick("trace.metadata.openrouter.first_token_ms", convert=_as_float)
    if first_token_ms is not None:
        return first_token_ms
    seconds = a.pick("gen_ai.response.time_to_first_chunk", convert=_as_float)
    if seconds is not None:
        return seconds * 1000.0
    milliseconds = a.pick("ai.response.msToFirstChunk", convert=_as_float)
    if milliseconds is not None:
        return milliseconds
    first_chunk = _unix_nano(a.values.get("langfuse.observation.completion_start_time"))
    if first_chunk is not None and start and first_chunk >= start:
        a.consume("langfuse.observation.completion_start_time")
        return (first_chunk - start) / 1e6
    return None


def _events(span_events: list[dict[str, Any]], skip: set[int]) -> list[dict[str, Any]]:
    return [{"name": e["name"], "timestamp": rfc3339(e["time_unix_nano"]) if e["time_unix_nano"] else None,
             "time_unix_nano": e["time_unix_nano"] or None, "attributes": e["attributes"]}
            for index, e in enumerate(span_events) if index not in skip]


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
        "events": _events(span.events, set()),
    }


def build_record(span: Span, observations: list[Span], *, key_name: str | None, transport: str,
                 received_at: str) -> dict[str, Any]:
    """One schema-v1 record for an LLM span (or a non-LLM root) and its sibling spans."""
    a = _Attributes(span.attributes)
    start = span.start_time_unix_nano
    used_events: set[int] = set()
    f = a.pick_fields()
    total_tokens = f["total_tokens"]
    if total_tokens is None and f["input_tokens"] is not None and f["output_tokens"] is not None:
        total_tokens = f["input_tokens"] + f["output_tokens"]
    prompt = _prompt(a, span.events, used_events)
    completion, completion_finish_reason = _completion(a, span.events, used_events)
    if completion and completion["text"] is not None:
        a.drop_duplicate("output.value", completion["text"])
    record = {
        "schema": SCHEMA,
        "trace_id": _as_text(span.resource.get("openrouter.trace.id")) or span.trace_id,
        "otel_trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "generation_id": f["generation_id"],
        "name": f["name"] or span.name,
        "span_name": span.name,
        "timestamp": rfc3339(start) if start else None,
        "start_time_unix_nano": start or None,
        "end_time_unix_nano": span.end_time_unix_nano or None,
        "duration_ms": _duration_ms(start, span.end_time_unix_nano),
        "model": f["model"],
        "requested_model": f["requested_model"],
        "provider": f["provider"],
        "model_author": f["model_author"],
        "input_tokens": f["input_tokens"],
        "output_tokens": f["output_tokens"],
        "total_tokens": total_tokens,
        "cached_tokens": f["cached_tokens"],
        "cache_write_tokens": f["cache_write_tokens"],
        "reasoning_tokens": f["reasoning_tokens"],
        "input_cost": f["input_cost"],
        "output_cost": f["output_cost"],
        "cost": f["cost"],
        "session_id": f["session_id"],
        "customer_id": f["customer_id"],
        "api_key_name": f["api_key_name"],
        "finish_reason": _finish_reason(a, completion_finish_reason),
        "native_finish_reason": f["native_finish_reason"],
        "time_to_first_token_ms": _time_to_first_token_ms(a, start),
        "status": STATUS_NAMES.get(span.status_code, "unset"),
        "status_message": _status_message(span, a),
        "prompt": prompt,
        "completion": completion,
        "metadata": None,
        "observations": [_observation(other) for other in observations],
        "events": _events(span.events, used_events),
        "links": span.links,
        "attributes": None,
        "resource": span.resource,
        "scope": {"name": span.scope_name or None, "version": span.scope_version or None},
        "source": _source(span, a),
        "ingest": {"received_at": received_at, "key_name": key_name, "transport": transport},
    }
    record["metadata"] = _metadata(a)
    record["attributes"] = a.remaining()
    return record


# --- grouping --------------------------------------------------------------------------------------

def _ancestors(span: Span, by_id: dict[str, Span]) -> Iterable[str]:
    seen: set[str] = set()
    parent = span.parent_span_id
    while parent and parent in by_id and parent not in seen:
        yield parent
        seen.add(parent)
        parent = by_id[parent].parent_span_id


def _record_spans(group: list[Span], by_id: dict[str, Span]) -> list[Span]:
    """LLM spans with no LLM span below them: a wrapper (Vercel `ai.generateText` around its
    `doGenerate` calls, a framework span around a client span) would count the same call twice."""
    llm_spans = [span for span in group if _is_llm(span)]
    wrappers = {ancestor for span in llm_spans for ancestor in _ancestors(span, by_id)}
    return [span for span in llm_spans if span.span_id not in wrappers]


def decode(spans: Iterable[Span], *, key_name: str | None, transport: str, received_at_unix_nano: int,
           non_llm_spans: str = NON_LLM_KEEP) -> DecodeResult:
    """Group spans by trace and build one record per LLM call (or per group without one)."""
    result = DecodeResult()
    received_at = rfc3339(received_at_unix_nano)
    groups: dict[str, list[Span]] = {}
    for span in spans:
        if span.name == CONNECTION_TEST_SPAN:
            result.connection_tests += 1
        else:
            groups.setdefault(span.trace_id, []).append(span)

    for group in groups.values():
        by_id = {span.span_id: span for span in group}
        record_spans = _record_spans(group, by_id)
        if not record_spans:
            if non_llm_spans == NON_LLM_DROP:
                result.dropped_spans += len(group)
                continue
            roots = [span for span in group if span.parent_span_id not in by_id] or group
            record_spans = [min(roots, key=lambda span: span.start_time_unix_nano)]
        record_ids = {span.span_id for span in record_spans}
        observations: dict[str, list[Span]] = {span.span_id: [] for span in record_spans}
        for span in group:
            if span.span_id not in record_ids:
                owner = next((a for a in _ancestors(span, by_id) if a in record_ids), record_spans[0].span_id)
                observations[owner].append(span)
        for span in record_spans:
            result.records.append(build_record(
                span, observations[span.span_id], key_name=key_name, transport=transport, received_at=received_at))
    return result
