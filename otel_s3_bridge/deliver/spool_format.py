"""The spool's file format: entries, and the log of entries already uploaded. Pure bytes.

Entry: 4-byte magic, payload length, CRC-32 of the payload; payload = enqueue time (ns), bucket
length, key length, bucket, key, body. An `OSB3` entry also says what to write: after the key
length come the length of its lake partition and a flags byte (1: its own `trace` object; 2, set
by earlier versions, is ignored), and after the key the partition itself
(`{prefix}/lake/dt=…/hour=…`: the folder of its `batch` layout file). An `OSB4` entry is an
`OSB3` one that also says how its objects are stored (`ObjectControls.encode`: encryption, storage
class, tags): its length after the flags, the controls after the partition. `OSB2` entries (the
trace object only) and `OSB1` ones (written before per-key buckets, no bucket) are still read. An
incomplete or corrupt entry (a torn last write after a crash) ends the readable part of its file.
A `.done` file beside a segment lists the offsets of its entries
the sink already has. Must not open sockets, keep state or decide anything about uploads.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC, MAGIC_V1, MAGIC_V3, MAGIC_V4 = b"OSB2", b"OSB1", b"OSB3", b"OSB4"
PREFIX = struct.Struct("<4sII")  # magic, payload length, crc32(payload)
META = struct.Struct("<QHH")  # enqueue time (unix ns), bucket length, key length
META_V1 = struct.Struct("<QH")  # enqueue time (unix ns), key length
META_V3 = struct.Struct("<QHHHB")  # enqueue time (unix ns), bucket, key and partition lengths, flags
META_V4 = struct.Struct("<QHHHBH")  # ... and the object controls' length
TRACE_OBJECT = 1  # OSB3 flag: the entry is also written as its own `trace` layout object
MINIMUM = {MAGIC: META.size, MAGIC_V1: META_V1.size, MAGIC_V3: META_V3.size, MAGIC_V4: META_V4.size}
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
    partition: str | None = None  # the lake partition of its `batch` file; None: no batch file
    trace_object: bool = True  # written as its own `trace` layout object
    controls: bytes = b""  # its objects' encoded ObjectControls; empty: the bridge's own settings


class DamagedEntry(ValueError):
    """Bytes that are not one whole, intact entry."""


def entry_header(key: str, body: bytes, enqueued_unix_nano: int, bucket: str | None = None,
                 partition: str | None = None, trace_object: bool = True, controls: bytes = b"") -> bytes:
    """Everything of an entry but its body (which follows it as is, never copied)."""
    key_bytes, bucket_bytes = key.encode(), (bucket or "").encode()
    if controls:
        partition_bytes = (partition or "").encode()
        magic = MAGIC_V4
        head = (META_V4.pack(enqueued_unix_nano, len(bucket_bytes), len(key_bytes), len(partition_bytes),
                             TRACE_OBJECT if trace_object or partition is None else 0, len(controls))
                + bucket_bytes + key_bytes + partition_bytes + controls)
    elif partition is None:
        magic, head = MAGIC, META.pack(enqueued_unix_nano, len(bucket_bytes), len(key_bytes)) + bucket_bytes + key_bytes
    else:
        partition_bytes = partition.encode()
        magic = MAGIC_V3
        head = (META_V3.pack(enqueued_unix_nano, len(bucket_bytes), len(key_bytes), len(partition_bytes),
                             TRACE_OBJECT if trace_object else 0)
                + bucket_bytes + key_bytes + partition_bytes)
    return PREFIX.pack(magic, len(head) + len(body), zlib.crc32(body, zlib.crc32(head))) + head


def approximate_size(items: list[tuple[str, bytes, str | None]]) -> int:
    """The bytes of (key, body, bucket) items as entries, near enough to decide before encoding
    them (bodies and keys, and 64 for each header)."""
    size = 0
    for key, body, _ in items:
        size += len(body) + len(key) + 64
    return size


def entry_pieces(items: list[tuple[str, bytes, str | None]], enqueued_unix_nano: int,
                 partitions: list[str | None] | None, trace_objects: bool,
                 controls: list[bytes] | None) -> tuple[list[bytes], list[int]]:
    """The entries of (key, body, bucket) items as the pieces to write in order (each header, then
    its body as it is) and each entry's length. `partitions`, `controls`: per item, or None."""
    pieces: list[bytes] = []
    lengths: list[int] = []
    for index, (key, body, bucket) in enumerate(items):
        partition = partitions[index] if partitions else None
        control = controls[index] if controls else b""
        header = entry_header(key, body, enqueued_unix_nano, bucket, partition, trace_objects or partition is None,
                              control)
        pieces.append(header)
        pieces.append(body)
        lengths.append(len(header) + len(body))
    return pieces, lengths


def encode_entry(key: str, body: bytes, enqueued_unix_nano: int, bucket: str | None = None,
                 partition: str | None = None, trace_object: bool = True, controls: bytes = b"") -> bytes:
    return entry_header(key, body, enqueued_unix_nano, bucket, partition, trace_object, controls) + body


def _decode_payload(magic: bytes, payload: bytes, offset: int = 0, length: int = 0) -> StoredEntry:
    partition, trace_object = None, True
    if magic == MAGIC_V1:
        enqueued, key_length = META_V1.unpack_from(payload)
        start, bucket = META_V1.size, ""
    elif magic == MAGIC:
        enqueued, bucket_length, key_length = META.unpack_from(payload)
        start = META.size + bucket_length
        bucket = payload[META.size:start].decode(errors="replace")
    else:
        controls_length = 0
        if magic == MAGIC_V4:
            enqueued, bucket_length, key_length, partition_length, flags, controls_length = META_V4.unpack_from(payload)
            meta = META_V4.size
        else:
            enqueued, bucket_length, key_length, partition_length, flags = META_V3.unpack_from(payload)
            meta = META_V3.size
        start = meta + bucket_length
        bucket = payload[meta:start].decode(errors="replace")
        partition = payload[start + key_length:start + key_length + partition_length].decode(errors="replace")
        trace_object = bool(flags & TRACE_OBJECT)
        key = payload[start:start + key_length].decode(errors="replace")
        controls_start = start + key_length + partition_length
        body = payload[controls_start + controls_length:]
        return StoredEntry(offset, length, key, bucket or None, enqueued, body, partition or None, trace_object,
                           bytes(payload[controls_start:controls_start + controls_length]))
    key = payload[start:start + key_length].decode(errors="replace")
    return StoredEntry(offset, length, key, bucket or None, enqueued, payload[start + key_length:], partition,
                       trace_object)


def decode_entry(entry: bytes) -> StoredEntry:
    """One whole entry (offset and length left 0); DamagedEntry if it is not intact."""
    if len(entry) < PREFIX.size:
        raise DamagedEntry("shorter than an entry header")
    magic, length, crc = PREFIX.unpack_from(entry)
    payload = entry[PREFIX.size:PREFIX.size + length]
    if magic not in MINIMUM or len(payload) != length or length < MINIMUM[magic] or zlib.crc32(payload) != crc:
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
        if magic not in MINIMUM:
            return entries, offset, f"no entry marker at byte {offset}"
        if len(payload) < length:
            return entries, offset, f"entry at byte {offset} is cut short"
        if zlib.crc32(payload) != crc or length < MINIMUM[magic]:
            return entries, offset, f"entry at byte {offset} fails its checksum"
        entries.append(_decode_payload(magic, payload, offset, PREFIX.size + length))
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
