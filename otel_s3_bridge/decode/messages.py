"""Message and completion shapes shared by the conventions: JSON text, chat messages, tool calls.

Pure and total: any value goes in (attribute values are untrusted and may have any type), a
message list, a `{text, reasoning, tool_calls}` completion or None comes out. Tool calls always
leave in one shape, OpenAI's: `{"id", "type": "function", "function": {"name", "arguments"}}`
with `arguments` a JSON string, whatever shape the convention sent. Must not decide precedence
between conventions or do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from ..values import MAX_VALUE_DEPTH, nested_deeper_than

MAX_INDEX_DIGITS: Final = 9  # a longer "index" is no list's: int() of 4,300 digits raises, and lists are not that long


def json_text(value: Any) -> Any:
    """The JSON document carried in a string, or None when it is not one (e.g. truncated, or
    nested too deep to be stored as a structure)."""
    if not isinstance(value, str):
        return None
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    # Each level costs two brackets, so a short text cannot nest too deep. A long one is walked: one
    # look at each container and item, less than parsing them cost, where counting brackets read every
    # character of a prompt again (7.5 µs for a 9 KB chat, against 1.4 to walk it).
    if len(value) > 2 * MAX_VALUE_DEPTH and nested_deeper_than(document, MAX_VALUE_DEPTH):
        return None
    return document


def json_or_value(value: Any) -> Any:
    """A structured value as is; a string holding JSON parsed; any other string as is."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        parsed = json_text(value)
        return value if parsed is None else parsed
    return value


def _arguments(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def tool_call(call: Any) -> dict[str, Any] | None:
    """One tool call in OpenAI's shape, from OpenAI's, OpenTelemetry GenAI's (`{type: tool_call,
    id, name, arguments}`) or the Vercel AI SDK's (`{toolCallId, toolName, args | input}`)."""
    if not isinstance(call, dict):
        return None
    function = call.get("function")
    if isinstance(function, dict):
        name, arguments = function.get("name"), function.get("arguments")
    else:
        name = call.get("name", call.get("toolName"))
        arguments = next((call[key] for key in ("arguments", "args", "input") if key in call), None)
    call_id = call.get("id", call.get("toolCallId"))
    return {"id": call_id if isinstance(call_id, str) else None, "type": "function",
            "function": {"name": name if isinstance(name, str) else None, "arguments": _arguments(arguments)}}


def tool_calls(value: Any) -> list[dict[str, Any]] | None:
    """Every tool call of a list (or of a JSON string holding one) in OpenAI's shape; None when none."""
    value = json_or_value(value)
    if not isinstance(value, list):
        return None
    calls = [call for call in map(tool_call, value) if call is not None]
    return calls or None


def completion(text: Any = None, reasoning: Any = None, calls: Any = None) -> dict[str, Any] | None:
    """The record's completion, or None when the source carries nothing in it."""
    text = text if isinstance(text, str) else None
    reasoning = reasoning if isinstance(reasoning, str) else None
    found_calls = tool_calls(calls)
    if not text and not reasoning and found_calls is None:
        return None
    return {"text": text, "reasoning": reasoning, "tool_calls": found_calls}


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
        if isinstance(node.get(leaf), dict):  # a deeper path came first: keep both here too
            node[leaf][""] = value
        else:
            node[leaf] = value
    return _lists(tree)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(len(key) <= MAX_INDEX_DIGITS and key.isascii() and key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def without_nulls(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if value is not None}


def dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def completion_from_chat(message: Any) -> dict[str, Any] | None:
    """An OpenAI-shaped assistant message -> completion."""
    message = dict_or_empty(message)
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict)) or None
    return completion(content, message.get("reasoning") or message.get("reasoning_content"),
                      message.get("tool_calls"))


def completion_from_parts(messages: Iterable[Any]) -> dict[str, Any] | None:
    """GenAI `gen_ai.output.messages` (role + typed parts) -> completion."""
    texts: list[str] = []
    reasonings: list[str] = []
    calls: list[dict[str, Any]] = []
    for message in messages:  # one pass (three generators over the parts cost ~3 k instructions a record)
        if not isinstance(message, dict):
            continue
        for part in list_or_empty(message.get("parts")):
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text":
                    texts.append(str(part.get("content", "")))
                elif kind == "reasoning":
                    reasonings.append(str(part.get("content", "")))
                elif kind == "tool_call":
                    calls.append(part)
    return completion("".join(texts) or None, "".join(reasonings) or None, calls)


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
            message = choices[0].get("message")
            return completion_from_chat(message if isinstance(message, dict) else {"content": choices[0].get("text")})
        if "content" in document or "tool_calls" in document:
            return completion_from_chat(document)
        return None
    return completion(document) if isinstance(document, str) else None
