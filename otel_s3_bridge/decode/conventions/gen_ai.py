"""OpenTelemetry GenAI semantic conventions: `gen_ai.*` request, response and usage attributes,
messages as `gen_ai.input.messages` / `gen_ai.output.messages` (JSON string or structured), and
the deprecated per-message span events (`gen_ai.user.message`, `gen_ai.choice`, ...).

Also the general OpenTelemetry attributes for who and what session (`user.id`, `session.id`),
which every convention shares. Pure.
"""

from __future__ import annotations

from typing import Any, Final

from ...values import as_float, as_text
from ..messages import (
    completion_from_chat,
    completion_from_parts,
    dict_or_empty,
    json_or_value,
    json_text,
    tool_calls,
    without_nulls,
)
from ..spans import Span
from .base import Attributes, CompletionFound, Convention, structured_list

PROMPT_EVENT_ROLES: Final[dict[str, str]] = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                                             "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
CHOICE_EVENT: Final = "gen_ai.choice"
CONTENT_PROMPT_EVENT: Final = "gen_ai.content.prompt"
CONTENT_COMPLETION_EVENT: Final = "gen_ai.content.completion"
# One event of the whole call: `gen_ai.input.messages`, `gen_ai.output.messages`, ... as attributes.
OPERATION_DETAILS_EVENT: Final = "gen_ai.client.inference.operation.details"


def _detects(span: Span, a: Attributes) -> bool:
    return "gen_ai" in a.roots


def _prompt(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    system = structured_list(a, "gen_ai.system_instructions")
    conversation = structured_list(a, "gen_ai.input.messages")
    if system is None and conversation is None:
        return None
    return ([{"role": "system", "parts": system}] if system else []) + (conversation or [])


def _completion(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    output = structured_list(a, "gen_ai.output.messages")
    if output is None:
        return None
    first = output[0] if output and isinstance(output[0], dict) else {}
    return completion_from_parts(output), as_text(first.get("finish_reason"))


def _event_fields(attributes: dict[str, Any]) -> dict[str, Any]:
    """An event's attributes, over the fields of its JSON body (`gen_ai.event.content`) if any."""
    return {**dict_or_empty(json_or_value(attributes.get("gen_ai.event.content"))), **attributes}


def _prompt_from_events(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> Any:
    """Deprecated per-message span events -> messages."""
    messages: list[Any] = []
    used: list[int] = []
    for index, event in enumerate(events):
        attributes = event["attributes"]
        if event["name"] in PROMPT_EVENT_ROLES:
            fields = _event_fields(attributes)
            messages.append(without_nulls({
                "role": as_text(fields.get("role")) or PROMPT_EVENT_ROLES[event["name"]],
                "content": json_or_value(fields.get("content")),
                "tool_calls": tool_calls(fields.get("tool_calls")),
                "tool_call_id": fields.get("id") if event["name"] == "gen_ai.tool.message" else None}))
            used.append(index)
        elif event["name"] == CONTENT_PROMPT_EVENT:
            document = json_text(attributes.get("gen_ai.prompt"))
            if isinstance(document, list):
                messages.extend(document)
                used.append(index)
    if not messages:
        return None
    used_events.update(used)
    return messages


def _completion_from_events(a: Attributes, events: list[dict[str, Any]], used_events: set[int]) -> CompletionFound:
    """Deprecated `gen_ai.choice` / `gen_ai.content.completion` events -> completion."""
    for index, event in enumerate(events):
        attributes = event["attributes"]
        if event["name"] == CHOICE_EVENT:
            fields = _event_fields(attributes)
            message = json_or_value(fields.get("message"))
            if isinstance(message, dict):
                used_events.add(index)
                return completion_from_chat(message), as_text(fields.get("finish_reason"))
        if event["name"] == CONTENT_COMPLETION_EVENT:
            document = json_text(attributes.get("gen_ai.completion"))
            first = document[0] if isinstance(document, list) and document else document
            if isinstance(first, dict):
                used_events.add(index)
                return completion_from_chat(first), as_text(first.get("finish_reason"))
    return None


def _time_to_first_token_ms(a: Attributes, start: int) -> float | None:
    seconds = a.pick("gen_ai.response.time_to_first_chunk", convert=as_float)
    return seconds * 1000.0 if seconds is not None else None


CONVENTION: Final[Convention] = Convention(
    source="gen_ai",
    detects=_detects,
    fields={
        "generation_id": ("gen_ai.response.id",),
        "model": ("gen_ai.response.model", "gen_ai.request.model"),
        "requested_model": ("gen_ai.request.model",),
        "provider": ("gen_ai.provider.name", "gen_ai.system"),
        "model_author": ("gen_ai.provider.name", "gen_ai.system"),
        # `prompt_tokens` / `completion_tokens`: the names before semantic conventions 1.27
        "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        "cached_tokens": ("gen_ai.usage.cache_read.input_tokens",),
        "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens",),
        "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens",),
        "session_id": ("session.id", "gen_ai.conversation.id"),
        "customer_id": ("user.id",),
    },
    llm_keys=("gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
              "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"),
    content_heads=frozenset({"gen_ai.system_instructions", "gen_ai.input", "gen_ai.output"}),
    content_keys=("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.output.messages",
                  "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "gen_ai.event.content"),
    prompt=(_prompt,),
    prompt_fallbacks=(_prompt_from_events,),
    completion=(_completion,),
    completion_fallbacks=(_completion_from_events,),
    finish_reason_keys=("gen_ai.response.finish_reasons",),
    time_to_first_token_ms=_time_to_first_token_ms,
    first_token_key="gen_ai.response.time_to_first_chunk",
    content_in_logs=True,
)
