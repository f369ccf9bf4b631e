"""Remembering what pure functions computed from client-sent values, within a bound.

A cache keyed by what clients send (attribute keys, names, times) must not grow with them: when
one is full it starts over. Callers look a key up themselves (a dict `get`, the hot path) and
hand a computed value to `remember`. Must not know what is cached.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """Keep `value` under `key` (emptying `cache` first when it holds `limit` entries); return it."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
