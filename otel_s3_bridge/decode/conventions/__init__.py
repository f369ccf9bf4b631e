"""The registry of LLM span conventions and the one precedence rule between them.

Each convention lives in its own module (`openrouter`, `gen_ai`, `openinference`, `openllmetry`,
`vercel_ai`, `langfuse`) as one `Convention`. Two explicit orders decide everything here:

- `FIELD_ORDER`: where several conventions could fill a record field (or supply the prompt,
  completion, finish reason, ...), the first convention in this order that has a value wins, and
  within it its own key order. OpenRouter first (its keys are the most specific about the call
  it served), then the OpenTelemetry standard, then each vendor's own. A prompt or completion
  found in a convention's `prompt`/`completion` sources always beats any `*_fallbacks` source.
- `SOURCE_ORDER`: which convention a span is said to come from (`source`): the most specific
  markers first, since OpenRouter, OpenLLMetry and Langfuse spans carry `gen_ai.*` keys too.

Adding a convention is one new module and one entry in each order. Pure; must not build records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ...govern.places import Places
from ...values import as_text
from ..messages import json_or_value
from ..spans import Span
from . import gen_ai, langfuse, openinference, openllmetry, openrouter, vercel_ai
from .base import FIELD_TYPES, Attributes, CompletionFound, Convention, Tables

FIELD_ORDER: Final[tuple[Convention, ...]] = (openrouter.CONVENTION, gen_ai.CONVENTION, openinference.CONVENTION,
                                              openllmetry.CONVENTION, vercel_ai.CONVENTION, langfuse.CONVENTION)
SOURCE_ORDER: Final[tuple[Convention, ...]] = (openrouter.CONVENTION, langfuse.CONVENTION, vercel_ai.CONVENTION,
                                               openinference.CONVENTION, openllmetry.CONVENTION, gen_ai.CONVENTION)
SOURCE_WITHOUT_CONVENTION: Final = "otlp"


def _tables() -> Tables:
    ranks: dict[str, list[tuple[str, int]]] = {}
    for field_name in FIELD_TYPES:
        keys = [key for convention in FIELD_ORDER for key in convention.fields.get(field_name, ())]
        for rank, key in enumerate(dict.fromkeys(keys)):  # a key shared by two conventions ranks once
            ranks.setdefault(key, []).append((field_name, rank))
    unknown = {name for convention in FIELD_ORDER for name in convention.fields} - set(FIELD_TYPES)
    assert not unknown, f"conventions map unknown record fields {unknown}"
    metadata_prefixes = tuple(prefix for convention in FIELD_ORDER for prefix in convention.metadata_prefixes)
    return Tables(
        key_fields={key: tuple(found) for key, found in ranks.items()},
        metadata_prefixes=metadata_prefixes,
        metadata_heads=frozenset(".".join(prefix.split(".")[:2]) for prefix in metadata_prefixes),
        json_object_keys=tuple(key for convention in FIELD_ORDER for key in convention.json_object_keys),
        json_lookup_keys=tuple(key for convention in FIELD_ORDER for key in convention.json_lookup_keys),
        own_prefixes=tuple(prefix for convention in FIELD_ORDER for prefix in convention.own_prefixes),
    )


TABLES: Final = _tables()
LLM_KEYS: Final = frozenset(key for convention in FIELD_ORDER for key in convention.llm_keys)
_LLM_TESTS: Final = tuple(convention.llm_if for convention in FIELD_ORDER if convention.llm_if is not None)
_WRAPPER_TESTS: Final = tuple(convention.wraps for convention in FIELD_ORDER if convention.wraps is not None)
_FINISH_REASON_KEYS: Final = tuple(key for convention in FIELD_ORDER for key in convention.finish_reason_keys)
_STATUS_MESSAGE_KEYS: Final = tuple(key for convention in FIELD_ORDER for key in convention.status_message_keys)
_METADATA_JSON_KEYS: Final = tuple(key for convention in FIELD_ORDER for key in convention.metadata_json_keys)
_CONTENT_HEADS: Final = frozenset(head for convention in FIELD_ORDER for head in convention.content_heads)
_PROMPT_SOURCES: Final = tuple(source for tier in ("prompt", "prompt_fallbacks") for convention in FIELD_ORDER
                               for source in getattr(convention, tier))
_COMPLETION_SOURCES: Final = tuple(source for tier in ("completion", "completion_fallbacks")
                                   for convention in FIELD_ORDER for source in getattr(convention, tier))
_FIRST_TOKEN_SOURCES: Final = tuple((convention.first_token_key, convention.time_to_first_token_ms)
                                    for convention in FIELD_ORDER if convention.time_to_first_token_ms is not None)
assert all(key for key, _ in _FIRST_TOKEN_SOURCES), "a convention reads a time to first token without naming its key"


def attributes_of(span: Span) -> Attributes:
    return Attributes(span.attributes, TABLES)


def is_llm(attributes: Mapping[str, Any]) -> bool:
    """Whether a span's attributes describe an LLM call (or a wrapper of calls) in any convention."""
    for key in attributes:  # (no intersection set and no generator: this runs for every span)
        if key in LLM_KEYS and attributes[key] is not None:
            return True
    return any(test(attributes) for test in _LLM_TESTS)


def is_call(span: Span) -> bool:
    """Whether a span is one LLM call: LLM attributes, and no convention says that it only wraps
    calls (Vercel's `ai.generateText` around its `ai.generateText.doGenerate` steps). Decided from
    the span alone, so that it does not depend on which other spans share its export."""
    return is_llm(span.attributes) and not any(wraps(span) for wraps in _WRAPPER_TESTS)


CONTENT_IN_LOGS: Final = frozenset(convention.source for convention in FIELD_ORDER if convention.content_in_logs)
_CONTENT_KEYS: Final = [key for convention in FIELD_ORDER for key in convention.content_keys]
# Where records hold message text and end-user identities, for the keys' policies (`govern`).
PLACES: Final = Places(
    content_keys=frozenset(key for key in _CONTENT_KEYS if not key.endswith(".")),
    content_prefixes=tuple(key for key in _CONTENT_KEYS if key.endswith(".")),
    content_events=frozenset({*gen_ai.PROMPT_EVENT_ROLES, gen_ai.CHOICE_EVENT, gen_ai.CONTENT_PROMPT_EVENT,
                              gen_ai.CONTENT_COMPLETION_EVENT, gen_ai.OPERATION_DETAILS_EVENT}),
    event_content_keys=frozenset({"content", "message", "tool_calls", "gen_ai.prompt", "gen_ai.completion"}),
    # what fills `customer_id` / `session_id`, and OpenTelemetry's `user.*` / `enduser.*` attributes
    identity_keys=frozenset(key for convention in FIELD_ORDER for name in ("customer_id", "session_id")
                            for key in convention.fields.get(name, ())),
    identity_prefixes=("user.", "enduser."),
)


def source_of(span: Span, a: Attributes) -> str:
    for convention in SOURCE_ORDER:  # (a loop, not next() of a generator: this runs for every record)
        if convention.detects(span, a):
            return convention.source
    return SOURCE_WITHOUT_CONVENTION


def _carries_content(a: Attributes, events: list[dict[str, Any]]) -> bool:
    """Whether any prompt or completion source could find something (most spans: none)."""
    return bool(events) or not a.heads.isdisjoint(_CONTENT_HEADS)


def prompt(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    if _carries_content(a, events):
        for source in _PROMPT_SOURCES:
            found = source(a, events, used_events)
            if found is not None:
                return found
    return None


def completion(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> tuple[Any, Any]:
    """(completion, finish reason found inside the completion's own source)."""
    if _carries_content(a, events):
        for source in _COMPLETION_SOURCES:
            found: CompletionFound = source(a, events, used_events)
            if found is not None:
                return found
    return None, None


def _single_reason(value: Any) -> str | None:
    """A finish reason, or a list of exactly one (a longer list is not one reason)."""
    value = json_or_value(value)
    if isinstance(value, list):
        return value[0] if len(value) == 1 and isinstance(value[0], str) else None
    return as_text(value)


def finish_reason(a: Attributes, from_completion: Any) -> str | None:
    reason = a.pick(*_FINISH_REASON_KEYS, convert=_single_reason)
    if reason is None:  # several reasons: the first one, and the list stays visible in `attributes`
        reasons = json_or_value(a.values.get("gen_ai.response.finish_reasons"))
        reason = reasons[0] if isinstance(reasons, list) and reasons and isinstance(reasons[0], str) else None
    return reason or as_text(from_completion)


def metadata(a: Attributes) -> dict[str, Any] | None:
    if not a.metadata_keys and not any(key in a.values for key in _METADATA_JSON_KEYS):
        return None
    found: dict[str, Any] = {}
    for key in a.metadata_keys:
        if key in a.used:
            continue
        prefix = next(p for p in TABLES.metadata_prefixes if key.startswith(p))
        found.setdefault(key[len(prefix):], a.values[key])
        a.consume(key)
    for key in _METADATA_JSON_KEYS:
        document = json_or_value(a.values.get(key))
        if isinstance(document, dict):
            for name, value in document.items():
                found.setdefault(name, value)
            a.consume(key)
    return found or None


def status_message(span: Span, a: Attributes) -> str | None:
    message = span.status_message or None
    for key in _STATUS_MESSAGE_KEYS:
        attribute = a.values.get(key)
        if attribute is not None and (message is None or attribute == message):
            a.consume(key)
            message = message or as_text(attribute)
    return message


def time_to_first_token_ms(a: Attributes, start: int) -> float | None:
    values = a.values
    for key, source in _FIRST_TOKEN_SOURCES:  # a call costs ~0.9 k instructions; most spans have none of the keys
        if key in values:
            found = source(a, start)
            if found is not None:
                return found
    return None
