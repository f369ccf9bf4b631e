"""The spool's file format: entries, and the log of entries already uploaded. Pure bytes.

Entry: 4-byte magic, payload length, CRC-32 of the payload; payload = enqueue time (ns), bucket
length, key length, bucket, key, body. (`OSB1` entries, written before per-key buckets, have no
bucket and are still read.) An incomplete or corrupt entry (a torn last write after a crash) ends
the readable part of its file. A `.done` file beside a segment lists the offsets of its entries
the sink already has. Must not open sockets, keep state or decide anything about uploads.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC, MAGIC_V1 = b"OSB2", b"OSB1"
PREFIX = struct.Struct("<4sII")  # magic, payload length, crc32(payload)
META = struct.Struct("<QHH")  # enqueue time (unix ns), bucket length, key length
META_V1 = struct.Struct("<QH")  # enqueue time (unix ns), key length
SEGMENT_SUFFIX = ".seg"
DONE_RECORD = struct.Struct("<Q")  # offset of an entry the sink has


@dataclass(slots=True)
class StoredEntry:
    offset: int
    length: int
    key: str
    bucket: str | None
    enqueued_unix_nano: int
    body: bytes


class DamagedEntry(ValueError):
    """Bytes that are not one whole, intact entry."""


def entry_header(key: str, body: bytes, enqueued_unix_nano: int, bucket: str | None = None) -> bytes:
    """Everything of an entry but its body (which follows it as is, never copied)."""
    key_bytes, bucket_bytes = key.encode(), (bucket or "").encode()
    head = META.pack(enqueued_unix_nano, len(bucket_bytes), len(key_bytes)) + bucket_bytes + key_bytes
    return PREFIX.pack(MAGIC, len(head) + len(body), zlib.crc32(body, zlib.crc32(head))) + head


def encode_entry(key: str, body: bytes, enqueued_unix_nano: int, bucket: str | None = None) -> bytes:
    return entry_header(key, body, enqueued_unix_nano, bucket) + body


def _decode_payload(magic: bytes, payload: bytes) -> tuple[str, str | None, int, bytes]:
    if magic == MAGIC_V1:
        enqueued, key_length = META_V1.unpack_from(payload)
        start, bucket = META_V1.size, ""
    else:
        enqueued, bucket_length, key_length = META.unpack_from(payload)
        start = META.size + bucket_length
        bucket = payload[META.size:start].decode(errors="replace")
    key = payload[start:start + key_length].decode(errors="replace")
    return key, bucket or None, enqueued, payload[start + key_length:]


def decode_entry(entry: bytes) -> tuple[str, str | None, int, bytes]:
    """(key, bucket, enqueue time, body) of one whole entry; DamagedEntry if it is not intact."""
    if len(entry) < PREFIX.size:
        raise DamagedEntry("shorter than an entry header")
    magic, length, crc = PREFIX.unpack_from(entry)
    payload = entry[PREFIX.size:PREFIX.size + length]
    minimum = META_V1.size if magic == MAGIC_V1 else META.size
    if magic not in (MAGIC, MAGIC_V1) or len(payload) != length or length < minimum or zlib.crc32(payload) != crc:
        raise DamagedEntry("no intact entry (marker, length or checksum)")
    return _decode_payload(magic, payload)


def read_entries(data: bytes) -> tuple[list[StoredEntry], int, str | None]:
    """Every whole, valid entry; the end offset of the valid part; a description of what stopped it."""
    entries: list[StoredEntry] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < PREFIX.size:
            return entries, offset, f"incomplete entry header at byte {offset}"
        magic, length, crc = PREFIX.unpack_from(data, offset)
        start = offset + PREFIX.size
        payload = data[start:start + length]
        if magic not in (MAGIC, MAGIC_V1):
            return entries, offset, f"no entry marker at byte {offset}"
        if len(payload) < length:
            return entries, offset, f"entry at byte {offset} is cut short"
        minimum = META_V1.size if magic == MAGIC_V1 else META.size
        if zlib.crc32(payload) != crc or length < minimum:
            return entries, offset, f"entry at byte {offset} fails its checksum"
        key, bucket, enqueued, body = _decode_payload(magic, payload)
        entries.append(StoredEntry(offset, PREFIX.size + length, key, bucket, enqueued, body))
        offset = start + length
    return entries, offset, None


def done_path(segment_path: Path) -> Path:
    return segment_path.with_suffix(".done")


def read_done(segment_path: Path) -> set[int]:
    """Offsets recorded as uploaded. The log is not fsynced: losing it only means re-uploading
    entries (same keys, so the objects are overwritten, not duplicated)."""
    try:
        data = done_path(segment_path).read_bytes()
    except FileNotFoundError:
        return set()
    whole = len(data) - len(data) % DONE_RECORD.size
    return {offset for (offset,) in DONE_RECORD.iter_unpack(data[:whole])}
