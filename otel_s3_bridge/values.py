"""Reading untrusted scalar values: bounded integers, numbers, text, times and nesting depth.

Pure and total: every function either returns a value of the promised type (or None) or raises
ValueError with a message naming the value. Shared by `config` (flags and environment), `otlp`
(the wire) and the conventions (attribute values), so that "what is an integer" has one answer.
Must not know about OTLP, records or configuration fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any, Final

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
UINT64_MAX: Final = 2**64 - 1
# Records are encoded with orjson, which refuses documents nested deeper than 254 levels. A record
# nests attribute values about ten levels down (observations -> events -> attributes), so values
# taken from payloads are cut well before that.
MAX_VALUE_DEPTH: Final = 64


def bounded_int(value: Any, low: int, high: int) -> int:
    """An integer given as int, integral float or decimal string, within `low..high`; else ValueError."""
    if type(value) is str and value.isdigit() and value.isascii() and len(value) <= 20:
        value = int(value)  # the common case (OTLP/JSON sends int64 as decimal strings)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{_shown(value)} is not an integer")
    if isinstance(value, str):
        text = value.strip()
        # int() would also take '²', '1_000' or 4,300-digit strings; only plain decimals are integers here.
        if not (text.isascii() and text.lstrip("+-").isdigit() and len(text) <= 21):
            raise ValueError(f"{_shown(value)} is not an integer")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{_shown(value)} is outside {low}..{high}")
    return value


def as_int(value: Any) -> int | None:
    """A signed 64-bit integer, or None when the value is not one (a field that cannot be read)."""
    try:
        return bounded_int(value, INT64_MIN, INT64_MAX)
    except ValueError:
        return None


def as_float(value: Any) -> float | None:
    """A finite number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value) if abs(value) < 1e308 else math.inf
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_text(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value != "" else None


_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def unix_nanos(rfc3339: Any) -> int | None:
    """`2026-09-28T10:01:02.318Z` (any ISO 8601 time; none: UTC) -> Unix nanoseconds, in integers (a
    float product ends a unit short for ~0.6 % of times); None for anything else."""
    if not isinstance(rfc3339, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True when lists and dicts in `value` nest more than `limit` levels (level by level, no
    recursion: the cost is one look at each container)."""
    level, depth = ([value] if type(value) is dict or type(value) is list else []), 1
    while level:
        if depth > limit:
            return True
        below = []
        for node in level:
            for child in (node.values() if type(node) is dict else node):
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level, depth = below, depth + 1
    return False


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def frozen_reduce(instance: Any) -> tuple[type, tuple[Any, ...]]:
    """`__reduce__` for a dataclass that crosses to a decode process: rebuilt by calling its class
    with its fields in order. Its compiled (mypyc) build cannot be unpickled field by field (a
    frozen one refuses every assignment; one with its own `__init__` is called without arguments)."""
    return type(instance), tuple(getattr(instance, field.name) for field in dataclasses.fields(instance))
