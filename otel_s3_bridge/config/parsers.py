"""Parsers of configuration values: each takes the raw text of a flag, a variable or a file entry
and returns the value or raises ValueError saying what is wrong.

Shared by the fields of `config.schema`. Must not read files (but for what a value names, later),
and a message must never repeat a token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..govern.policy import KeyPolicy, parse_key_policies, text_setting
from ..lake.keys import validate_prefix
from ..lake.object_controls import SSE_MODES, parse_storage_class, parse_tags
from ..values import bounded_int
from .tokens import NamedToken


def text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def optional_text(raw: str) -> str | None:
    return raw.strip() or None


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        return bounded_int(raw, low, high)

    return parse


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"{raw!r} is not one of {', '.join(allowed)}")
        return raw

    parse.allowed = allowed  # the flag's metavar in --help
    return parse


def endpoint_url(raw: str) -> str | None:
    if not raw.strip():
        return None
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{raw!r} is not an http:// or https:// URL")
    return raw.strip().rstrip("/")


def bucket(raw: str) -> str | None:
    name = raw.strip()
    if not name:
        return None
    if "/" in name or name.startswith("s3:") or not 3 <= len(name) <= 63:
        raise ValueError(f"{name!r} is not a bucket name (3-63 characters, no 's3://' and no '/')")
    return name


def _named(entries: list[str], parse_value: Callable[[str], Any], what: str) -> list[tuple[str, Any]]:
    """Parse `name=value` entries. Problems name the entry's position, never its value."""
    named: list[tuple[str, Any]] = []
    problems: list[str] = []
    for position, entry in enumerate(entries, start=1):
        name, sep, raw = entry.partition("=")
        name, raw = name.strip(), raw.strip()
        if sep and raw.startswith("="):  # `VALUE==`: a bare base64 value, not one named VALUE
            problems.append(f"entry {position} has no name: a value ending in '=' needs one (NAME={what})")
        elif not sep or not name or not raw:
            problems.append(f"entry {position} is not NAME={what}")
        elif any(existing == name for existing, _ in named):
            problems.append(f"entry {position} repeats the name {name!r}")
        else:
            try:
                named.append((name, parse_value(raw)))
            except ValueError as exc:
                problems.append(f"entry {position} ({name}): {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return named


def _token(raw: str) -> str:
    if any(ch.isspace() for ch in raw):
        raise ValueError("the token has whitespace in it")
    return raw


def tokens(entries: list[str]) -> tuple[NamedToken, ...]:
    return tuple(NamedToken(name, token) for name, token in _named(entries, _token, "TOKEN"))


def key_prefixes(entries: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple(_named(entries, validate_prefix, "PREFIX"))


def key_buckets(entries: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, bucket) for name, bucket in _named(entries, bucket, "BUCKET") if bucket)


def optional_path(raw: str) -> str | None:
    return raw.strip() or None


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not 0.1 <= value <= 86_400:
        raise ValueError(f"{value} is outside 0.1..86400 seconds")
    return value


def number(low: float, high: float, what: str) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low:g}..{high:g} ({what})")
        return value
    return parse


def key_policies(raw: Any) -> tuple[KeyPolicy, ...]:
    """`[keys.NAME]` tables of the TOML config, or their JSON text (flag, environment)."""
    return parse_key_policies(raw, validate_prefix=validate_prefix, validate_bucket=_policy_bucket, object_settings={
        "s3_sse": choice(*SSE_MODES), "s3_sse_kms_key_id": text_setting, "s3_storage_class": _text_value_of(
            parse_storage_class), "s3_tags": _text_value_of(parse_tags)})


def _text_value_of(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda value: parse(text_setting(value))


def _policy_bucket(raw: str) -> str:
    name = bucket(raw)
    if name is None:
        raise ValueError("must be a bucket name")
    return name


def redact_patterns(entries: list[str]) -> tuple[tuple[str, str], ...]:
    from ..govern.redact import parse_patterns  # loaded only by a bridge that redacts (~14 MB)
    return parse_patterns(entries)


def phone_region(raw: str) -> str:
    from ..govern.redact import PHONE_REGIONS
    region = raw.strip().upper()
    if region not in PHONE_REGIONS:
        raise ValueError(f"{raw!r} is not a country code phonenumbers knows (US, GB, DE, FR, IN, ...)")
    return region
