"""What every convention module is made of: the `Convention` interface and the `Attributes` view.

A convention says, in its own module, which attribute keys fill which record fields (in its own
order), which keys make a span an LLM call, how to tell its spans apart, and where its prompt,
completion, finish reason, metadata and time to first token live. `Attributes` is the LLM span's
attributes as the conventions read them: it remembers what a field consumed, so that everything
else stays visible in the record's `attributes`. Pure; must not decide precedence between
conventions (that is the registry in `__init__`) nor build records (that is `decode`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ... import memo
from ...values import as_float, as_int, as_text
from ..messages import (
    MAX_INDEX_DIGITS,
    completion_from_chat,
    completion_from_text,
    json_or_value,
    json_text,
    messages_from_text,
)
from ..spans import Span

# A prompt source returns the message list or None; a completion source returns None when the
# span does not use it, else (completion or None, finish reason carried inside that source).
CompletionFound = tuple[dict[str, Any] | None, str | None] | None
PromptSource = Callable[["Attributes", list[dict[str, Any]], set[int]], Any]
CompletionSource = Callable[["Attributes", list[dict[str, Any]], set[int]], CompletionFound]

# Record fields filled straight from one attribute, and how each is read (`read_field`).
TEXT: Final = 0
INTEGER: Final = 1
NUMBER: Final = 2
FIELD_TYPES: Final[dict[str, int]] = {
    "generation_id": TEXT, "name": TEXT, "model": TEXT, "requested_model": TEXT,
    "provider": TEXT, "model_author": TEXT,
    "input_tokens": INTEGER, "output_tokens": INTEGER, "total_tokens": INTEGER, "cached_tokens": INTEGER,
    "cache_write_tokens": INTEGER, "reasoning_tokens": INTEGER,
    "input_cost": NUMBER, "output_cost": NUMBER, "cost": NUMBER,
    "session_id": TEXT, "customer_id": TEXT, "api_key_name": TEXT, "native_finish_reason": TEXT,
}
_NO_FIELDS: Final[dict[str, Any]] = dict.fromkeys(FIELD_TYPES)
# Flattened message attributes (`llm.input_messages.3.message.content`) deeper than this are not
# unflattened: they stay in `attributes` as they came.
MAX_FLATTENED_SEGMENTS: Final = 16


@dataclass(frozen=True)
class Convention:
    """One LLM span convention. Every tuple is in this convention's own precedence order."""

    source: str  # the record's `source`
    detects: Callable[[Span, Attributes], bool]  # is this span one of this convention's
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # record field -> attribute keys
    llm_keys: tuple[str, ...] = ()  # any of these with a value makes a span an LLM call
    llm_if: Callable[[Mapping[str, Any]], bool] | None = None  # or this says so
    wraps: Callable[[Span], bool] | None = None  # a span around its calls (never a record, whatever it carries)
    content_heads: frozenset[str] = frozenset()  # key heads ("gen_ai.prompt") its prompt/completion use
    # Keys that carry message text (a key, or a prefix ending in '.'): what a key's content policy
    # removes or rewrites wherever it is left in a record (`govern.content`).
    content_keys: tuple[str, ...] = ()
    prompt: tuple[PromptSource, ...] = ()
    prompt_fallbacks: tuple[PromptSource, ...] = ()  # tried after every convention's `prompt`
    completion: tuple[CompletionSource, ...] = ()
    completion_fallbacks: tuple[CompletionSource, ...] = ()
    finish_reason_keys: tuple[str, ...] = ()
    status_message_keys: tuple[str, ...] = ()
    metadata_prefixes: tuple[str, ...] = ()  # `prefix.key` attributes become `metadata.key`
    own_prefixes: tuple[str, ...] = ()  # keys only this convention sends: they mark its spans, never metadata
    metadata_json_keys: tuple[str, ...] = ()  # JSON objects whose entries become metadata
    json_object_keys: tuple[str, ...] = ()  # JSON objects whose entries map to fields as `key.entry`
    json_lookup_keys: tuple[str, ...] = ()  # the same, but the JSON text itself stays in `attributes`
    time_to_first_token_ms: Callable[[Attributes, int], float | None] | None = None
    first_token_key: str = ""  # the attribute time_to_first_token_ms reads: it is called only when that is there
    content_in_logs: bool = False  # its instrumentations may send prompt and completion as OTLP log records


@dataclass(frozen=True)
class Tables:
    """What the registry derives from every convention at once, for `Attributes`."""

    key_fields: Mapping[str, tuple[tuple[str, int], ...]]  # attribute key -> (field, rank) it can fill
    metadata_prefixes: tuple[str, ...]
    metadata_heads: frozenset[str]
    json_object_keys: tuple[str, ...]
    json_lookup_keys: tuple[str, ...]
    own_prefixes: tuple[str, ...]  # keys that mark a convention's spans and are never metadata


KEY_PLAIN: Final = 0
KEY_METADATA: Final = 1
KEY_MARKED: Final = 2
# What reading needs to know of an attribute key, computed once per distinct key: the same few
# dozen keys arrive on every span. Bounded in count and key length, since keys come from clients.
_KEY_INFO: Final[dict[str, tuple[str, str, tuple[tuple[str, int], ...], int]]] = {}
KEY_INFO_LIMIT: Final = 50_000
KEY_INFO_MAX_KEY_LENGTH: Final = 128


def _key_info(key: str, tables: Tables) -> tuple[str, str, tuple[tuple[str, int], ...], int]:
    first = key.find(".")
    second = key.find(".", first + 1) if first >= 0 else -1
    head = key[:second] if second >= 0 else key
    kind = KEY_PLAIN
    if head in tables.metadata_heads and key.startswith(tables.metadata_prefixes):
        kind = KEY_MARKED if key.startswith(tables.own_prefixes) else KEY_METADATA
    info = (key[:first] if first >= 0 else key, head, tables.key_fields.get(key, ()), kind)
    if len(_KEY_INFO) < KEY_INFO_LIMIT and len(key) <= KEY_INFO_MAX_KEY_LENGTH:
        _KEY_INFO[key] = info
    return info


def _flat_entries(key: str, document: dict[str, Any]) -> dict[str, Any]:
    """`{"a": 1, "b": {"c": 2}}` under `key` -> `{"key.a": 1, "key.b.c": 2}` (two levels, as usage
    details nest OpenAI's `prompt_tokens_details`; deeper objects stay whole)."""
    flat: dict[str, Any] = {}
    for part, value in document.items():
        if isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            flat.update({f"{key}.{part}.{name}": inner for name, inner in value.items()})
        else:
            flat[f"{key}.{part}"] = value
    return flat


@dataclass(frozen=True, slots=True)
class KeyPlan:
    """What a span's set of attribute keys tells, whatever their values: the same instrumentation
    sends the same keys on every span, so this is worked out once per distinct set."""

    roots: frozenset[str]  # first dotted segment of each key ("gen_ai")
    heads: frozenset[str]  # first two ("gen_ai.prompt")
    fields: tuple[tuple[str, tuple[tuple[int, str], ...]], ...]  # field -> (rank, key) candidates, by rank
    metadata_keys: tuple[str, ...]
    marked: bool  # carries a key of a convention that marks its spans (OpenRouter)
    object_keys: tuple[str, ...]  # present keys of `Tables.json_object_keys`
    lookup_keys: tuple[str, ...]  # present keys of `Tables.json_lookup_keys`


# Plans by key set (in the order sent), bounded (`memo`): a set of more keys, or of longer ones,
# is planned each time.
_PLANS: Final[dict[tuple[str, ...], KeyPlan]] = {}
PLAN_LIMIT: Final = 1024
PLAN_MAX_KEYS: Final = 64


def key_plan(keys: tuple[str, ...], tables: Tables, *, remember: bool = True) -> KeyPlan:
    plan = _PLANS.get(keys)
    if plan is not None:
        return plan
    roots, heads, metadata_keys, marked = set(), set(), [], False
    candidates: dict[str, list[tuple[int, str]]] = {}
    for key in keys:
        root, head, fields, kind = _KEY_INFO.get(key) or _key_info(key, tables)
        roots.add(root)
        heads.add(head)
        for field_name, rank in fields:
            candidates.setdefault(field_name, []).append((rank, key))
        if kind == KEY_MARKED:
            marked = True
        elif kind == KEY_METADATA:
            metadata_keys.append(key)
    present = set(keys)
    plan = KeyPlan(frozenset(roots), frozenset(heads),
                   tuple((name, tuple(sorted(found))) for name, found in candidates.items()),
                   tuple(metadata_keys), marked,
                   tuple(key for key in tables.json_object_keys if key in present),
                   tuple(key for key in tables.json_lookup_keys if key in present))
    if remember and len(keys) <= PLAN_MAX_KEYS and all(len(key) <= KEY_INFO_MAX_KEY_LENGTH for key in keys):
        memo.remember(_PLANS, keys, plan, PLAN_LIMIT)
    return plan


def read_field(kind: int, value: Any) -> Any:
    """An attribute's value read as a field of `kind`, or None when it cannot be. (A branch, not a
    converter kept in a table: calling a function held in a dict is a Python-level call, ~0.7 k
    instructions, where these are direct calls of the compiled core.)"""
    if kind == TEXT:
        return as_text(value)
    if kind == INTEGER:
        return as_int(value)
    return as_float(value)


class Attributes:
    """The LLM span's attributes, remembering which ones a record field consumed."""

    __slots__ = ("values", "used", "added", "roots", "heads", "metadata_keys", "marked", "_fields", "_looked_up")

    def __init__(self, attributes: dict[str, Any], tables: Tables) -> None:
        self.values = attributes
        self.used: set[str] = set()
        self.added: dict[str, Any] = {}
        plan = key_plan(tuple(attributes), tables)
        if plan.object_keys:  # JSON objects whose parts map to separate fields
            for key in plan.object_keys:
                document = json_text(attributes.get(key))
                if isinstance(document, dict):
                    self.values = values = {name: value for name, value in self.values.items() if name != key}
                    values.update(_flat_entries(key, document))
            if self.values is not attributes:  # keys taken from a document: not worth remembering
                plan = key_plan(tuple(self.values), tables, remember=False)
        self.roots, self.heads = plan.roots, plan.heads
        self.metadata_keys, self.marked = plan.metadata_keys, plan.marked
        self._fields = plan.fields
        # Entries of a JSON document (e.g. the requested model, only inside the call's parameters)
        # that may fill fields as `key.entry`, while the JSON text itself stays in `attributes`.
        self._looked_up: dict[str, list[tuple[int, str, Any]]] = {}
        for key in plan.lookup_keys:
            document = json_text(attributes.get(key))
            if isinstance(document, dict):
                for entry, value in _flat_entries(key, document).items():
                    for field_name, rank in tables.key_fields.get(entry, ()):
                        self._looked_up.setdefault(field_name, []).append((rank, entry, value))

    def _choose(self, candidates: Iterable[tuple[str, Any]]) -> Any:
        """The first candidate (in precedence order; its value already read, None when unusable)
        wins; equal losers are duplicates and are consumed too, a disagreeing loser stays visible
        in `attributes`."""
        winner = None
        for key, value in candidates:
            if value is None:
                continue
            if winner is None:
                winner = value
                self.used.add(key)
            elif value == winner:
                self.used.add(key)
        return winner

    def pick(self, *keys: str, convert: Callable[[Any], Any] = lambda v: v) -> Any:
        values = self.values
        present = [(key, convert(values[key])) for key in keys if key in values]  # mostly none: no generator
        return self._choose(present) if present else None

    def pick_fields(self) -> dict[str, Any]:
        """Every field of `FIELD_TYPES` at once, from the candidates of the key plan."""
        fields = _NO_FIELDS.copy()  # (dict.fromkeys was a generic call, ~5 k instructions a span)
        values, used, looked_up = self.values, self.used, self._looked_up
        for field_name, ranked in self._fields:
            if field_name in looked_up:
                continue
            kind = FIELD_TYPES[field_name]
            if len(ranked) == 1:  # the common case
                key = ranked[0][1]
                value = read_field(kind, values[key])
                if value is not None:
                    used.add(key)
                    fields[field_name] = value
            else:
                fields[field_name] = self._choose([(key, read_field(kind, values[key])) for _, key in ranked])
        if looked_up:  # merged with the keys' own candidates, by rank
            ranked_of = dict(self._fields)
            for field_name, found in looked_up.items():
                merged = [(rank, key, values[key]) for rank, key in ranked_of.get(field_name, ())] + found
                merged.sort(key=lambda item: item[0])
                kind = FIELD_TYPES[field_name]
                fields[field_name] = self._choose([(key, read_field(kind, value)) for _, key, value in merged])
        return fields

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """Unused attributes under `prefix`, keyed by the rest of their name."""
        return {key[len(prefix):]: value for key, value in self.values.items()
                if key.startswith(prefix) and key not in self.used}

    def consume(self, *keys: str) -> None:
        self.used.update(keys)

    def consume_prefix(self, prefix: str, rests: Iterable[str]) -> None:
        self.used.update(prefix + rest for rest in rests)

    def drop_duplicate(self, key: str, of_value: Any) -> None:
        if key in self.values and self.values[key] == of_value:
            self.used.add(key)

    def remaining(self) -> dict[str, Any]:
        rest = {key: value for key, value in self.values.items() if key not in self.used}
        rest.update(self.added)
        return rest


# --- source helpers several conventions share ---------------------------------------------------

def structured_list(a: Attributes, key: str) -> list[Any] | None:
    """A list sent as a JSON string or as a structured (array) attribute value; consumed if found."""
    value = json_or_value(a.values.get(key))
    if isinstance(value, list):
        a.consume(key)
        return value
    return None


def _is_index(segment: str) -> bool:
    return len(segment) <= MAX_INDEX_DIGITS and segment.isascii() and segment.isdigit()


def indexed(a: Attributes, prefix: str) -> dict[str, Any]:
    """`prefix.N.…` attributes (N a list index), keyed `N.…`; other keys under the prefix are not."""
    if prefix[:-1] not in a.heads:
        return {}
    return {rest: value for rest, value in a.prefixed(prefix).items()
            if _is_index(rest.split(".", 1)[0]) and rest.count(".") < MAX_FLATTENED_SEGMENTS}


def flattened_messages(a: Attributes, prefix: str, convert: Callable[[dict[str, Any]], list]) -> Any:
    """Every message of a flattened list (`llm.input_messages.0.message.role`, ...)."""
    flattened = indexed(a, prefix)
    if not flattened:
        return None
    a.consume_prefix(prefix, flattened)
    return convert(flattened) or None


def first_flattened_message(a: Attributes, prefix: str, convert: Callable[[dict[str, Any]], list]) -> CompletionFound:
    """The first choice/message of a flattened list; later ones stay in `attributes`."""
    first = {rest: value for rest, value in indexed(a, prefix).items() if rest.split(".", 1)[0] == "0"}
    if not first:
        return None
    a.consume_prefix(prefix, first)
    converted = convert(first)
    if not converted:
        return None, None
    return completion_from_chat(converted[0]), as_text(converted[0].get("finish_reason"))


def text_prompt(a: Attributes, key: str) -> Any:
    """A generic input (a message list, `{"messages": [...]}` or plain text) under `key`."""
    if key not in a.values or key in a.used:
        return None
    prompt = messages_from_text(a.values[key])
    if prompt is not None:
        a.consume(key)
    return prompt


def text_completion(a: Attributes, key: str) -> CompletionFound:
    """A generic output (an OpenAI response, a message, or plain text) under `key`."""
    if key not in a.values or key in a.used:
        return None
    result = completion_from_text(a.values[key])
    if result is None:
        return None
    a.consume(key)
    return result, None
