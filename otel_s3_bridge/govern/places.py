"""Where a record holds message text and end-user identities: the attribute keys (or key
prefixes) and GenAI event names that carry them. The conventions (`decode.conventions`) fill it
in, each naming its own keys; the policies (`content`, `identities`) read it. Pure data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Places:
    content_keys: frozenset[str]
    content_prefixes: tuple[str, ...]
    content_events: frozenset[str]  # span events / GenAI event records whose attributes carry messages
    event_content_keys: frozenset[str]  # ... in these attributes (the log body's `content`, `message`, ...)
    identity_keys: frozenset[str]
    identity_prefixes: tuple[str, ...]

    def is_content(self, key: str) -> bool:
        return key in self.content_keys or key.startswith(self.content_prefixes)

    def is_event_content(self, key: str) -> bool:
        return key in self.event_content_keys or self.is_content(key)

    def is_identity(self, key: str) -> bool:
        return key in self.identity_keys or key.startswith(self.identity_prefixes)


def rewritten(attributes: Any, matches: Callable[[str], bool], rewrite: Callable[[Any], Any] | None) -> Any:
    """`attributes` with each key `matches` selects rewritten, or removed when `rewrite` is None; the
    same dict when no key matches (attribute dicts may be shared between records: never changed)."""
    if not isinstance(attributes, dict):
        return attributes
    found = [key for key in attributes if matches(key)]
    if not found:
        return attributes
    if rewrite is None:
        return {key: value for key, value in attributes.items() if key not in found}
    return {**attributes, **{key: rewrite(attributes[key]) for key in found}}
