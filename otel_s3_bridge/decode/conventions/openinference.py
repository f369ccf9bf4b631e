"""OpenInference (Arize Phoenix): `llm.*` model, token and cost attributes, messages flattened as
`llm.input_messages.N.message.*`, and the generic `input.value` / `output.value` as a last resort.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..messages import dict_or_empty, list_or_empty, tool_call, unflatten, without_nulls
from ..spans import Span
from .base import (
    Attributes,
    CompletionFound,
    Convention,
    first_flattened_message,
    flattened_messages,
    text_completion,
    text_prompt,
)

PARAMETERS: Final = "llm.invocation_parameters"
OWN_PREFIXES: Final = ("openinference.", "llm.input_messages.", "llm.output_messages.", "llm.token_count.", "llm.cost.",
                       "llm.model_name", "llm.provider", "llm.system", "llm.invocation_parameters")


def messages(flattened: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`llm.input_messages.*` / `llm.output_messages.*` (prefix already removed) -> chat messages."""
    entries = unflatten(flattened)
    result = []
    for entry in list_or_empty(entries):
        message = dict_or_empty(dict_or_empty(entry).get("message"))
        content = message.get("content")
        if content is None and isinstance(message.get("contents"), list):
            content = [part.get("message_content", part) for part in message["contents"] if isinstance(part, dict)]
        calls = [call for item in list_or_empty(message.get("tool_calls")) if isinstance(item, dict)
                 if (call := tool_call(item.get("tool_call", item))) is not None]
        result.append(without_nulls({"role": message.get("role"), "content": content, "tool_calls": calls or None,
                                     "tool_call_id": message.get("tool_call_id"), "name": message.get("name")}))
    return result


def _detects(span: Span, a: Attributes) -> bool:
    return ("llm" in a.roots or "openinference" in a.roots) and any(key.startswith(OWN_PREFIXES)
                                                                     for key in span.attributes)


def _prompt(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    return flattened_messages(a, "llm.input_messages.", messages)


def _completion(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    return first_flattened_message(a, "llm.output_messages.", messages)


def _input_value(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    return text_prompt(a, "input.value")


def _output_value(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    return text_completion(a, "output.value")


CONVENTION: Final[Convention] = Convention(
    source="openinference",
    detects=_detects,
    fields={
        # a failed call has no model name: the requested one is only in its invocation parameters
        "model": ("llm.response.model_name", "llm.model_name", f"{PARAMETERS}.model"),
        "requested_model": ("llm.request.model_name", f"{PARAMETERS}.model"),
        "provider": ("llm.provider",),
        "model_author": ("llm.system", "llm.provider"),
        "input_tokens": ("llm.token_count.prompt",),
        "output_tokens": ("llm.token_count.completion",),
        "total_tokens": ("llm.token_count.total",),
        "cached_tokens": ("llm.token_count.prompt_details.cache_read",),
        "cache_write_tokens": ("llm.token_count.prompt_details.cache_write",),
        "reasoning_tokens": ("llm.token_count.completion_details.reasoning",),
        "input_cost": ("llm.cost.prompt",),
        "output_cost": ("llm.cost.completion",),
        "cost": ("llm.cost.total",),
    },
    llm_keys=("llm.model_name", "llm.request.model_name", "llm.response.model_name", "llm.token_count.prompt",
              "llm.token_count.completion", "llm.token_count.total"),
    llm_if=lambda attributes: attributes.get("openinference.span.kind") == "LLM",
    content_heads=frozenset({"llm.input_messages", "llm.output_messages", "input.value", "output.value"}),
    content_keys=("llm.input_messages.", "llm.output_messages.", "input.value", "output.value",
                  "llm.prompts", "llm.prompt_template.variables", "tool.parameters", "message.content"),
    prompt=(_prompt,),
    prompt_fallbacks=(_input_value,),
    completion=(_completion,),
    completion_fallbacks=(_output_value,),
    finish_reason_keys=("llm.finish_reason",),
    metadata_json_keys=("metadata",),
    json_lookup_keys=(PARAMETERS,),
)
