"""Prompt and completion reconstruction, one small function per convention's message shape.

Pure helpers for `decode`: flattened attributes (OpenInference `llm.input_messages.0.message.role`,
OpenLLMetry `gen_ai.prompt.0.content`), JSON strings (OpenRouter, Vercel AI SDK, Langfuse) and the
deprecated GenAI span events become a list of messages (OpenAI chat shape where the source has
it) and a `{text, reasoning, tool_calls}` completion. Must not decide precedence or do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

PROMPT_EVENT_ROLES = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                      "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
CHOICE_EVENT = "gen_ai.choice"
CONTENT_PROMPT_EVENT = "gen_ai.content.prompt"
CONTENT_COMPLETION_EVENT = "gen_ai.content.completion"


def json_text(value: Any) -> Any:
    """The JSON document carried in a string, or None when it is not one (e.g. truncated)."""
    if not isinstance(value, str):
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def json_or_value(value: Any) -> Any:
    """A structured value as is; a string holding JSON parsed; any other string as is."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        parsed = json_text(value)
        return value if parsed is None else parsed
    return value


def completion(text: Any = None, reasoning: Any = None, tool_calls: Any = None) -> dict[str, Any] | None:
    """The record's completion, or None when the source carries nothing in it."""
    result = {"text": text if isinstance(text, str) else None,
              "reasoning": reasoning if isinstance(reasoning, str) else None,
              "tool_calls": list(tool_calls) if isinstance(tool_calls, list) and tool_calls else None}
    return result if any(value not in (None, "") for value in result.values()) else None


def unflatten(items: Mapping[str, Any]) -> Any:
    """`{"0.message.role": "user", "0.message.tool_calls.1.id": "x"}` -> `[{"message": {...}}]`.

    Numeric path segments become list positions (in index order), the rest dict keys.
    """
    tree: dict[str, Any] = {}
    for path, value in items.items():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a value and a deeper path share a prefix: keep both
                child = node[part] = {"": child}
            node = child
        node[leaf] = value
    return _lists(tree)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def _openai_tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _without_nulls(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if value is not None}


def openinference_messages(flattened: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`llm.input_messages.*` / `llm.output_messages.*` (prefix already removed) -> chat messages."""
    entries = unflatten(flattened)
    messages = []
    for entry in entries if isinstance(entries, list) else ():
        message = entry.get("message", {}) if isinstance(entry, dict) else {}
        content = message.get("content")
        if content is None and isinstance(message.get("contents"), list):
            content = [part.get("message_content", part) for part in message["contents"] if isinstance(part, dict)]
        calls = [_openai_tool_call(call.get("id"), call.get("function", {}).get("name"),
                                   call.get("function", {}).get("arguments"))
                 for item in message.get("tool_calls") or () if isinstance(item, dict)
                 for call in (item.get("tool_call", item),)]
        messages.append(_without_nulls({"role": message.get("role"), "content": content,
                                        "tool_calls": calls or None, "tool_call_id": message.get("tool_call_id"),
                                        "name": message.get("name")}))
    return messages


def openllmetry_messages(flattened: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`gen_ai.prompt.N.*` / `gen_ai.completion.N.*` (prefix removed) -> chat messages."""
    entries = unflatten(flattened)
    messages = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        calls = [_openai_tool_call(call.get("id"), call.get("name"), call.get("arguments"))
                 for call in entry.get("tool_calls") or () if isinstance(call, dict)]
        messages.append(_without_nulls({"role": entry.get("role"), "content": entry.get("content"),
                                        "tool_calls": calls or None, "tool_call_id": entry.get("tool_call_id"),
                                        "finish_reason": entry.get("finish_reason")}))
    return messages


def completion_from_chat(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """An OpenAI-shaped assistant message -> completion."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict)) or None
    return completion(content, message.get("reasoning") or message.get("reasoning_content"),
                      message.get("tool_calls"))


def completion_from_parts(messages: Iterable[Any]) -> dict[str, Any] | None:
    """GenAI `gen_ai.output.messages` (role + typed parts) -> completion."""
    parts = [part for message in messages if isinstance(message, dict)
             for part in message.get("parts") or () if isinstance(part, dict)]
    text = "".join(str(p.get("content", "")) for p in parts if p.get("type") == "text") or None
    reasoning = "".join(str(p.get("content", "")) for p in parts if p.get("type") == "reasoning") or None
    return completion(text, reasoning, [p for p in parts if p.get("type") == "tool_call"])


def prompt_from_events(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, list[int]]:
    """Deprecated GenAI per-message span events -> messages, and which events were used."""
    messages: list[dict[str, Any]] = []
    used: list[int] = []
    for index, event in enumerate(events):
        attributes = event["attributes"]
        if event["name"] in PROMPT_EVENT_ROLES:
            body = json_or_value(attributes.get("gen_ai.event.content"))
            fields = {**(body if isinstance(body, dict) else {}), **attributes}
            messages.append(_without_nulls({
                "role": fields.get("role") or PROMPT_EVENT_ROLES[event["name"]],
                "content": json_or_value(fields.get("content")),
                "tool_calls": json_or_value(fields.get("tool_calls")),
                "tool_call_id": fields.get("id") if event["name"] == "gen_ai.tool.message" else None}))
            used.append(index)
        elif event["name"] == CONTENT_PROMPT_EVENT and isinstance(json_text(attributes.get("gen_ai.prompt")), list):
            messages.extend(json_text(attributes["gen_ai.prompt"]))
            used.append(index)
    return (messages or None), used


def completion_from_events(events: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None, list[int]]:
    """Deprecated `gen_ai.choice` / `gen_ai.content.completion` events -> completion, finish reason, used."""
    for index, event in enumerate(events):
        attributes = event["attributes"]
        if event["name"] == CHOICE_EVENT:
            body = json_or_value(attributes.get("gen_ai.event.content"))
            fields = {**(body if isinstance(body, dict) else {}), **attributes}
            message = json_or_value(fields.get("message"))
            if isinstance(message, dict):
                return completion_from_chat(message), fields.get("finish_reason"), [index]
        if event["name"] == CONTENT_COMPLETION_EVENT:
            document = json_text(attributes.get("gen_ai.completion"))
            first = document[0] if isinstance(document, list) and document else document
            if isinstance(first, dict):
                return completion_from_chat(first), first.get("finish_reason"), [index]
    return None, None, []


def messages_from_text(value: Any) -> list[Any] | None:
    """A generic input (`input.value`, Langfuse input): a message list, `{"messages": [...]}`, or text."""
    document = json_or_value(value)
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        return document["messages"]
    if isinstance(document, str) and document:
        return [{"role": "user", "content": document}]
    return None


def completion_from_text(value: Any) -> dict[str, Any] | None:
    """A generic output (`output.value`, Langfuse output): an OpenAI response, a message, or text."""
    document = json_or_value(value)
    if isinstance(document, dict):
        choices = document.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            return completion_from_chat(choices[0].get("message") or {"content": choices[0].get("text")})
        if "content" in document or "tool_calls" in document:
            return completion_from_chat(document)
        return None
    return completion(document) if isinstance(document, str) else None
