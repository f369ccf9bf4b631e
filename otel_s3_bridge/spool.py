"""The durable spool: acknowledged records live here, fsynced, until the sink has them.

Layout under the spool directory:
  segments/*.seg     append-only logs of entries; the active one takes appends, sealed ones are
                     deleted once every entry in them is uploaded or quarantined
  segments/*.done    offsets of a segment's entries the sink already has (so a restart does not
                     upload them again; losing it only costs re-uploads to the same keys)
  quarantine/*.seg   one file per entry the sink refused permanently (never deleted by the bridge)
  quarantine/reasons.log   one line per distinct permanent cause
  LOCK               held by the running bridge

Entry: 4-byte magic, payload length, CRC-32 of the payload; payload = enqueue time (ns), key
length, key, body. An incomplete or corrupt entry (a torn last write after a crash) ends the
readable part of its file: it is skipped with a warning, never a crash.

`append` writes in the event loop (a page-cache write) and awaits an fdatasync shared by every
append waiting at that moment (group commit); only then may the export be acknowledged. This
module must not talk to the sink or know about transports.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("otel_s3_bridge.spool")

MAGIC = b"OSB1"
PREFIX = struct.Struct("<4sII")  # magic, payload length, crc32(payload)
META = struct.Struct("<QH")  # enqueue time (unix ns), key length
SEGMENT_SUFFIX = ".seg"
SEGMENT_MAX_BYTES = 16 * 1024 * 1024
RECLAIM_BYTES = 1024 * 1024  # a fully uploaded active segment this large is replaced and deleted
BODY_CACHE_BYTES = 64 * 1024 * 1024  # entries waiting beyond this are read back from disk


class SpoolFull(Exception):
    """No room for the entries (byte budget reached, or the disk is full)."""


def encode_entry(key: str, body: bytes, enqueued_unix_nano: int) -> bytes:
    key_bytes = key.encode()
    payload = META.pack(enqueued_unix_nano, len(key_bytes)) + key_bytes + body
    return PREFIX.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


@dataclass(slots=True)
class StoredEntry:
    offset: int
    length: int
    key: str
    enqueued_unix_nano: int
    body: bytes


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
        if magic != MAGIC:
            return entries, offset, f"no entry marker at byte {offset}"
        if len(payload) < length:
            return entries, offset, f"entry at byte {offset} is cut short"
        if zlib.crc32(payload) != crc or length < META.size:
            return entries, offset, f"entry at byte {offset} fails its checksum"
        enqueued, key_length = META.unpack_from(payload)
        key = payload[META.size:META.size + key_length].decode(errors="replace")
        body = payload[META.size + key_length:]
        entries.append(StoredEntry(offset, PREFIX.size + length, key, enqueued, body))
        offset = start + length
    return entries, offset, None


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


DONE_RECORD = struct.Struct("<Q")  # offset of an entry the sink has


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


@dataclass(eq=False)
class Segment:
    path: Path
    size: int = 0
    entries: int = 0
    done: int = 0
    sealed: bool = False
    read_fd: int | None = None
    done_fd: int | None = None

    @property
    def finished(self) -> bool:
        return self.sealed and self.done == self.entries

    def record_done(self, offset: int) -> None:
        try:
            if self.done_fd is None:
                self.done_fd = os.open(done_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self.done_fd, DONE_RECORD.pack(offset))
        except OSError:  # e.g. a full disk: the mark only saves a re-upload after a restart
            pass

    def close_files(self) -> None:
        for fd in (self.read_fd, self.done_fd):
            if fd is not None:
                os.close(fd)
        self.read_fd = self.done_fd = None


@dataclass(slots=True, eq=False)
class Ref:
    """One spooled entry waiting for the sink."""

    segment: Segment
    offset: int
    length: int
    key: str
    body: bytes | None  # None: read back from the segment file when it is its turn
    enqueued_unix_nano: int


@dataclass
class SpoolStats:
    entries: int = 0
    bytes: int = 0
    oldest_unix_nano: int | None = None
    damaged_files: list[str] = field(default_factory=list)


class Spool:
    def __init__(self, directory: str, max_bytes: int, segment_max_bytes: int = SEGMENT_MAX_BYTES,
                 body_cache_bytes: int = BODY_CACHE_BYTES) -> None:
        self.directory = Path(directory)
        self.segments_dir = self.directory / "segments"
        self.quarantine_dir = self.directory / "quarantine"
        self.max_bytes = max_bytes
        self._segment_max = segment_max_bytes
        self._body_cache_limit = body_cache_bytes
        self._cached_bytes = 0
        self._pending_bytes = 0
        self._quarantine_bytes = 0
        self._refusing = False
        self._disk_full = False
        self._reclaiming: asyncio.Task | None = None
        self._segments: dict[Path, Segment] = {}
        self._active: Segment | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._write_lock = asyncio.Lock()
        self._written = 0  # sequence number of the last write to the active file
        self._synced = 0  # writes up to this sequence number are on disk
        self._syncing: asyncio.Future | None = None
        self._queue: collections.deque[Ref] = collections.deque()
        self._ready = asyncio.Condition()
        self.pending = 0  # entries written and not yet uploaded or quarantined
        self._idle = asyncio.Event()
        self._idle.set()
        self.quarantined_total = 0
        self.syncs_total = 0
        self._reasons_logged: set[str] = set()

    # --- opening and replay -----------------------------------------------------------------------

    def open(self) -> int:
        """Lock the directory, replay what an earlier run left, start a new active segment.
        Returns how many entries were replayed. Raises OSError when the spool is unusable."""
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise OSError(f"spool directory {self.directory} is in use by another otel-s3-bridge") from None
        replayed = self.adopt_segments()
        self._start_segment()
        return replayed

    def adopt_segments(self) -> int:
        """Queue the entries of segment files this run did not write: an earlier run's, or ones
        `spool retry` moved back from quarantine. Returns how many entries were queued."""
        adopted = 0
        self._quarantine_bytes = sum(path.stat().st_size for path in _files(self.quarantine_dir))
        for path in sorted(self.segments_dir.glob("*" + SEGMENT_SUFFIX)):
            if path in self._segments:
                continue
            data = path.read_bytes()
            entries, _, problem = read_entries(data)
            uploaded = read_done(path)
            segment = Segment(path, size=len(data), entries=len(entries), sealed=True)
            self._segments[path] = segment
            if problem is not None:
                log.warning("spool file %s: %s; the %d entries before it are replayed, the rest is skipped "
                            "(a write cut short by a crash was never acknowledged)", path.name, problem, len(entries))
            for entry in entries:
                if entry.offset in uploaded:
                    segment.done += 1
                    continue
                self.pending += 1
                self._pending_bytes += entry.length
                self._enqueue(Ref(segment, entry.offset, entry.length, entry.key, None, entry.enqueued_unix_nano))
                adopted += 1
            self._finish_if_done(segment)
        return adopted

    def _start_segment(self) -> None:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        path = self.segments_dir / name
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _fsync_directory(self.segments_dir)  # the new file's name must survive a crash too
        self._active = Segment(path)
        self._segments[path] = self._active

    # --- appending (the acknowledgement point) ----------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes that count against the budget: entries not yet uploaded, and the quarantine.
        (Uploaded entries wait on disk only until their segment is deleted.)"""
        return self._pending_bytes + self._quarantine_bytes

    @property
    def has_room(self) -> bool:
        """False from a refused append until uploads free space again."""
        return not self._refusing and self.used_bytes < self.max_bytes

    async def append(self, items: list[tuple[str, bytes]]) -> None:
        """Make the entries durable; return only once they are fsynced. Raises SpoolFull."""
        now = time.time_ns()
        encoded = [encode_entry(key, body, now) for key, body in items]
        data = b"".join(encoded)
        if self.used_bytes + len(data) > self.max_bytes:
            self._refusing = True
            raise SpoolFull(f"the spool holds {self.used_bytes} of {self.max_bytes} bytes")
        async with self._write_lock:
            if self._active.size and self._active.size + len(data) > self._segment_max:
                await self._rotate()
            segment, start = self._active, self._active.size
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                os.ftruncate(self._fd, start)  # leave no half entry behind
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self._refusing = self._disk_full = True
                    raise SpoolFull(f"the disk holding {self.directory} is full") from exc
                raise
            segment.size += len(data)
            segment.entries += len(items)
            self._pending_bytes += len(data)
            self.pending += len(items)
            self._idle.clear()
            self._written += 1
            sequence = self._written
        try:
            await self._durable(sequence)
        finally:
            # Queued even if the fsync failed: the export is then refused and retried by the client,
            # and the entries in the file are uploaded once more under the same keys, harmlessly.
            offset = start
            for (key, body), entry in zip(items, encoded):
                self._enqueue(Ref(segment, offset, len(entry), key, body, now))
                offset += len(entry)
            async with self._ready:
                self._ready.notify(len(items))

    async def _durable(self, sequence: int) -> None:
        """Group commit: one fdatasync covers every write made before it started."""
        while self._synced < sequence:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        try:
            target, fd = self._written, self._fd
            await asyncio.to_thread(os.fdatasync, fd)
            self.syncs_total += 1
            self._synced = max(self._synced, target)
        finally:
            self._syncing = None

    async def _rotate(self) -> None:
        await self._durable(self._written)
        old, fd = self._active, self._fd
        old.sealed = True
        await asyncio.to_thread(self._start_segment)
        os.close(fd)
        self._finish_if_done(old)

    # --- handing entries to the uploaders -----------------------------------------------------------

    def _enqueue(self, ref: Ref) -> None:
        if ref.body is not None:
            if self._cached_bytes + len(ref.body) > self._body_cache_limit:
                ref.body = None
            else:
                self._cached_bytes += len(ref.body)
        self._idle.clear()
        self._queue.append(ref)

    async def next(self) -> Ref:
        """The oldest entry waiting for the sink (waits for one)."""
        async with self._ready:
            await self._ready.wait_for(lambda: bool(self._queue))
            return self._queue.popleft()

    async def wake_uploaders(self) -> None:
        """After `adopt_segments` queued entries outside `append`."""
        async with self._ready:
            self._ready.notify_all()

    def body_of(self, ref: Ref) -> bytes:
        if ref.body is not None:
            return ref.body
        segment = ref.segment
        if segment.read_fd is None:
            segment.read_fd = os.open(segment.path, os.O_RDONLY)
        entry = os.pread(segment.read_fd, ref.length, ref.offset)
        _, _, body = _split(entry)
        return body

    def done(self, ref: Ref) -> None:
        """The sink has the entry (or it is quarantined): forget it."""
        if ref.body is not None:
            self._cached_bytes -= len(ref.body)
            ref.body = None
        segment = ref.segment
        segment.done += 1
        segment.record_done(ref.offset)
        self.pending -= 1
        self._pending_bytes -= ref.length
        self._refusing = False
        if self.pending == 0:
            self._idle.set()
        self._finish_if_done(segment)
        if (segment is self._active and segment.done == segment.entries and self._reclaiming is None
                and (segment.size >= RECLAIM_BYTES or self._disk_full)):
            self._reclaiming = asyncio.ensure_future(self._reclaim_active())

    async def _reclaim_active(self) -> None:
        """Replace a fully uploaded active segment, so that its file can be deleted (at once when
        the disk is full: that file is the space new exports need)."""
        try:
            async with self._write_lock:
                active = self._active
                if (self._fd is not None and active.done == active.entries
                        and (active.size >= RECLAIM_BYTES or self._disk_full)):
                    await self._rotate()
                    self._disk_full = False
        except OSError as exc:
            log.warning("cannot replace the spool's active segment yet: %s", exc)
        finally:
            self._reclaiming = None

    def _finish_if_done(self, segment: Segment) -> None:
        if not segment.finished:
            return
        segment.close_files()
        segment.path.unlink(missing_ok=True)
        done_path(segment.path).unlink(missing_ok=True)
        del self._segments[segment.path]

    def quarantine(self, ref: Ref, body: bytes, reason: str) -> None:
        """Keep an entry the sink refused for good in its own file; never deleted by the bridge."""
        entry = encode_entry(ref.key, body, ref.enqueued_unix_nano)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        temporary = self.quarantine_dir / f".{name}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(entry)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.quarantine_dir / name)
        _fsync_directory(self.quarantine_dir)
        self._quarantine_bytes += len(entry)
        self.quarantined_total += 1
        if reason not in self._reasons_logged:
            self._reasons_logged.add(reason)
            with open(self.quarantine_dir / "reasons.log", "a") as reasons:
                reasons.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}\n")
        self.done(ref)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def close(self) -> None:
        """Seal the active segment; delete it when everything in it is uploaded."""
        if self._reclaiming is not None:
            self._reclaiming.cancel()
        async with self._write_lock:
            if self._fd is not None:
                await self._durable(self._written)
                os.close(self._fd)
                self._fd = None
                self._active.sealed = True
                self._finish_if_done(self._active)
        for segment in list(self._segments.values()):
            segment.close_files()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _split(entry: bytes) -> tuple[str, int, bytes]:
    payload = entry[PREFIX.size:]
    enqueued, key_length = META.unpack_from(payload)
    return payload[META.size:META.size + key_length].decode(), enqueued, payload[META.size + key_length:]


# --- offline commands: `otel-s3-bridge spool status|retry` -------------------------------------------

def _files(directory: Path) -> Iterator[Path]:
    return iter(sorted(directory.glob("*" + SEGMENT_SUFFIX))) if directory.is_dir() else iter(())


def stats(directory: Path) -> SpoolStats:
    result = SpoolStats()
    for path in _files(directory):
        data = path.read_bytes()
        entries, _, problem = read_entries(data)
        uploaded = read_done(path)
        entries = [entry for entry in entries if entry.offset not in uploaded]
        result.entries += len(entries)
        result.bytes += len(data)
        for entry in entries:
            if result.oldest_unix_nano is None or entry.enqueued_unix_nano < result.oldest_unix_nano:
                result.oldest_unix_nano = entry.enqueued_unix_nano
        if problem:
            result.damaged_files.append(f"{path.name}: {problem}")
    return result


def retry_quarantined(spool_directory: str) -> int:
    """Move every quarantined entry back into the spool. Returns how many files were moved."""
    root = Path(spool_directory)
    quarantine, segments = root / "quarantine", root / "segments"
    segments.mkdir(parents=True, exist_ok=True)
    moved = 0
    for path in _files(quarantine):
        os.replace(path, segments / f"retry-{path.name}")  # atomic: the bridge adopts whole files only
        moved += 1
    if moved:
        _fsync_directory(segments)
        _fsync_directory(quarantine)
    return moved


def adopt_orphan_spools(root: str, target: str) -> int:
    """Move the files of spools no process uses (a worker directory left by a larger `--workers`,
    or the single-process spool when workers start) into `target`, so nothing is left behind.
    Returns how many segment files were moved."""
    root_path, target_path = Path(root), Path(target)
    candidates = [root_path, *sorted(root_path.glob("worker-*"))]
    moved = 0
    for candidate in candidates:
        if candidate.resolve() == target_path.resolve() or not (candidate / "segments").is_dir():
            continue
        lock_fd = os.open(candidate / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running process owns it
            for kind in ("segments", "quarantine"):
                (target_path / kind).mkdir(parents=True, exist_ok=True)
                for path in sorted((candidate / kind).glob("*" + SEGMENT_SUFFIX)):
                    destination = target_path / kind / f"adopted-{candidate.name}-{path.name}"
                    if done_path(path).exists():
                        os.replace(done_path(path), done_path(destination))
                    os.replace(path, destination)
                    moved += 1
                _fsync_directory(target_path / kind)
        finally:
            os.close(lock_fd)
    return moved
