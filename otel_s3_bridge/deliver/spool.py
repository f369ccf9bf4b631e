"""The durable spool: acknowledged records live here, fsynced, until the sink has them.

Layout under the spool directory:
  segments/*.seg     append-only logs of entries (format: `spool_format`); the active one takes
                     appends, sealed ones are deleted once every entry in them is uploaded or
                     quarantined
  segments/*.done    offsets of a segment's entries the sink already has
  quarantine/*.seg   entries the sink refused for good, one file each (never deleted by the bridge);
                     `unreadable-*.seg`, a hard link to a segment an entry could not be read from
  quarantine/reasons.log   one line per distinct permanent cause
  LOCK               held by the running bridge

`append` awaits an fdatasync shared by every append waiting at that moment (group commit); only
then may the export be acknowledged. A segment is registered before its file exists and the
active one is sealed only once its successor exists, so that `adopt_segments` (which picks up
files this run did not write) can never take, seal or delete a segment in use. Entries go to
the uploaders through `spool_queue`; segment files are found and read by `spool_segments`. This
module must not talk to the sink or know about transports; the offline `spool status|retry`
commands are `spool_commands`.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ..durable import write_all, write_atomically
from .spool_format import (
    SEGMENT_SUFFIX,
    DamagedEntry,
    approximate_size,
    decode_entry,
    done_path,
    encode_entry,
    entry_pieces,
)
from .spool_queue import Ref, UploadQueue
from .spool_segments import (
    Segment,
    SegmentFiles,
    count_quarantine,
    directory_stamps,
    link_durably,
    read_new_segments,
    sync_and_close,
)

log = logging.getLogger("otel_s3_bridge.spool")

SEGMENT_MAX_BYTES = 16 * 1024 * 1024
RECLAIM_BYTES = 1024 * 1024  # a fully uploaded active segment this large is replaced and deleted
BODY_CACHE_BYTES = 32 * 1024 * 1024  # entries waiting beyond this are read back from disk (page cache)
THREAD_WRITE_BYTES = 256 * 1024  # appends larger than this are encoded and written off the event loop
RESCAN_SECONDS = 30.0  # the spool's directories are looked at whatever their times say, this often
MIN_FREE_BYTES = 16 * 1024 * 1024  # after a full disk, appends are tried again once this much
                                   # (or a quarter of a smaller disk) is free


class SpoolFull(Exception):
    """No room for the entries right now (byte budget reached, or the disk is full)."""


class SpoolTooSmall(Exception):
    """The entries are larger than the whole spool budget: they can never be taken."""


class Spool:
    def __init__(self, directory: str, max_bytes: int, segment_max_bytes: int = SEGMENT_MAX_BYTES,
                 body_cache_bytes: int = BODY_CACHE_BYTES, files: SegmentFiles | None = None) -> None:
        self.directory = Path(directory)
        self.segments_dir = self.directory / "segments"
        self.quarantine_dir = self.directory / "quarantine"
        self.max_bytes = max_bytes
        self.queue = UploadQueue(body_cache_bytes)
        self._files = files or SegmentFiles()
        self._segment_max = segment_max_bytes
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
        self._sync_waiters: list[asyncio.Future] = []
        self.pending = 0  # entries written and not yet uploaded or quarantined
        self._idle = asyncio.Event()
        self._idle.set()
        self.quarantined_total = 0
        self.quarantined_files = 0  # files in the quarantine: one per refused entry, or an unreadable segment
        self.syncs_total = 0
        self._reasons_logged: set[str] = set()
        self._linked_unreadable: set[Path] = set()
        self._looked_at: tuple[tuple, float] = ((), 0.0)  # the directories' stamps at the last look, and when
        self._unreadable_warned: set[Path] = set()

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
        segment = self._register_new_segment()
        self._fd = self._files.create(segment.path)
        self._active = segment
        return replayed

    def adopt_segments(self) -> int:
        """Queue the entries of segment files this run did not write: an earlier run's, or ones
        `spool retry` moved back from quarantine; recount the quarantine. Returns how many entries
        were queued. Reads files in the calling thread: at start, and in tests; the maintenance loop
        calls `adopt_moved_segments`."""
        found = read_new_segments(self.segments_dir, set(self._segments))
        self._quarantine_bytes, self.quarantined_files = count_quarantine(self.quarantine_dir)
        return self._adopt(found)

    async def adopt_moved_segments(self) -> int:
        """`adopt_segments` for the maintenance loop: only when the spool's directories changed
        (`spool retry` moved files), or every `RESCAN_SECONDS` whatever their times say, with the
        files listed and read in a thread, so that a large quarantine never holds the loop."""
        stamps = directory_stamps(self.segments_dir, self.quarantine_dir)
        now = time.monotonic()
        if stamps == self._looked_at[0] and now - self._looked_at[1] < RESCAN_SECONDS:
            return 0
        looked = self._looked_at[0]
        recount = not looked or stamps[1] != looked[1] or now - self._looked_at[1] >= RESCAN_SECONDS
        self._looked_at = (stamps, now)
        known = set(self._segments)
        found = await asyncio.to_thread(read_new_segments, self.segments_dir, known)
        if recount:
            self._quarantine_bytes, self.quarantined_files = await asyncio.to_thread(
                count_quarantine, self.quarantine_dir)
        return self._adopt(found)

    def _adopt(self, found: list[tuple[Path, int, list, str | None, set[int]]]) -> int:
        adopted = 0
        for path, size, entries, problem, uploaded in found:
            if path in self._segments:
                continue  # this run's own (registered before its file was created)
            if not size and not entries and problem is not None:  # cannot be read: tried again at the next look
                if path not in self._unreadable_warned:
                    self._unreadable_warned.add(path)
                    log.warning("spool file %s cannot be read (%s); it is left where it is", path, problem)
                continue
            segment = Segment(path, size=size, entries=len(entries), sealed=True)
            self._segments[path] = segment
            if problem is not None:
                log.warning("spool file %s: %s; the %d entries before it are replayed, the rest is skipped "
                            "(a write cut short by a crash was never acknowledged)", path.name, problem, len(entries))
            for entry in entries:
                self.queue.remember(entry.bucket, entry.key, entry.enqueued_unix_nano)
                if entry.offset in uploaded:
                    segment.done += 1
                    continue
                self.pending += 1
                self._pending_bytes += entry.length
                self._idle.clear()
                self.queue.put(Ref(segment, entry.offset, entry.length, entry.key, entry.bucket, None,
                                   entry.enqueued_unix_nano, partition=entry.partition,
                                   trace_object=entry.trace_object, controls=entry.controls))
                adopted += 1
            self._finish_if_done(segment)
        if adopted:
            self.queue.wake()
        return adopted

    def _register_new_segment(self) -> Segment:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        segment = Segment(self.segments_dir / name)
        self._segments[segment.path] = segment
        return segment

    # --- appending (the acknowledgement point) ----------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes that count against the budget: entries not yet uploaded, and the quarantine.
        (Uploaded entries wait on disk only until their segment is deleted.)"""
        return self._pending_bytes + self._quarantine_bytes

    @property
    def has_room(self) -> bool:
        """False from a refused append until uploads (or the disk) free space again."""
        return not self._refusing and self.used_bytes < self.max_bytes

    def recheck_room(self) -> None:
        """After a full disk, let appends try again once space is free (called periodically:
        space freed by others, or an empty spool, ends the refusal without an upload)."""
        if not self._refusing:
            return
        if self._disk_full:
            try:
                usage = shutil.disk_usage(self.directory)
            except OSError:
                return
            if usage.free >= min(MIN_FREE_BYTES, usage.total // 4):
                self._refusing = self._disk_full = False
        elif self.pending == 0:
            self._refusing = False

    async def append(self, items: list[tuple[str, bytes, str | None]], joins: list[str | None] | None = None,
                     on_written: Callable[[], None] | None = None, partitions: list[str | None] | None = None,
                     trace_objects: bool = True, controls: list[bytes] | None = None) -> None:
        """Make the entries (key, body, bucket) durable; return only once they are fsynced.
        `joins`: for each entry, the join store's name of its call, if a join half is kept for it.
        `partitions`: for each entry, its lake partition when it goes into a `batch` file too (or
        only, when not `trace_objects`).
        `controls`: for each entry, its objects' encoded ObjectControls (b"": the bridge's own).
        `on_written`: called once the entries are written in order, before the fsync is awaited.
        Raises SpoolTooSmall (never fits), SpoolFull (not now) or OSError. Bodies are written as
        they are (no copy of them is made), however large the export."""
        now = time.time_ns()
        size = approximate_size(items)
        if size > self.max_bytes:
            raise SpoolTooSmall(f"{size} bytes of records are more than the whole spool holds ({self.max_bytes})")
        encoding = (items, now, partitions, trace_objects, controls)
        pieces, lengths = (await asyncio.to_thread(entry_pieces, *encoding) if size > THREAD_WRITE_BYTES
                           else entry_pieces(*encoding))
        total = sum(lengths)
        if self.used_bytes + total > self.max_bytes:
            if self.used_bytes:  # uploads will free room: not ready until they do
                self._refusing = True
            raise SpoolFull(f"the spool holds {self.used_bytes} of {self.max_bytes} bytes")
        async with self._write_lock:
            if self._active.size and self._active.size + total > self._segment_max:
                await self._rotate_or_keep()
            segment, start, fd = self._active, self._active.size, self._fd
            try:
                if total > THREAD_WRITE_BYTES:
                    await asyncio.to_thread(write_all, fd, pieces)
                else:
                    write_all(fd, pieces)
            except OSError as exc:
                os.ftruncate(fd, start)  # leave no half entry behind
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self._refusing = self._disk_full = True
                    raise SpoolFull(f"the disk holding {self.directory} is full") from exc
                raise
            segment.size += total
            segment.entries += len(items)
            self._pending_bytes += total
            self.pending += len(items)
            self._idle.clear()
            self._written += 1
            sequence = self._written
            if on_written is not None:
                on_written()
        try:
            await self._durable(sequence)
        finally:
            # Queued even if the fsync failed: the export is then refused and retried by the client,
            # and the entries in the file are uploaded once more under the same keys, harmlessly.
            self.queue.put_written(segment, start, items, lengths, now, joins, partitions, trace_objects, controls)

    async def _durable(self, sequence: int) -> None:
        """Group commit: one fdatasync covers every write made before it started. Each waiter
        awaits a future of its own, so that one cancelled leaves the fdatasync to the others (and a
        waiter costs a future, not a task and a shield)."""
        while self._synced < sequence:
            if self._syncing is None:
                target = self._written
                self._syncing = asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self._fd)
                self._syncing.add_done_callback(functools.partial(self._synced_to, target))
            waiter = asyncio.get_running_loop().create_future()
            self._sync_waiters.append(waiter)
            await waiter

    def _synced_to(self, target: int, sync: asyncio.Future) -> None:
        self._syncing = None
        waiters, self._sync_waiters = self._sync_waiters, []
        error = OSError("the fdatasync was cancelled") if sync.cancelled() else sync.exception()
        if error is None:
            self.syncs_total += 1
            self._synced = max(self._synced, target)
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    async def _rotate(self) -> None:
        """Start a new active segment, then seal the old one (never the other way round: a sealed
        segment whose entries are all uploaded is deleted). Raises OSError; the old one then stays
        active."""
        await self._durable(self._written)
        segment = self._register_new_segment()
        try:
            fd = await asyncio.to_thread(self._files.create, segment.path)
        except BaseException:
            self._segments.pop(segment.path, None)
            raise
        old, old_fd = self._active, self._fd
        self._active, self._fd = segment, fd
        old.sealed = True
        os.close(old_fd)
        self._finish_if_done(old)

    async def _rotate_or_keep(self) -> None:
        try:
            await self._rotate()
        except OSError as exc:  # the active segment grows past its size instead; nothing is lost
            log.warning("cannot start a new spool segment (%s); appending to the current one", exc.strerror)

    # --- handing entries to the uploaders -----------------------------------------------------------

    async def next(self) -> Ref:
        """The oldest entry that may be uploaded now (waits for one)."""
        return await self.queue.next()

    def body_of(self, ref: Ref) -> bytes:
        """The entry's body, from memory or read back and checked against its CRC.
        Raises OSError or DamagedEntry when it cannot be read."""
        if ref.body is not None:
            return ref.body
        segment = ref.segment
        if segment.read_fd is None:
            segment.read_fd = os.open(segment.path, os.O_RDONLY)
        return decode_entry(os.pread(segment.read_fd, ref.length, ref.offset)).body

    def done(self, ref: Ref) -> None:
        """The sink has the entry (or it is quarantined, or superseded): forget it, and the older
        entries of its object still waiting with it (their bodies must never be put after it)."""
        self.done_all([ref])

    def done_all(self, refs: list[Ref]) -> list[Segment]:
        """`done` for each entry, their marks written with one system call per segment (a batch
        file's members are thousands). Returns the segments marked."""
        marks, count, size = self.queue.finish(refs)
        self._pending_bytes -= size
        self.pending -= count
        for segment, offsets in marks.items():
            segment.done += len(offsets)
            segment.record_done(offsets)  # before a finished segment's files are deleted
        if count:
            self._refusing = self._refusing and self._disk_full
        if self.pending == 0:
            self._idle.set()
        for segment in marks:
            self._finish_if_done(segment)
            if (segment is self._active and segment.done == segment.entries and self._reclaiming is None
                    and (segment.size >= RECLAIM_BYTES or self._disk_full)):
                self._reclaiming = asyncio.ensure_future(self._reclaim_active())
        return list(marks)

    async def _reclaim_active(self) -> None:
        """Replace a fully uploaded active segment, so that its file can be deleted (at once when
        the disk is full: that file is the space new exports need)."""
        try:
            async with self._write_lock:
                active = self._active
                if (self._fd is not None and active.done == active.entries
                        and (active.size >= RECLAIM_BYTES or self._disk_full)):
                    await self._rotate()
                    self._refusing = self._disk_full = False
        except OSError as exc:
            log.warning("cannot replace the spool's active segment yet: %s", exc)
        finally:
            self._reclaiming = None

    def _finish_if_done(self, segment: Segment) -> None:
        if not segment.finished or self._segments.get(segment.path) is not segment:
            return
        segment.close_files()
        del self._segments[segment.path]
        self._linked_unreadable.discard(segment.path)  # a quarantined hard link keeps its bytes
        segment.path.unlink(missing_ok=True)
        done_path(segment.path).unlink(missing_ok=True)

    async def quarantine(self, ref: Ref, body: bytes, reason: str) -> None:
        """Keep an entry the sink refused for good in its own file; never deleted by the bridge.
        Raises OSError (then the entry stays where it is)."""
        entry = encode_entry(ref.key, body, ref.enqueued_unix_nano, ref.bucket, ref.partition, ref.trace_object,
                             ref.controls)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{SEGMENT_SUFFIX}"
        await asyncio.to_thread(write_atomically, self.quarantine_dir / name, entry)
        self._quarantine_bytes += len(entry)
        self.quarantined_files += 1
        self._note_reason(reason)
        self.quarantined_total += 1
        self.done(ref)

    async def quarantine_unreadable(self, ref: Ref, reason: str) -> None:
        """An entry whose bytes cannot be read back: its whole segment is kept in the quarantine
        (a hard link, no read needed); `spool retry` replays every readable entry of it."""
        segment = ref.segment
        if segment.path not in self._linked_unreadable:
            target = self.quarantine_dir / f"unreadable-{segment.path.name}"
            await asyncio.to_thread(link_durably, segment.path, target)
            self._linked_unreadable.add(segment.path)
            self._quarantine_bytes += segment.size
            self.quarantined_files += 1
        self._note_reason(reason)
        self.quarantined_total += 1
        self.done(ref)

    def _note_reason(self, reason: str) -> None:
        if reason in self._reasons_logged:
            return
        self._reasons_logged.add(reason)
        try:
            with open(self.quarantine_dir / "reasons.log", "a", encoding="utf-8", errors="backslashreplace") as file:
                file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.quarantine_dir / "reasons.log", exc.strerror)

    async def done_durably(self, refs: list[Ref]) -> bool:
        """`done` for every entry; True once the marks are on disk (a `batch` file's members: a
        replay must know the file holds them). False: some mark could not be written or synced."""
        marked = {*self.done_all(refs), *(ref.segment for ref in refs)}  # (a member marked before, too)
        segments = {segment for segment in marked if self._segments.get(segment.path) is segment}
        if any(segment.done_fd is None or segment.marks_lost for segment in segments):
            return False
        try:
            await asyncio.to_thread(sync_and_close, [os.dup(segment.done_fd) for segment in segments])
        except OSError:
            return False
        return True

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


__all__ = ["DamagedEntry", "Ref", "Segment", "SegmentFiles", "Spool", "SpoolFull", "SpoolTooSmall"]
