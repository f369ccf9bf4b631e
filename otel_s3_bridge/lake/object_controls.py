"""What every object the bridge writes carries besides its body: server-side encryption
(`--s3-sse AES256|aws:kms`, `--s3-sse-kms-key-id`), a storage class (`--s3-storage-class`) and
tags (`--s3-tags "team=ml,retention=90d"`, for lifecycle rules and cost reports). Given as the
`x-amz-*` headers the direct PUT path signs and as the keyword arguments of aiobotocore's
`put_object` / `create_multipart_upload`. Pure: parses and formats, never talks to S3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

SSE_MODES = ("off", "AES256", "aws:kms")
# S3's tag rules: up to 10 tags, keys up to 128 and values up to 256 characters of letters, digits,
# spaces and + - = . _ : / @
MAX_TAGS = 10
_TAG_TEXT = re.compile(r"[\w +\-=.:/@]*")
_STORAGE_CLASS = re.compile(r"[A-Z_]{1,64}")


@dataclass(frozen=True)
class ObjectControls:
    sse: str = "off"
    sse_kms_key_id: str | None = None
    storage_class: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def tagging(self) -> str | None:
        """The tags as S3's `x-amz-tagging` / `Tagging` value (a URL query string)."""
        return "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in self.tags) or None

    def _settings(self) -> list[tuple[str, str, str | None]]:
        """(S3 header, aiobotocore argument, value or None) of each control."""
        return [("x-amz-server-side-encryption", "ServerSideEncryption", self.sse if self.sse != "off" else None),
                ("x-amz-server-side-encryption-aws-kms-key-id", "SSEKMSKeyId", self.sse_kms_key_id),
                ("x-amz-storage-class", "StorageClass", self.storage_class),
                ("x-amz-tagging", "Tagging", self.tagging)]

    def headers(self) -> dict[str, str]:
        return {header: value for header, _, value in self._settings() if value}

    def put_arguments(self) -> dict[str, str]:
        """The same for aiobotocore (`put_object`, `create_multipart_upload`)."""
        return {argument: value for _, argument, value in self._settings() if value}


def parse_tags(raw: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key=value` -> the tags; raises ValueError naming what S3 would refuse."""
    tags: list[tuple[str, str]] = []
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"{entry!r} is not key=value")
        if len(key) > 128 or len(value) > 256 or not _TAG_TEXT.fullmatch(key) or not _TAG_TEXT.fullmatch(value):
            raise ValueError(f"the tag {key!r}: keys of up to 128 and values of up to 256 letters, digits, spaces "
                             "and + - = . _ : / @")
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
