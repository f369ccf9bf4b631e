"""A key's content policy applied to one record, or to the GenAI events of a logs export.

Message text sits in up to four places per call: `prompt` / `completion`, content-bearing
attributes left in `attributes` (of the call and of its observations: `input.value`,
`llm.input_messages.*`, `gen_ai.input.messages`, ... as each convention names them in `Places`),
span events, and GenAI event records (`gen_ai.user.message`, `gen_ai.choice`, the
operation-details event). `drop` removes all of it; `hash` replaces every text in it by
`sha256:<hex of its UTF-8>:<length in characters>`, so that equal prompts still compare equal;
`redact` replaces what `redact.Redactor` detects in each text by its typed placeholder ([EMAIL],
[SECRET], ...) and keeps the rest (a JSON text keeps its structure under both, each of its strings
rewritten). Tokens, cost, model, timing, names and roles are never touched. Pure: rewrites the
record in place; must not read clocks, files or the environment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from ..values import nested_deeper_than
from .places import Places, rewritten
from .policy import KEEP, RecordPolicy

DROP, HASH, REDACT = "drop", "hash", "redact"
# Messages nest a few levels (message -> parts -> part -> content); anything deeper is rewritten as
# one text, so that a client's deeply nested JSON never meets Python's recursion limit.
MAX_DEPTH = 32
# Inside a message or a completion, what describes it rather than says it.
STRUCTURE_KEYS = frozenset({"role", "type", "name", "id", "tool_call_id", "finish_reason", "mime_type", "index",
                            "modality"})


def hashed_text(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}:{len(text)}"


def text_rewrite(policy: RecordPolicy) -> Callable[[str], str] | None:
    """What `policy.content` does to one text: hash it, redact it, or None (drop the whole value)."""
    if policy.content == HASH:
        return hashed_text
    if policy.content == REDACT:
        # imported here: RE2, phonenumbers and stdnum cost every process ~14 MB and 0.1 s to load
        from .redact import redactor
        return redactor(policy.redact_patterns, policy.phone_region).redact
    return None


def _leaves(value: Any, rewrite: Callable[[str], str], depth: int = 0) -> Any:
    """`value` with each of its texts rewritten; a JSON text of messages keeps its shape."""
    if isinstance(value, str):
        if value[:1] in ("[", "{") and depth == 0:
            try:
                document = orjson.loads(value)
            except orjson.JSONDecodeError:
                return rewrite(value)
            if nested_deeper_than(document, MAX_DEPTH):  # deeper than messages go: one text
                return rewrite(value)
            return orjson.dumps(_leaves(document, rewrite, depth + 1)).decode()
        return rewrite(value)
    if isinstance(value, dict):
        return {key: item if key in STRUCTURE_KEYS and not isinstance(item, (dict, list))
                else _leaves(item, rewrite, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_leaves(item, rewrite, depth + 1) for item in value]
    return value


def _attributes(attributes: Any, rewrite: Callable[[str], str] | None, holds_content: Callable[[str], bool]) -> Any:
    return rewritten(attributes, holds_content, None if rewrite is None else lambda value: _leaves(value, rewrite))


def govern_events(events: Any, policy: RecordPolicy, places: Places) -> Any:
    """Span events (or GenAI event records as span events) under `policy.content`."""
    if policy.content == KEEP:
        return events
    return _events(events, text_rewrite(policy), places)


def _events(events: Any, rewrite: Callable[[str], str] | None, places: Places) -> Any:
    if not isinstance(events, list):
        return events
    governed = []
    for event in events:
        if isinstance(event, dict):
            holds = places.is_event_content if event.get("name") in places.content_events else places.is_content
            event = {**event, "attributes": _attributes(event.get("attributes"), rewrite, holds)}
        governed.append(event)
    return governed


def govern_content(record: dict[str, Any], policy: RecordPolicy, places: Places) -> None:
    """Apply `policy.content` (keep, drop, hash or redact) to every place `record` holds message text."""
    record["content_policy"] = policy.content
    if policy.content == KEEP:
        return
    rewrite = text_rewrite(policy)
    if rewrite is None:
        record["prompt"] = record["completion"] = None
    else:
        record["prompt"] = _leaves(record["prompt"], rewrite)
        if isinstance(record["completion"], dict):
            record["completion"] = {key: _leaves(value, rewrite) for key, value in record["completion"].items()}
    record["attributes"] = _attributes(record["attributes"], rewrite, places.is_content)
    record["events"] = _events(record["events"], rewrite, places)
    for observation in record["observations"] or ():
        if isinstance(observation, dict):
            observation["attributes"] = _attributes(observation.get("attributes"), rewrite, places.is_content)
            observation["events"] = _events(observation.get("events"), rewrite, places)
