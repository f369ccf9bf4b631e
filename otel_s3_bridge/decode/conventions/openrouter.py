"""OpenRouter Broadcast deliveries: an `LLM Generation` span with `gen_ai.*` usage and cost, the
prompt and completion as JSON strings, and `trace.metadata.openrouter.*` facts about the request.

Reference: `openrouter-broadcast.md`; real captures in `tests/data/openrouter-captures`. Pure.
"""

from __future__ import annotations

from typing import Any, Final

from ...values import as_float
from ..messages import completion, json_text
from ..spans import Span
from .base import Attributes, CompletionFound, Convention

# OpenRouter's own keys: never custom metadata, and their presence marks an OpenRouter span.
OWN_PREFIXES: Final = ("trace.metadata.openrouter.", "trace.metadata.openrouter_generation.")
COMPLETION_PARTS: Final = ("completion", "reasoning", "toolCalls", "tool_calls")


def _detects(span: Span, a: Attributes) -> bool:
    return span.resource.get("service.name") == "openrouter" or span.scope_name == "openrouter" or a.marked


def _prompt(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
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


def _completion(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    raw = a.values.get("gen_ai.completion")
    document = json_text(raw)
    if not (isinstance(document, dict) and set(COMPLETION_PARTS) & document.keys()):
        return None
    a.consume("gen_ai.completion")
    a.drop_duplicate("span.output", raw)
    a.added.update({f"gen_ai.completion.{key}": value for key, value in document.items()
                    if key not in COMPLETION_PARTS})
    return completion(document.get("completion"), document.get("reasoning"),
                      document.get("toolCalls") or document.get("tool_calls")), None


def _time_to_first_token_ms(a: Attributes, start: int) -> float | None:
    return a.pick("trace.metadata.openrouter.first_token_ms", convert=as_float)


CONVENTION: Final[Convention] = Convention(
    source="openrouter",
    detects=_detects,
    fields={
        "name": ("trace.name",),
        "provider": ("trace.metadata.openrouter.provider_name",),
        "total_tokens": ("gen_ai.usage.total_tokens",),
        "cached_tokens": ("gen_ai.usage.input_tokens.cached",),
        "cache_write_tokens": ("gen_ai.usage.input_tokens.cache_write",),
        "reasoning_tokens": ("gen_ai.usage.output_tokens.reasoning",),
        "input_cost": ("gen_ai.usage.input_cost",),
        "output_cost": ("gen_ai.usage.output_cost",),
        "cost": ("gen_ai.usage.total_cost", "gen_ai.usage.cost", "trace.metadata.openrouter_generation.usage"),
        "api_key_name": ("trace.metadata.openrouter.api_key_name",),
        "native_finish_reason": ("trace.metadata.openrouter.finish_reason",),
    },
    content_heads=frozenset({"gen_ai.prompt", "gen_ai.completion"}),
    content_keys=("gen_ai.prompt", "gen_ai.prompt.", "gen_ai.completion", "gen_ai.completion.", "span.input",
                  "span.output"),
    prompt=(_prompt,),
    completion=(_completion,),
    finish_reason_keys=("gen_ai.response.finish_reason",),
    status_message_keys=("span.status_message",),
    metadata_prefixes=("trace.metadata.",),
    own_prefixes=OWN_PREFIXES,
    time_to_first_token_ms=_time_to_first_token_ms,
    first_token_key="trace.metadata.openrouter.first_token_ms",
)
