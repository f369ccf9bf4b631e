"""What one key may store and how fast it may send: `KeyPolicy`, read from the TOML config's
`[keys.NAME]` tables (or the same as JSON in `--keys` / `OTEL_S3_BRIDGE_KEYS`), every setting
unset there taken from the default policy's flags; and `RecordPolicy`, the part of it applied to
each record while decoding (picklable: it travels to decode processes).

Pure: parses and validates values, never reads files or the environment. Problems name the key
and the setting, never a secret.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson

KEEP = "keep"
CONTENT_MODES = (KEEP, "drop", "hash", "redact")
IDENTITY_MODES = (KEEP, "hmac", "drop")


@dataclass(frozen=True)
class KeyPolicy:
    """One key's policy; None: as the default policy (the flags) says."""

    name: str
    prefix: str | None = None  # its own {prefix} (as --key-prefix)
    bucket: str | None = None  # its own bucket (as --key-bucket)
    content: str | None = None  # keep | drop | hash | redact
    identities: str | None = None  # keep | hmac | drop
    sample: float | None = None  # share of calls kept, 0..1; errored calls always kept
    max_spans_per_second: float | None = None  # 0: unlimited
    max_bytes_per_second: float | None = None  # request bytes as received; 0: unlimited
    s3_sse: str | None = None  # its objects' controls (as --s3-sse, ...); tags add to --s3-tags
    s3_sse_kms_key_id: str | None = None
    s3_storage_class: str | None = None
    s3_tags: tuple[tuple[str, str], ...] | None = None

    def over(self, default: KeyPolicy) -> KeyPolicy:
        """This policy with every unset setting taken from `default`."""
        return replace(self, **{f.name: getattr(default, f.name) for f in fields(self)
                                if getattr(self, f.name) is None})


@dataclass(frozen=True, slots=True)
class PseudonymKey:
    """The secret of `identities = "hmac"` and the id naming it in every pseudonym (for rotation)."""

    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RecordPolicy:
    """What decoding does to each record of one key's export."""

    content: str = KEEP
    identities: str = KEEP
    sample: float = 1.0
    pseudonym: PseudonymKey | None = field(default=None, repr=False)
    redact_patterns: tuple[tuple[str, str], ...] = ()  # the operator's own (label, RE2 pattern) for redact
    phone_region: str = "US"  # the country of phone numbers written without +<country code>

    @property
    def changes_nothing(self) -> bool:
        return self.content == KEEP and self.identities == KEEP and self.sample >= 1.0


def _choice(allowed: tuple[str, ...]):
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value
    return parse


def _share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError("must be a number from 0 to 1")
    return float(value)


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
        raise ValueError("must be a number >= 0 (0: unlimited)")
    return float(value)


def text_setting(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


SETTINGS = {"prefix": text_setting, "bucket": text_setting, "content": _choice(CONTENT_MODES),
            "identities": _choice(IDENTITY_MODES), "sample": _share, "max_spans_per_second": _rate,
            "max_bytes_per_second": _rate}


OBJECT_SETTINGS = ("s3_sse", "s3_sse_kms_key_id", "s3_storage_class", "s3_tags")


def parse_key_policies(raw: Any, *, validate_prefix, validate_bucket,
                       object_settings: Mapping[str, Any]) -> tuple[KeyPolicy, ...]:
    """`{name: {setting: value}}` (a TOML table, or its JSON text) -> the policies, by name.
    `object_settings`: the parser of each of OBJECT_SETTINGS (the storage layer's rules). Raises
    ValueError naming every bad key and setting."""
    settings_parsers = {**SETTINGS, **object_settings}
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            raise ValueError('not a JSON object of {"key name": {"setting": value}}') from None
    if not isinstance(raw, Mapping):
        raise ValueError("must be a table of [keys.NAME] tables")
    problems: list[str] = []
    policies = []
    for name, settings in raw.items():
        if not isinstance(settings, Mapping):
            problems.append(f"keys.{name}: must be a table of settings ({', '.join(settings_parsers)})")
            continue
        values: dict[str, Any] = {}
        for setting, value in settings.items():
            parse = settings_parsers.get(setting)
            if parse is None:
                problems.append(f"keys.{name}: unknown setting {setting!r} (known: {', '.join(settings_parsers)})")
                continue
            try:
                value = parse(value)
                if setting == "prefix":
                    value = validate_prefix(value)
                elif setting == "bucket":
                    value = validate_bucket(value)
            except ValueError as exc:
                problems.append(f"keys.{name}.{setting}: {exc}")
                continue
            values[setting] = value
        policies.append(KeyPolicy(str(name), **values))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(sorted(policies, key=lambda policy: policy.name))
