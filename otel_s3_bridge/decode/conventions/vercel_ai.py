"""Vercel AI SDK telemetry: `ai.*` model, usage and response attributes, the prompt as
`ai.prompt.messages` (or `ai.prompt`), tool calls in the SDK's own shape, and
`ai.telemetry.metadata.*` as metadata (`sessionId` and `userId` as the record's session and
customer). The SDK's function spans (`ai.generateText`) wrap its provider calls
(`ai.generateText.doGenerate`): only the calls are records.

Pure.
"""

from __future__ import annotations

from typing import Any, Final

from ...values import as_float, as_text
from ..messages import completion, json_or_value
from ..spans import Span
from .base import Attributes, CompletionFound, Convention, structured_list, text_prompt


def _detects(span: Span, a: Attributes) -> bool:
    return "ai" in a.roots


# The SDK's functions: each span named (`ai.operationId`) after one wraps the spans of the provider
# calls it makes (`ai.generateText.doGenerate`, one per step) and carries their summed usage.
WRAPPERS: Final = frozenset({"ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject", "ai.embed",
                             "ai.embedMany"})


def _wraps(span: Span) -> bool:
    operation = span.attributes.get("ai.operationId")
    return (operation if isinstance(operation, str) else span.name) in WRAPPERS


def _prompt(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    return structured_list(a, "ai.prompt.messages")


def _prompt_text(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    return text_prompt(a, "ai.prompt")


def _as_list(value: Any) -> list[Any] | None:
    value = json_or_value(value)
    return value if isinstance(value, list) else None


def _completion(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    text = a.pick("ai.response.text", convert=as_text)
    calls = a.pick("ai.response.toolCalls", convert=_as_list)
    reasoning = a.pick("ai.response.reasoning", convert=as_text)
    if text is None and calls is None and reasoning is None:
        return None
    return completion(text, reasoning, calls), None


def _time_to_first_token_ms(a: Attributes, start: int) -> float | None:
    return a.pick("ai.response.msToFirstChunk", convert=as_float)


CONVENTION: Final[Convention] = Convention(
    source="vercel_ai",
    detects=_detects,
    fields={
        "generation_id": ("ai.response.id",),
        "model": ("ai.response.model", "ai.model.id"),
        "requested_model": ("ai.model.id",),
        "provider": ("ai.model.provider",),
        "input_tokens": ("ai.usage.inputTokens", "ai.usage.promptTokens"),
        "output_tokens": ("ai.usage.outputTokens", "ai.usage.completionTokens"),
        "total_tokens": ("ai.usage.totalTokens",),
        "cached_tokens": ("ai.usage.cachedInputTokens", "ai.usage.inputTokenDetails.cacheReadTokens"),
        "cache_write_tokens": ("ai.usage.inputTokenDetails.cacheWriteTokens",),
        "reasoning_tokens": ("ai.usage.reasoningTokens", "ai.usage.outputTokenDetails.reasoningTokens"),
        # the metadata names Langfuse's and others' Vercel integrations read as session and user
        "session_id": ("ai.telemetry.metadata.sessionId",),
        "customer_id": ("ai.telemetry.metadata.userId",),
    },
    llm_keys=("ai.model.id", "ai.usage.promptTokens", "ai.usage.inputTokens"),
    wraps=_wraps,
    content_heads=frozenset({"ai.prompt", "ai.response"}),
    content_keys=("ai.prompt", "ai.prompt.", "ai.response.text", "ai.response.object", "ai.response.toolCalls",
                  "ai.response.reasoning", "ai.toolCall.args", "ai.toolCall.result", "ai.values", "ai.value",
                  "ai.embedding", "ai.embeddings"),
    prompt=(_prompt,),
    prompt_fallbacks=(_prompt_text,),
    completion=(_completion,),
    finish_reason_keys=("ai.response.finishReason",),
    metadata_prefixes=("ai.telemetry.metadata.",),
    time_to_first_token_ms=_time_to_first_token_ms,
    first_token_key="ai.response.msToFirstChunk",
)
