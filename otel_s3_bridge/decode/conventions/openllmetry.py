"""OpenLLMetry (Traceloop): `gen_ai.*` usage with the older token names, messages flattened as
`gen_ai.prompt.N.*` / `gen_ai.completion.N.*`, `llm.usage.total_tokens`, and association
properties (`traceloop.association.properties.*`): `session_id`, `user_id` / `customer_id` as the
record's session and customer, the others as metadata.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..messages import list_or_empty, tool_call, unflatten, without_nulls
from ..spans import Span
from .base import Attributes, CompletionFound, Convention, first_flattened_message, flattened_messages

ASSOCIATION: Final = "traceloop.association.properties."
FLATTENED_PREFIXES: Final = ("traceloop.", "llm.request.type", "llm.usage.", "gen_ai.prompt.0.", "gen_ai.completion.0.")


def messages(flattened: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`gen_ai.prompt.N.*` / `gen_ai.completion.N.*` (prefix removed) -> chat messages."""
    result = []
    for entry in list_or_empty(unflatten(flattened)):
        if not isinstance(entry, dict):
            continue
        calls = [call for item in list_or_empty(entry.get("tool_calls")) if (call := tool_call(item)) is not None]
        result.append(without_nulls({"role": entry.get("role"), "content": entry.get("content"),
                                     "tool_calls": calls or None, "tool_call_id": entry.get("tool_call_id"),
                                     "finish_reason": entry.get("finish_reason")}))
    return result


_OWN_HEADS: Final = frozenset({"llm.request", "llm.usage"})
_FLATTENED_HEADS: Final = frozenset({"gen_ai.prompt", "gen_ai.completion"})


def _detects(span: Span, a: Attributes) -> bool:
    # isdisjoint with constant sets: an intersection built two new sets on every span
    return ("traceloop" in a.roots or not a.heads.isdisjoint(_OWN_HEADS)
            or (not a.heads.isdisjoint(_FLATTENED_HEADS)
                and any(key.startswith(FLATTENED_PREFIXES) for key in span.attributes)))


def _prompt(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    return flattened_messages(a, "gen_ai.prompt.", messages)


def _completion(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    return first_flattened_message(a, "gen_ai.completion.", messages)


CONVENTION: Final[Convention] = Convention(
    source="openllmetry",
    detects=_detects,
    fields={
        "total_tokens": ("llm.usage.total_tokens",),
        "cached_tokens": ("gen_ai.usage.cache_read_input_tokens",),
        "cache_write_tokens": ("gen_ai.usage.cache_creation_input_tokens",),
        "reasoning_tokens": ("gen_ai.usage.reasoning_tokens",),
        # association properties: what users of the SDK set precisely to tell sessions and users apart
        "session_id": (f"{ASSOCIATION}session_id",),
        "customer_id": (f"{ASSOCIATION}user_id", f"{ASSOCIATION}customer_id"),
    },
    llm_keys=("llm.usage.total_tokens",),
    content_heads=frozenset({"gen_ai.prompt", "gen_ai.completion"}),
    content_keys=("gen_ai.prompt.", "gen_ai.completion.", "llm.prompts", "llm.prompts.", "llm.completions",
                  "llm.completions.", "traceloop.entity.input", "traceloop.entity.output"),
    prompt=(_prompt,),
    completion=(_completion,),
    metadata_prefixes=(ASSOCIATION,),
    content_in_logs=True,
)
