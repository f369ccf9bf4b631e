"""What every object the bridge writes carries besides its body: server-side encryption
(`--s3-sse AES256|aws:kms`, `--s3-sse-kms-key-id`), a storage class (`--s3-storage-class`) and
tags (`--s3-tags "team={keyName},source={source},retention=90d"`, for lifecycle rules and cost
reports), for every key or per key (`[keys.NAME]`). A tag value's `{keyName}` is the sending key's
name and `{source}` the record's instrumentation (openrouter, openinference, gen_ai, ...), filled in
when a record is accepted (`render`); the result travels with the record through the spool
(`encode` / `decode`). Given as the `x-amz-*` headers the direct PUT path signs and as the keyword
arguments of aiobotocore's `put_object` / `create_multipart_upload`. Pure: parses and formats,
never talks to S3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import quote

import orjson

SSE_MODES = ("off", "AES256", "aws:kms")
# S3's tag rules: up to 10 tags, keys up to 128 and values up to 256 characters of letters, digits,
# spaces and + - = . _ : / @
MAX_TAGS = 10
_TAG_TEXT = re.compile(r"[\w +\-=.:/@]*")
_NOT_TAG_TEXT = re.compile(r"[^\w +\-=.:/@]")
TAG_PLACEHOLDERS = ("{keyName}", "{source}")
_STORAGE_CLASS = re.compile(r"[A-Z_]{1,64}")


@dataclass(frozen=True)
class ObjectControls:
    sse: str | None = "off"  # None: as the default (a key's own controls)
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def tagging(self) -> str | None:
        """The tags as S3's `x-amz-tagging` / `Tagging` value (a URL query string)."""
        return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in self.tags) or None

    def _settings(self) -> list[tuple[str, str, str | None]]:
        """(S3 header, aiobotocore argument, value or None) of each control."""
        sse = None if self.sse in ("off", None) else self.sse
        return [("x-amz-server-side-encryption", "ServerSideEncryption", sse),
                ("x-amz-server-side-encryption-aws-kms-key-id", "SSEKMSKeyId", self.sse_kms_key_id),
                ("x-amz-storage-class", "StorageClass", self.storage_class),
                ("x-amz-tagging", "Tagging", self.tagging)]

    def headers(self) -> dict[str, str]:
        return {header: value for header, _, value in self._settings() if value}

    def put_arguments(self) -> dict[str, str]:
        """The same for aiobotocore (`put_object`, `create_multipart_upload`)."""
        return {argument: value for _, argument, value in self._settings() if value}

    @property
    def templated(self) -> bool:
        return any(placeholder in value for _, value in self.tags for placeholder in TAG_PLACEHOLDERS)

    def render(self, key_name: str | None, source: str | None) -> ObjectControls:
        """These controls for one record: `{keyName}` and `{source}` in tag values filled in (what S3
        would refuse in a tag replaced by `_`)."""
        if not self.templated:
            return self
        values = {"{keyName}": _tag_text(key_name or "anonymous"), "{source}": _tag_text(source or "unknown")}
        tags = []
        for key, value in self.tags:
            for placeholder, filled in values.items():
                value = value.replace(placeholder, filled)
            tags.append((key, value[:256]))
        return replace(self, tags=tuple(tags))

    def over(self, default: ObjectControls) -> ObjectControls:
        """A key's own controls (unset: None, tags: added to or replacing the default's by name)."""
        tags = dict(default.tags)
        tags.update(self.tags)
        return ObjectControls(self.sse if self.sse is not None else default.sse,
                              self.sse_kms_key_id or default.sse_kms_key_id,
                              self.storage_class or default.storage_class, tuple(tags.items()))

    def encode(self) -> bytes:
        """For a spool entry; b"" when there is nothing to set."""
        if self == NO_CONTROLS:
            return b""
        return orjson.dumps([self.sse, self.sse_kms_key_id, self.storage_class, self.tags])

    @staticmethod
    def decode(data: bytes) -> ObjectControls:
        if not data:
            return NO_CONTROLS
        sse, kms_key_id, storage_class, tags = orjson.loads(data)
        return ObjectControls(sse, kms_key_id, storage_class, tuple((key, value) for key, value in tags))


NO_CONTROLS = ObjectControls()


def _tag_text(value: str) -> str:
    return _NOT_TAG_TEXT.sub("_", value)[:256]


def parse_tags(raw: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key=value` -> the tags; raises ValueError naming what S3 would refuse."""
    tags: list[tuple[str, str]] = []
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"{entry!r} is not key=value")
        plain = value
        for placeholder in TAG_PLACEHOLDERS:
            plain = plain.replace(placeholder, "")
        if len(key) > 128 or len(value) > 256 or not _TAG_TEXT.fullmatch(key) or not _TAG_TEXT.fullmatch(plain):
            raise ValueError(f"the tag {key!r}: keys of up to 128 and values of up to 256 letters, digits, spaces "
                             "and + - = . _ : / @ (values may hold {keyName} and {source})")
        if any(existing == key for existing, _ in tags):
            raise ValueError(f"the tag {key!r} is given twice")
        tags.append((key, value))
    if len(tags) > MAX_TAGS:
        raise ValueError(f"S3 takes at most {MAX_TAGS} tags per object")
    return tuple(tags)


def parse_storage_class(raw: str) -> str | None:
    value = raw.strip()
    if value and not _STORAGE_CLASS.fullmatch(value):
        raise ValueError(f"{value!r} is not a storage class (STANDARD_IA, INTELLIGENT_TIERING, GLACIER_IR, ...)")
    return value or None
