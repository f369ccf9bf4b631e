"""Object keys: compile the path template once, render `{folder}/{traceId}-{timestamp}.json` per record.

Pure functions, UTC only. Every value taken from a payload is sanitised so that no record can
write outside its prefix. This module must not read clocks, configuration files or the network.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
import time
from dataclasses import dataclass
from typing import Any

PLACEHOLDERS = ("prefix", "date", "year", "month", "day", "hour", "apiKeyName", "keyName")
MAX_VALUE_LENGTH = 200
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_DOTS = re.compile(r"\.{2,}")
_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class KeyTemplate:
    """A validated path template: literal text and placeholder names, in order."""

    text: str
    parts: tuple[tuple[str, str | None], ...]

    def __str__(self) -> str:
        return self.text


def _check_path(text: str, what: str) -> None:
    if _CONTROL_OR_BACKSLASH.search(text):
        raise ValueError(f"{what} {text!r} contains a control character or a backslash")
    if text.startswith("/"):
        raise ValueError(f"{what} {text!r} must not start with '/'")
    if any(segment in (".", "..") for segment in text.split("/")):
        raise ValueError(f"{what} {text!r} must not contain '.' or '..' segments")


def compile_template(text: str) -> KeyTemplate:
    """Validate a path template such as `{prefix}/{date}`; raise ValueError naming what is wrong."""
    if not text.strip():
        raise ValueError("the path template must not be empty")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid template: {exc}") from None
    unknown = [name for _, name, _, _ in parsed if name is not None and name not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"{text!r} uses unknown variable(s) {', '.join('{' + n + '}' for n in unknown)}; "
                         f"allowed: {' '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if any(spec or conversion for _, name, spec, conversion in parsed if name is not None):
        raise ValueError(f"{text!r}: variables take no format spec or conversion")
    _check_path(text, "the path template")
    return KeyTemplate(text.strip("/"), tuple((literal, name) for literal, name, _, _ in parsed))


def validate_prefix(raw: str) -> str:
    prefix = raw.strip().strip("/")
    if not prefix:
        raise ValueError("the prefix must not be empty")
    _check_path(prefix, "the prefix")
    return prefix


def sanitize(value: Any) -> str:
    """Make a payload value safe as part of one key segment: no '/', '\\', control chars or '..'."""
    text = str(value)
    if (len(text) <= MAX_VALUE_LENGTH and text.isprintable() and "/" not in text and "\\" not in text
            and ".." not in text and text not in ("", ".")):
        return text  # the common case, already safe: skip the regular expressions
    text = _UNSAFE.sub("_", text)[:MAX_VALUE_LENGTH]
    text = _DOTS.sub(lambda m: "_" * len(m.group()), text)
    return "_" if text in ("", ".") else text


def template_values(unix_seconds: int, *, prefix: str, api_key_name: str | None,
                    key_name: str | None) -> dict[str, str]:
    """The template variables for one record (UTC). `{apiKeyName}` falls back to the bridge key name."""
    when = time.gmtime(unix_seconds)
    year, month, day = f"{when.tm_year:04d}", f"{when.tm_mon:02d}", f"{when.tm_mday:02d}"
    return {
        "prefix": prefix,
        "date": f"{year}-{month}-{day}",
        "year": year,
        "month": month,
        "day": day,
        "hour": f"{when.tm_hour:02d}",
        "apiKeyName": sanitize(api_key_name or key_name or "unknown"),
        "keyName": sanitize(key_name or "anonymous"),
    }


def render_folder(template: KeyTemplate, values: Mapping[str, str]) -> str:
    text = "".join(literal + (values[name] if name else "") for literal, name in template.parts)
    return "/".join(segment for segment in text.split("/") if segment)


def object_key(template: KeyTemplate, record: Mapping[str, Any], *, prefix: str,
               fallback_unix_nano: int) -> str:
    """`{folder}/{traceId}-{timestamp}.json` for one record (OpenRouter's S3 layout).

    The span-start time (UTC) decides the folder and `{timestamp}` (Unix seconds). When the trace
    id is not the per-call generation id (caller-chosen trace ids, SDK traces with several LLM
    calls), the span id is appended so that two calls never share a key. The same record always
    renders the same key, so a redelivery overwrites instead of duplicating.
    """
    start = record.get("start_time_unix_nano") or fallback_unix_nano
    ingest = record.get("ingest") or {}
    values = template_values(start // 1_000_000_000, prefix=prefix, api_key_name=record.get("api_key_name"),
                             key_name=ingest.get("key_name"))
    name = f"{sanitize(record['trace_id'])}-{start // 1_000_000_000}"
    if record["trace_id"] != record.get("generation_id"):
        name += f"-{sanitize(record['span_id'])}"
    return f"{render_folder(template, values)}/{name}.json"
