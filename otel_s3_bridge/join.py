"""The join store: the two halves of one LLM call that arrive apart, kept on disk until they meet.

OpenTelemetry's GenAI instrumentation sends a call's span (model, usage) over OTLP traces and its
prompt and completion as GenAI event records over OTLP logs, in separate exports, in either order,
possibly to different `--workers` processes. Both halves are kept here, in `--join-dir` (by
default the spool directory's `join/`, shared by the workers):

  batch-{time}-{pid}-{random}.jsonl   what one export brought, one JSON document per call:
                                      a stored record still without prompt and completion (its
                                      object key, bucket and body), or the GenAI events of a span
  {owner}-{trace id}{span id}.span    a symbolic link naming where (`batch:offset:length`) that
  {owner}-{trace id}{span id}.events  call's record, or its events so far, are

`owner` is a digest of the key name that sent them: a key can only complete its own records.
`latest` tells an uploader what a record's object must hold now, whichever process received
which half.
Whichever half arrives second finds the first, and the caller stores the completed record under
the record's own key (an overwrite). An export's halves cost one file write and one fsync, plus a
link per call and one directory fsync, all before the export is acknowledged. The halves wait
`--join-window-seconds`, so that events arriving in several exports all join; then they are
deleted (events that never met their span are counted: they belonged to no LLM call the bridge
stored). Keeping a half and looking for the other is done under an exclusive `flock` on the
directory, so two processes cannot both miss each other. Bytes on disk are bounded by `--join-max-bytes`. Blocking
file I/O: call from a thread. Must not decode, encode or upload.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from .durable import write_all
from .prepare import SpanHalf

log = logging.getLogger("otel_s3_bridge.join")

SPAN_SUFFIX, EVENTS_SUFFIX, BATCH_PREFIX = ".span", ".events", "batch-"
EXPIRE_EVERY_MAX_SECONDS = 30.0
# A batch file outlives the links made with it by this much, so that a link read just before it
# expires still finds its batch.
BATCH_GRACE_SECONDS = 60.0


class JoinFull(Exception):
    """The store holds `--join-max-bytes` already; it empties as halves expire."""


def _owner(key_name: str | None) -> str:
    return hashlib.sha256((key_name or "").encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _event_identity(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


class JoinStore:
    def __init__(self, directory: str | Path, *, window_seconds: float, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.window_seconds = window_seconds
        self.max_bytes = max_bytes
        self.used_bytes = 0  # as of the last `expire` scan, plus what this process wrote since
        self.expired_events = 0  # spans whose events never met their span (since start)
        self._full_warned = False
        self._expired_at = 0.0
        self._path_prefix = f"{self.directory}{os.sep}"

    def open(self) -> None:
        """Count what an earlier run left (the directory is made when a first half is kept)."""
        if self.directory.is_dir():
            self.expire()

    @contextmanager
    def _opened(self, *, locked: bool = True):
        """A descriptor of the directory (every file operation is relative to it: no path walks),
        holding the store's exclusive `flock` unless `locked` is False."""
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # and with it the lock

    # --- halves: batch files and the links to them ------------------------------------------------------

    def _write_batch(self, directory: int, documents: list[list[bytes]]) -> list[str]:
        """One batch file holding `documents` (each given as its pieces, written as they are: no
        copy of a record body is made), fsynced; the link target of each."""
        name = f"{BATCH_PREFIX}{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        targets, offset = [], 0
        for pieces in documents:
            length = sum(len(piece) for piece in pieces)
            targets.append(f"{name}:{offset}:{length}")
            offset += length + 1
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=directory)
        try:
            write_all(fd, [piece for pieces in documents for piece in (*pieces, b"\n")])
            os.fsync(fd)
        finally:
            os.close(fd)
        self.used_bytes += offset
        return targets

    @staticmethod
    def name(key_name: str | None, pair: str) -> str:
        """The store's name of a call (trace id + span id) sent by a key."""
        return f"{_owner(key_name)}-{pair}"

    @staticmethod
    def _link(directory: int, link: str, target: str) -> None:
        try:
            os.symlink(target, link, dir_fd=directory)
        except FileExistsError:  # replaced atomically: a reader without the lock sees the old or the new
            temporary = f".{link}.{uuid.uuid4().hex[:8]}"
            os.symlink(target, temporary, dir_fd=directory)
            os.replace(temporary, link, src_dir_fd=directory, dst_dir_fd=directory)

    @staticmethod
    def _read(directory: int, link: str) -> Any:
        """The document a link names, or None (no link, its batch expired, or damaged)."""
        try:
            batch, offset, length = os.readlink(link, dir_fd=directory).rsplit(":", 2)
            fd = os.open(os.path.basename(batch), os.O_RDONLY, dir_fd=directory)
            try:
                data = os.pread(fd, int(length), int(offset))
            finally:
                os.close(fd)
            return orjson.loads(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:  # orjson.JSONDecodeError is a ValueError
            log.warning("cannot read the join half %s: %s", link, error)
            return None

    def _room(self) -> bool:
        if self.used_bytes < self.max_bytes:
            return True
        if not self._full_warned:
            log.warning("the join store holds %d bytes (--join-max-bytes %d): records stored now cannot be "
                        "completed by GenAI events that arrive later", self.used_bytes, self.max_bytes)
            self._full_warned = True
        return False

    # --- the two arrivals ----------------------------------------------------------------------------------

    def put_spans(self, key_name: str | None, bucket: str | None,
                  halves: list[SpanHalf]) -> dict[int, list[dict[str, Any]]]:
        """Keep the span halves; for those whose events are here already, the events (by the
        half's object index), so that the caller stores the completed record at once."""
        if not halves or not self._room():
            return {}
        found = {}
        owner = _owner(key_name)
        head = b'{"bucket":' + orjson.dumps(bucket)
        documents = [[head, b',"key":', orjson.dumps(half.key), b',"record":', half.document, b"}"] for half in halves]
        with self._opened() as directory:
            targets = self._write_batch(directory, documents)
            for half, target in zip(halves, targets):
                self._link(directory, f"{owner}-{half.pair}{SPAN_SUFFIX}", target)
                events = self._read(directory, f"{owner}-{half.pair}{EVENTS_SUFFIX}")
                if events is not None:
                    found[half.index] = events
            os.fsync(directory)
        return found

    def put_events(self, key_name: str | None, events: dict[str, list[dict[str, Any]]]
                   ) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
        """Keep the events (merged with those of the same span received before); for each span whose
        half is here, (the call's name, that half, every event of its span so far). Raises JoinFull."""
        if not events:
            return []
        if self.used_bytes >= self.max_bytes:
            raise JoinFull(f"the join store holds {self.used_bytes} bytes (--join-max-bytes {self.max_bytes})")
        completed = []
        owner = _owner(key_name)
        with self._opened() as directory:
            changed: list[tuple[str, list[dict[str, Any]]]] = []
            for pair, new_events in events.items():
                name = f"{owner}-{pair}"
                known = self._read(directory, name + EVENTS_SUFFIX) or []
                merged = {_event_identity(event): event for event in known}
                merged.update((_event_identity(event), event) for event in new_events)
                all_events = list(merged.values())
                if len(merged) != len(known) or not known:
                    changed.append((name, all_events))
                half = self._read(directory, name + SPAN_SUFFIX)
                if half is not None:
                    completed.append((name, half, all_events))
            if changed:
                targets = self._write_batch(directory, [[orjson.dumps(all_events)] for _, all_events in changed])
                for (name, _), target in zip(changed, targets):
                    self._link(directory, name + EVENTS_SUFFIX, target)
                os.fsync(directory)
        return completed

    def latest(self, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(the stored record's half, every event so far) of a call, when both are here: what its
        object must hold now, whichever process received which half. Takes no lock (links are
        replaced atomically) and costs one system call when the call has no events: uploaders ask
        it before and after every put of a record awaiting events."""
        if not os.path.lexists(f"{self._path_prefix}{name}{EVENTS_SUFFIX}"):
            return None
        with self._opened(locked=False) as directory:
            events = self._read(directory, name + EVENTS_SUFFIX)
            half = self._read(directory, name + SPAN_SUFFIX) if events is not None else None
        return (half, events) if half is not None else None

    # --- expiry ---------------------------------------------------------------------------------------------

    def expire_if_due(self) -> int:
        """`expire`, at most every tenth of the window (a scan lists every link held)."""
        now = time.time()
        if now - self._expired_at < min(EXPIRE_EVERY_MAX_SECONDS, self.window_seconds / 10):
            return 0
        return self.expire(now)

    def expire(self, now: float | None = None) -> int:
        """Delete links older than the window and batch files no link can name any more; recount the
        bytes held. Returns how many spans' events are deleted without having met their span."""
        now = time.time() if now is None else now
        self._expired_at = now
        held, unmatched = 0, 0
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        except OSError as error:
            log.warning("cannot list the join store %s: %s", self.directory, error)
            return 0
        names = {entry.name for entry in entries}
        with self._opened():
            for entry in entries:
                try:
                    stat = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                age = now - stat.st_mtime
                if entry.name.startswith(BATCH_PREFIX):
                    if age < self.window_seconds + min(BATCH_GRACE_SECONDS, self.window_seconds):
                        held += stat.st_size
                        continue
                elif not entry.name.endswith((SPAN_SUFFIX, EVENTS_SUFFIX)) and not entry.name.startswith("."):
                    continue
                elif age < self.window_seconds:
                    continue
                elif (entry.name.endswith(EVENTS_SUFFIX)
                      and entry.name[:-len(EVENTS_SUFFIX)] + SPAN_SUFFIX not in names):
                    unmatched += 1
                try:
                    os.unlink(entry.path)
                except OSError:
                    held += stat.st_size
        self.used_bytes = held
        if held < self.max_bytes:
            self._full_warned = False
        self.expired_events += unmatched
        return unmatched
