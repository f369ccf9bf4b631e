"""Object keys: compile the path template once, render `{folder}/{traceId}-{timestamp}.json` per record.

Pure and total, UTC only. Values taken from payloads are untrusted, so rendering is confined and
injective: a value that is safe as it is (printable, no `/`, `\\`, `~` or `..`, short enough)
is used unchanged; any other value is cleaned, cut to its byte budget and marked with `~` and a
hash of the original, so two different values never share a key and none can leave its prefix.
Lengths are UTF-8 bytes: a key fits S3's 1,024 and every path segment a file system's 255 (with
room for the local sink's temporary name). This module must not read clocks, configuration
files or the network.
"""

from __future__ import annotations

import hashlib
import re
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .. import memo
from ..values import frozen_reduce

PLACEHOLDERS: Final = ("prefix", "date", "year", "month", "day", "hour", "apiKeyName", "keyName")
MAX_KEY_BYTES: Final = 1024  # S3's limit for a whole key
MAX_SEGMENT_BYTES: Final = 255  # a file name, on every common file system
MAX_NAME_BYTES: Final = 200  # the object's own name: 255 less the local sink's temporary-name decoration
MAX_TRACE_ID_BYTES: Final = 150  # {traceId} within the name, beside `-{timestamp}-{spanId}.json`
MAX_FOLDER_VALUE_BYTES: Final = 100  # {apiKeyName} and {keyName}
MAX_PREFIX_BYTES: Final = 512
HASH_MARK: Final = "~"  # never left in a value used unchanged, so a marked value cannot be forged
HASH_HEX_DIGITS: Final = 16
_WORST_CASE_VALUES: Final = {"date": 10, "year": 4, "month": 2, "day": 2, "hour": 2,
                             "apiKeyName": MAX_FOLDER_VALUE_BYTES, "keyName": MAX_FOLDER_VALUE_BYTES}
_CONTROL_OR_BACKSLASH: Final = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class KeyTemplate:
    """A validated path template: literal text and placeholder names, in order."""

    text: str
    parts: tuple[tuple[str, str | None], ...]

    def __reduce__(self):
        return frozen_reduce(self)

    def __str__(self) -> str:
        return self.text


def _check_path(text: str, what: str) -> None:
    if _CONTROL_OR_BACKSLASH.search(text) or not text.isprintable():
        raise ValueError(f"{what} {text!r} contains a control character or a backslash")
    if text.startswith("/"):
        raise ValueError(f"{what} {text!r} must not start with '/'")
    if any(segment in (".", "..") for segment in text.split("/")):
        raise ValueError(f"{what} {text!r} must not contain '.' or '..' segments")
    if any(len(segment.encode()) > MAX_SEGMENT_BYTES for segment in text.split("/")):
        raise ValueError(f"{what} has a path segment longer than {MAX_SEGMENT_BYTES} bytes")


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
    worst = sum(len(literal.encode()) + (_WORST_CASE_VALUES.get(name, MAX_PREFIX_BYTES) if name else 0)
                for literal, name, _, _ in parsed)
    if worst + 1 + MAX_NAME_BYTES > MAX_KEY_BYTES:
        raise ValueError(f"{text[:60]!r} is too long: rendered keys could exceed {MAX_KEY_BYTES} bytes")
    return KeyTemplate(text.strip("/"), tuple((literal, name) for literal, name, _, _ in parsed))


def validate_prefix(raw: str) -> str:
    prefix = raw.strip().strip("/")
    if not prefix:
        raise ValueError("the prefix must not be empty")
    _check_path(prefix, "the prefix")
    if len(prefix.encode()) > MAX_PREFIX_BYTES:
        raise ValueError(f"the prefix is longer than {MAX_PREFIX_BYTES} bytes")
    return prefix


def _safe(text: str) -> bool:
    return (text.isprintable() and "/" not in text and "\\" not in text and HASH_MARK not in text
            and ".." not in text and text not in ("", "."))


def sanitize(value: Any, max_bytes: int = MAX_FOLDER_VALUE_BYTES) -> str:
    """`value` as one key segment part: unchanged when safe and within `max_bytes` (UTF-8), else
    cleaned, cut and marked `~<hash of the original>`, so that different values stay different."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= max_bytes:
        if text.isascii() and text.isalnum():
            return text  # the common case (hex ids): nothing in it to check further
        if _safe(text) and (text.isascii() or len(text.encode()) <= max_bytes):
            return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_HEX_DIGITS]
    head = text[:max_bytes]  # at least one byte per character: enough to fill the budget
    cleaned = "".join(ch if ch.isprintable() and ch not in "/\\~" else "_" for ch in head).replace("..", "__")
    budget = max_bytes - len(HASH_MARK) - HASH_HEX_DIGITS
    cut = cleaned.encode()[:budget].decode("utf-8", "ignore")
    return f"{cut}{HASH_MARK}{digest}"


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


def object_key(template: KeyTemplate, record: dict[str, Any], *, prefix: str,
               fallback_unix_nano: int) -> str:
    """`{folder}/{traceId}-{timestamp}.json` for one record (OpenRouter's S3 layout).

    The span-start time (UTC) decides the folder and `{timestamp}` (Unix seconds). When the trace
    id is not the per-call generation id (caller-chosen trace ids, SDK traces with several LLM
    calls), the span id is appended so that two calls never share a key. The same record always
    renders the same key, so a redelivery overwrites instead of duplicating.
    """
    seconds = (record.get("start_time_unix_nano") or fallback_unix_nano) // 1_000_000_000
    key_name = (record.get("ingest") or {}).get("key_name")
    folder = _folder(template, prefix, seconds, record.get("api_key_name"), key_name)
    name = f"{sanitize(record['trace_id'], MAX_TRACE_ID_BYTES)}-{seconds}"
    if record["trace_id"] != record.get("generation_id"):
        name += f"-{sanitize(record['span_id'], 16)}"
    return f"{folder}/{name}.json"


# Folders by (template, prefix, hour, API key name, key name): the calls of an hour share a few (`memo`).
_FOLDERS: Final[dict[tuple[str, str, int, str | None, str | None], str]] = {}
FOLDER_LIMIT: Final = 4096


def _folder(template: KeyTemplate, prefix: str, seconds: int, api_key_name: Any, key_name: str | None) -> str:
    if not isinstance(api_key_name, (str, type(None))) or not isinstance(key_name, (str, type(None))):
        return render_folder(template, template_values(seconds, prefix=prefix, api_key_name=api_key_name,
                                                       key_name=key_name))
    # Every variable is finest by the hour, so the hour (not the second) identifies the folder.
    cache_key = (template.text, prefix, seconds // 3600, api_key_name, key_name)
    folder = _FOLDERS.get(cache_key)
    if folder is None:
        folder = memo.remember(_FOLDERS, cache_key, render_folder(template, template_values(
            seconds, prefix=prefix, api_key_name=api_key_name, key_name=key_name)), FOLDER_LIMIT)
    return folder
