"""The join store: the two halves of one LLM call that arrive apart, kept on disk until they meet.

OpenTelemetry's GenAI instrumentation sends a call's span (model, usage) over OTLP traces and its
prompt and completion as GenAI event records over OTLP logs, in separate exports, in either order,
possibly to different `--workers` processes. Both halves are kept here, in `--join-dir` (by
default the spool directory's `join/`, shared by the workers), in one append-only file per slice
of time (a tenth of the window, at most a minute), written by every process:

  halves-{slice}.jsonl   one line per half: `S|E name received_unix_nano JSON`, where S is a stored
                         record still without prompt and completion (its object key, bucket and
                         body) and E GenAI events of a span; `name` is `{owner}-{trace id}{span id}`

`owner` is a digest of the key name that sent them: a key can only complete its own records. Each
process keeps an index (name -> where its halves are) of every line of the live files, and reads
what other processes appended before it looks anything up. An export's halves cost one `write` and
a share of one `fdatasync` (exports side by side share them), whatever their number (before: a
symbolic link per call, and a span without content cost 1.7x a span carrying it); a line is
appended and the others' lines read under an exclusive `flock` on the directory, so two processes
cannot both miss each other. A line torn by a crash is never read as a half (every reader stops at
the last newline, and the next writer ends the torn line first). Whichever half arrives second
finds the first, and the caller stores the completed record under the record's own key (an
overwrite); `latest` tells an uploader what a record's object must hold now, whichever process
received which half. The halves wait `--join-window-seconds` (up to a slice more); then their file
is deleted (events that never met their span are counted: they belonged to no LLM call the bridge
stored). Bytes on disk are bounded by `--join-max-bytes`. Runs in the event loop: appends and reads
hit the page cache, and what may wait (an fdatasync, a `flock` another worker holds) goes to a
thread. (Keeping halves in a thread instead cost the loop about 15 µs a span in GIL contention,
measured with bench/answers_bench.py.) Must not decode, encode or upload."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from ..durable import fsync_directory, write_all
from .prepare import SpanHalf

log = logging.getLogger("otel_s3_bridge.join")

FILE_PREFIX, FILE_SUFFIX = "halves-", ".jsonl"
SPAN, EVENTS = b"S", b"E"
SLICE_MAX_SECONDS = 60.0
EXPIRE_EVERY_MAX_SECONDS = 30.0
# A file outlives its window by this much, so that a half found just before it expires can still be read.
GRACE_SECONDS = 60.0
READ_CHUNK = 4 * 1024 * 1024  # bytes of other processes' lines read at a time
THREAD_WRITE_BYTES = 256 * 1024  # appends larger than this are written off the event loop
HALVES_AT_ONCE = 1000  # halves kept in one go (~5 ms of the loop); a larger export in parts

# Where a half is: (slice, offset of its JSON, length of its JSON, when it was received).
Place = tuple[int, int, int, int]


class JoinFull(Exception):
    """The store holds `--join-max-bytes` already; it empties as halves expire."""


@functools.lru_cache(maxsize=1024)  # key names are the configured keys': few
def _owner(key_name: str | None) -> str:
    return hashlib.sha256((key_name or "").encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _event_identity(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


class _Call:
    """What the store holds of one call: its record's half (the newest) and its events' halves."""

    __slots__ = ("span", "events", "matched")

    def __init__(self) -> None:
        self.span: Place | None = None
        self.events: list[Place] | tuple[()] = ()  # most calls never get events: no list each
        self.matched = False  # both halves were here at some time


class _Slice:
    """One file of halves: its descriptor, how far this process has read it, and which of this
    process's appends to it are on disk."""

    __slots__ = ("number", "fd", "read_to", "names", "appended", "synced", "syncing", "created", "appending")

    def __init__(self, number: int, fd: int, *, created: bool) -> None:
        self.number = number
        self.fd = fd
        self.read_to = 0  # every line before this offset is in the index
        self.names: list[str] = []  # calls with a half in it (to forget them when it expires)
        self.appended = 0  # appends this process made to it, counted
        self.synced = 0  # of those, how many an fdatasync covers
        self.syncing: asyncio.Future | None = None
        self.created = created  # this process may have made the file: its name is made durable too
        self.appending = False  # this process is appending to it in a thread


class JoinStore:
    def __init__(self, directory: str | Path, *, window_seconds: float, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.window_seconds = window_seconds
        self.max_bytes = max_bytes
        self.slice_seconds = min(max(window_seconds / 10, 1.0), SLICE_MAX_SECONDS)
        self.used_bytes = 0  # the live files' bytes, as far as read
        self.expired_events = 0  # spans whose events never met their span (since start)
        self._full_warned = False
        self._expired_at = 0.0
        self._calls: dict[str, _Call] = {}
        self._slices: dict[int, _Slice] = {}

    def open(self) -> None:
        """Index what an earlier run (or another worker) left, and delete what has expired."""
        if self.directory.is_dir():
            for entry in os.scandir(self.directory):
                number = self._slice_number(entry.name)
                if number is not None:
                    self._slice(number, create=False)
                else:
                    log.info("join store: %s is not one of its files (an earlier version's?); deleting it",
                             entry.name)
                    _remove(entry.path)
            self._catch_up(discover=False)
            self.expire()

    def _slice_number(self, name: str) -> int | None:
        if name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX):
            digits = name[len(FILE_PREFIX):-len(FILE_SUFFIX)]
            if digits.isdigit():
                return int(digits)
        return None

    def _path(self, number: int) -> str:
        return f"{self.directory}{os.sep}{FILE_PREFIX}{number:012d}{FILE_SUFFIX}"

    def _slice(self, number: int, *, create: bool) -> _Slice | None:
        known = self._slices.get(number)
        if known is not None:
            return known
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self._path(number), flags, 0o644)
        except FileNotFoundError:
            return None
        known = self._slices[number] = _Slice(number, fd, created=create)
        return known

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The store's exclusive `flock` (the directory's); waited for in a thread when another
        worker holds it (never long: nobody fsyncs under it)."""
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock

    # --- reading the files -----------------------------------------------------------------------------

    def _slice_of(self, unix_nano: int) -> int:
        return int(unix_nano / 1e9 // self.slice_seconds)

    def _catch_up(self, *, discover: bool = True) -> None:
        """Index the lines appended since this process last read: files of the current and the
        previous slice may be new or growing (and one before them may end in a line that was being
        written); older ones are complete, and read whole when the store opens (`discover` off)."""
        oldest = -1
        if discover:
            current = self._slice_of(time.time_ns())
            for number in (current - 1, current):
                self._slice(number, create=False)
            oldest = current - 2
        for piece in sorted(self._slices.values(), key=lambda piece: piece.number):
            if piece.number < oldest or piece.appending:
                continue
            size = os.fstat(piece.fd).st_size
            while piece.read_to < size:
                want = min(size - piece.read_to, READ_CHUNK)
                data = os.pread(piece.fd, want, piece.read_to)
                end = data.rfind(b"\n") + 1
                while not end and want < size - piece.read_to:  # one line longer than a chunk
                    want = min(size - piece.read_to, want * 2)
                    data = os.pread(piece.fd, want, piece.read_to)
                    end = data.rfind(b"\n") + 1
                if not end:  # a line being written, or torn by a crash: read again later
                    break
                self._index(piece, data[:end], piece.read_to)
                piece.read_to += end
                self.used_bytes += end

    def _index(self, piece: _Slice, data: bytes, offset: int) -> None:
        start = 0
        while start < len(data):
            end = data.index(b"\n", start)
            fields = data[start:end].split(b" ", 3)
            if len(fields) == 4 and fields[0] in (SPAN, EVENTS) and fields[2].isdigit():
                json_at = start + len(fields[0]) + len(fields[1]) + len(fields[2]) + 3
                place = (piece.number, offset + json_at, end - json_at, int(fields[2]))
                self._add(piece, fields[1].decode("ascii", "replace"), fields[0], place)
            start = end + 1

    def _add(self, piece: _Slice, name: str, kind: bytes, place: Place) -> _Call:
        call = self._calls.get(name)
        if call is None:
            call = self._calls[name] = _Call()
        if kind == SPAN:
            call.span = place
        elif call.events:
            call.events.append(place)
        else:
            call.events = [place]
        if call.span is not None and call.events:
            call.matched = True
        piece.names.append(name)
        return call

    def _read(self, place: Place) -> Any:
        """The JSON document at `place`, or None (its file expired, or it is damaged)."""
        piece = self._slices.get(place[0])
        if piece is None:
            return None
        try:
            return orjson.loads(os.pread(piece.fd, place[2], place[1]))
        except (OSError, ValueError) as error:  # orjson.JSONDecodeError is a ValueError
            log.warning("cannot read a join half of %s: %s", self._path(place[0]), error)
            return None

    def _events_of(self, call: _Call) -> tuple[list[dict[str, Any]], int]:
        """Every event of the call received so far (each once), and when the last of them came."""
        merged: dict[bytes, dict[str, Any]] = {}
        for place in call.events:
            for event in self._read(place) or ():
                if isinstance(event, dict):
                    merged.setdefault(_event_identity(event), event)
        return list(merged.values()), max(place[3] for place in call.events)

    # --- writing ------------------------------------------------------------------------------------------

    async def _append(self, data: bytes, now_ns: int) -> tuple[_Slice, int]:
        """Append `data` (whole lines) to the current slice's file; (the file, the offset it starts
        at). Call with the store locked, caught up. A large append is written in a thread, so that
        it never holds the loop (meanwhile this process's own lock-free reads leave the file be)."""
        piece = self._slice(self._slice_of(now_ns), create=True)
        size = os.fstat(piece.fd).st_size
        if size > piece.read_to:  # a line torn by a crash: end it, so that it stays one bad line
            write_all(piece.fd, [b"\n"])
            size += 1
            self.used_bytes += size - piece.read_to
            piece.read_to = size
        if len(data) <= THREAD_WRITE_BYTES:
            write_all(piece.fd, [data])
            return piece, size
        piece.appending = True
        try:
            await asyncio.to_thread(write_all, piece.fd, [data])
        finally:
            piece.appending = False
        return piece, size

    async def _write_lines(self, kind: bytes, entries: list[tuple[str, list[bytes]]],
                           now_ns: int) -> tuple[_Slice, int]:
        """Append one line per (name, JSON pieces) and index them; returns the file and the
        append's number in it, for `_durable`."""
        stamp = str(now_ns).encode()
        parts, places = [], []
        for name, pieces in entries:
            head = b"%b %b %b " % (kind, name.encode("ascii"), stamp)
            length = sum(map(len, pieces))
            places.append((name, len(head), length))
            parts += (head, *pieces, b"\n")
        piece, offset = await self._append(b"".join(parts), now_ns)
        for name, head, length in places:
            self._add(piece, name, kind, (piece.number, offset + head, length, now_ns))
            offset += head + length + 1
        self.used_bytes += offset - piece.read_to
        piece.read_to = offset
        piece.appended += 1
        return piece, piece.appended

    async def _durable(self, piece: _Slice, append: int) -> None:
        """Return once an fdatasync (in a thread) covers append number `append` of `piece`: one
        fdatasync for every append made before it started (group commit, as the spool's), so that
        exports side by side share them."""
        while piece.synced < append:
            if piece.syncing is None:
                piece.syncing = asyncio.ensure_future(self._sync(piece))
            await asyncio.shield(piece.syncing)

    async def _sync(self, piece: _Slice) -> None:
        covered = piece.appended
        try:
            if piece.created:  # a file this process may have made: its name must survive a crash too
                await asyncio.to_thread(fsync_directory, self.directory)
                piece.created = False
            await asyncio.to_thread(os.fdatasync, piece.fd)
        finally:
            piece.syncing = None
        piece.synced = max(piece.synced, covered)

    def _room(self) -> bool:
        if self.used_bytes < self.max_bytes:
            return True
        if not self._full_warned:
            log.warning("the join store holds %d bytes (--join-max-bytes %d): records stored now cannot be "
                        "completed by GenAI events that arrive later", self.used_bytes, self.max_bytes)
            self._full_warned = True
        return False

    @staticmethod
    def name(key_name: str | None, pair: str) -> str:
        """The store's name of a call (trace id + span id) sent by a key."""
        return f"{_owner(key_name)}-{pair}"

    # --- the two arrivals ----------------------------------------------------------------------------------

    async def put_spans(self, key_name: str | None, bucket: str | None,
                        halves: list[SpanHalf]) -> dict[int, tuple[list[dict[str, Any]], int]]:
        """Keep the span halves; for those whose events are here already, the events and when the
        last of them came (by the half's object index), so that the caller stores the completed
        record at once."""
        if not halves or not self._room():
            return {}
        found = {}
        owner = _owner(key_name)
        head = b'{"bucket":' + orjson.dumps(bucket)
        async with self._locked():
            now_ns = time.time_ns()  # under the lock: its slice is one `_catch_up` reads
            self._catch_up()
            for start in range(0, len(halves), HALVES_AT_ONCE):
                if start:
                    await asyncio.sleep(0)  # a large export lets the loop serve others between parts
                entries = []
                for half in halves[start:start + HALVES_AT_ONCE]:
                    name = f"{owner}-{half.pair}"
                    entries.append((name, [head, b',"key":', orjson.dumps(half.key), b',"record":', half.document,
                                           b"}"]))
                    call = self._calls.get(name)
                    if call is not None and call.events:
                        found[half.index] = self._events_of(call)
                written = await self._write_lines(SPAN, entries, now_ns)
        await self._durable(*written)  # the last part's: an fdatasync covers every part before it
        return found

    async def put_events(self, key_name: str | None, events: dict[str, list[dict[str, Any]]]
                         ) -> list[tuple[str, dict[str, Any], list[dict[str, Any]], int]]:
        """Keep the events (those not received before); for each span whose half is here, (the
        call's name, that half, every event of its span so far, when the last of them came).
        Raises JoinFull."""
        if not events:
            return []
        if self.used_bytes >= self.max_bytes:
            raise JoinFull(f"the join store holds {self.used_bytes} bytes (--join-max-bytes {self.max_bytes})")
        completed = []
        owner = _owner(key_name)
        written = None
        async with self._locked():
            now_ns = time.time_ns()
            self._catch_up()
            pairs = list(events.items())
            waiting = []
            for start in range(0, len(pairs), HALVES_AT_ONCE):
                if start:
                    await asyncio.sleep(0)  # a large export lets the loop serve others between parts
                entries = []
                for pair, new_events in pairs[start:start + HALVES_AT_ONCE]:
                    name = f"{owner}-{pair}"
                    call = self._calls.get(name)
                    known = {_event_identity(event) for place in call.events for event in self._read(place) or ()
                             if isinstance(event, dict)} if call is not None else set()
                    fresh = {identity: event for event in new_events
                             if (identity := _event_identity(event)) not in known}
                    if fresh:
                        entries.append((name, [orjson.dumps(list(fresh.values()))]))
                    waiting.append(name)
                if entries:
                    written = await self._write_lines(EVENTS, entries, now_ns)
            for name in waiting:
                call = self._calls.get(name)
                if call is None or call.span is None or not call.events:
                    continue
                half = self._read(call.span)
                if half is not None:
                    all_events, completed_at = self._events_of(call)
                    completed.append((name, half, all_events, completed_at))
        if written is not None:
            await self._durable(*written)
        return completed

    def latest(self, name: str) -> tuple[dict[str, Any], list[dict[str, Any]], int] | None:
        """(the stored record's half, every event so far, when the last came) of a call, when both
        are here: what its object must hold now, whichever process received which half. Takes no
        `flock` (lines are read up to the last complete one): uploaders ask it before and after
        every put of a record awaiting events."""
        self._catch_up()
        call = self._calls.get(name)
        if call is None or call.span is None or not call.events:
            return None
        half = self._read(call.span)
        if half is None:
            return None
        events, completed_at = self._events_of(call)
        return half, events, completed_at

    # --- expiry ---------------------------------------------------------------------------------------------

    def expire_if_due(self) -> int:
        """`expire`, at most every tenth of the window."""
        now = time.time()
        if now - self._expired_at < min(EXPIRE_EVERY_MAX_SECONDS, self.window_seconds / 10):
            return 0
        return self.expire(now)

    def expire(self, now: float | None = None) -> int:
        """Delete the files whose halves are all older than the window (and its grace), and forget
        their halves; recount the bytes held. Returns how many calls' events are deleted without
        having met their span."""
        now = time.time() if now is None else now
        self._expired_at = now
        last_expired = int((now - self.window_seconds - min(GRACE_SECONDS, self.window_seconds))
                           // self.slice_seconds) - 1
        unmatched = 0
        try:
            listed = [number for entry in os.scandir(self.directory)
                      if (number := self._slice_number(entry.name)) is not None]
        except FileNotFoundError:
            listed = []
        except OSError as error:
            log.warning("cannot list the join store %s: %s", self.directory, error)
            return 0
        for number in sorted(set(listed) | set(self._slices)):
            if number > last_expired:
                continue
            _remove(self._path(number))
            piece = self._slices.pop(number, None)
            if piece is None:
                continue
            os.close(piece.fd)
            for name in piece.names:
                unmatched += self._forget(name, number)
        self.used_bytes = sum(os.fstat(piece.fd).st_size for piece in self._slices.values())
        if self.used_bytes < self.max_bytes:
            self._full_warned = False
        self.expired_events += unmatched
        return unmatched

    def _forget(self, name: str, number: int) -> int:
        """Forget the call's halves in slice `number`; 1 when that leaves events that never met
        their span, gone."""
        call = self._calls.get(name)
        if call is None:
            return 0
        had_events = bool(call.events)
        if call.span is not None and call.span[0] == number:
            call.span = None
        call.events = [place for place in call.events if place[0] != number]
        if call.span is None and not call.events:
            del self._calls[name]
            return 1 if had_events and not call.matched else 0
        return 0


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, IsADirectoryError):
        pass
