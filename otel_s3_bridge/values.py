"""Reading untrusted scalar values: bounded integers, numbers, text and nesting depth.

Pure and total: every function either returns a value of the promised type (or None) or raises
ValueError with a message naming the value. Shared by `config` (flags and environment), `otlp`
(the wire) and the conventions (attribute values), so that "what is an integer" has one answer.
Must not know about OTLP, records or configuration fields.
"""

from __future__ import annotations

import math
from typing import Any

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
# Records are encoded with orjson, which refuses documents nested deeper than 254 levels. A record
# nests attribute values about ten levels down (observations -> events -> attributes), so values
# taken from payloads are cut well before that.
MAX_VALUE_DEPTH = 64


def bounded_int(value: Any, low: int, high: int) -> int:
    """An integer given as int, integral float or decimal string, within `low..high`; else ValueError."""
    if isinstance(value, float) and value.is_integer():
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


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True when lists and dicts in `value` nest more than `limit` levels (iterative: no recursion)."""
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
