"""Langfuse (its OpenTelemetry SDK, v3+): `langfuse.observation.*` model, usage and cost details
(JSON objects), input and output, `langfuse.trace.*` / `langfuse.session.id` / `langfuse.user.id`,
and trace and observation metadata.

Pure.
"""

from __future__ import annotations

from typing import Any, Final

from ...values import unix_nanos
from ..spans import Span
from .base import Attributes, CompletionFound, Convention, text_completion, text_prompt

USAGE: Final = "langfuse.observation.usage_details"
COST: Final = "langfuse.observation.cost_details"


def _detects(span: Span, a: Attributes) -> bool:
    return "langfuse" in a.roots


def _prompt(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    return text_prompt(a, "langfuse.observation.input")


def _completion(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    return text_completion(a, "langfuse.observation.output")


def unix_nano(text: Any) -> int | None:
    """An ISO 8601 time as Unix nanoseconds; a time without a zone is UTC (never the host's zone)."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    if text.startswith('"') and text.endswith('"'):  # the Python SDK sends it JSON-encoded
        text = text[1:-1]
    return unix_nanos(text)


def _time_to_first_token_ms(a: Attributes, start: int) -> float | None:
    first_chunk = unix_nano(a.values.get("langfuse.observation.completion_start_time"))
    if first_chunk is None or not start or first_chunk < start:
        return None
    a.consume("langfuse.observation.completion_start_time")
    return (first_chunk - start) / 1e6


CONVENTION: Final[Convention] = Convention(
    source="langfuse",
    detects=_detects,
    fields={
        "name": ("langfuse.trace.name",),
        "model": ("langfuse.observation.model.name",),
        # Langfuse's own names first, then the OpenAI usage names its OpenAI integration passes on
        "input_tokens": (f"{USAGE}.input", f"{USAGE}.prompt_tokens"),
        "output_tokens": (f"{USAGE}.output", f"{USAGE}.completion_tokens"),
        "total_tokens": (f"{USAGE}.total", f"{USAGE}.total_tokens"),
        "cached_tokens": (f"{USAGE}.input_cached_tokens", f"{USAGE}.cache_read_input_tokens",
                          f"{USAGE}.prompt_tokens_details.cached_tokens"),
        "cache_write_tokens": (f"{USAGE}.cache_creation_input_tokens",),
        "reasoning_tokens": (f"{USAGE}.output_reasoning_tokens", f"{USAGE}.completion_tokens_details.reasoning_tokens"),
        "input_cost": (f"{COST}.input",),
        "output_cost": (f"{COST}.output",),
        "cost": (f"{COST}.total",),
        "session_id": ("langfuse.session.id",),
        "customer_id": ("langfuse.user.id",),
    },
    llm_keys=("langfuse.observation.model.name", USAGE),
    llm_if=lambda attributes: attributes.get("langfuse.observation.type") == "generation",
    content_heads=frozenset({"langfuse.observation"}),
    content_keys=("langfuse.observation.input", "langfuse.observation.output", "langfuse.trace.input",
                  "langfuse.trace.output"),
    prompt=(_prompt,),
    completion=(_completion,),
    status_message_keys=("langfuse.observation.status_message",),
    metadata_prefixes=("langfuse.trace.metadata.", "langfuse.observation.metadata."),
    json_object_keys=(USAGE, COST),
    time_to_first_token_ms=_time_to_first_token_ms,
    first_token_key="langfuse.observation.completion_start_time",
)
