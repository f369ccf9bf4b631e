"""A key's content policy applied to one record, or to the GenAI events of a logs export.

Message text sits in up to four places per call: `prompt` / `completion`, content-bearing
attributes left in `attributes` (of the call and of its observations: `input.value`,
`llm.input_messages.*`, `gen_ai.input.messages`, ... as each convention names them in `Places`),
span events, and GenAI event records (`gen_ai.user.message`, `gen_ai.choice`, the
operation-details event). `drop` removes all of it; `hash` replaces every text in it by
`sha256:<hex of its UTF-8>:<length in characters>`, so that equal prompts still compare equal (a
JSON text keeps its structure, its strings hashed). Tokens, cost, model, timing, names and roles
are never touched. Pure: rewrites the record in place; must not read clocks, files or the environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from ..values import nested_deeper_than
from .places import Places, rewritten
from .policy import KEEP

DROP, HASH = "drop", "hash"
# Messages nest a few levels (message -> parts -> part -> content); anything deeper is hashed as one
# text, so that a client's deeply nested JSON never meets Python's recursion limit.
MAX_DEPTH = 32
# Inside a message or a completion, what describes it rather than says it.
STRUCTURE_KEYS = frozenset({"role", "type", "name", "id", "tool_call_id", "finish_reason", "mime_type", "index",
                            "modality"})


def hashed_text(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}:{len(text)}"


def _hash_leaves(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        if value[:1] in ("[", "{") and depth == 0:  # a JSON text of messages: its strings hashed, its shape kept
            try:
                document = orjson.loads(value)
            except orjson.JSONDecodeError:
                return hashed_text(value)
            if nested_deeper_than(document, MAX_DEPTH):  # deeper than messages go: hashed as one text
                return hashed_text(value)
            return orjson.dumps(_hash_leaves(document, depth + 1)).decode()
        return hashed_text(value)
    if isinstance(value, dict):
        return {key: item if key in STRUCTURE_KEYS and not isinstance(item, (dict, list))
                else _hash_leaves(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_hash_leaves(item, depth + 1) for item in value]
    return value


def _attributes(attributes: Any, mode: str, holds_content: Callable[[str], bool]) -> Any:
    return rewritten(attributes, holds_content, None if mode == DROP else _hash_leaves)


def govern_events(events: Any, mode: str, places: Places) -> Any:
    """Span events (or GenAI event records as span events) under `mode`."""
    if mode == KEEP or not isinstance(events, list):
        return events
    governed = []
    for event in events:
        if isinstance(event, dict):
            holds = places.is_event_content if event.get("name") in places.content_events else places.is_content
            event = {**event, "attributes": _attributes(event.get("attributes"), mode, holds)}
        governed.append(event)
    return governed


def govern_content(record: dict[str, Any], mode: str, places: Places) -> None:
    """Apply `mode` (keep, drop or hash) to every place `record` holds message text."""
    record["content_policy"] = mode
    if mode == KEEP:
        return
    if mode == DROP:
        record["prompt"] = record["completion"] = None
    else:
        record["prompt"] = _hash_leaves(record["prompt"])
        if isinstance(record["completion"], dict):
            record["completion"] = {key: _hash_leaves(value) for key, value in record["completion"].items()}
    record["attributes"] = _attributes(record["attributes"], mode, places.is_content)
    record["events"] = govern_events(record["events"], mode, places)
    for observation in record["observations"] or ():
        if isinstance(observation, dict):
            observation["attributes"] = _attributes(observation.get("attributes"), mode, places.is_content)
            observation["events"] = govern_events(observation.get("events"), mode, places)
