"""Encode records into object bodies. Pure; must not choose keys or do I/O."""

from __future__ import annotations

from typing import Any

import orjson

JSON_CONTENT_TYPE = "application/json"


def encode_json(record: dict[str, Any]) -> bytes:
    """One record as one uncompressed JSON document (the `trace` layout). NaN/Inf become null."""
    return orjson.dumps(record)
