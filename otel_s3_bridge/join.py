"""The join store: the two halves of one LLM call that arrive apart, kept on disk until they meet.

OpenTelemetry's GenAI instrumentation sends a call's span (model, usage) over OTLP traces and its
prompt and completion as GenAI event records over OTLP logs, in separate exports, in either order,
possibly to different `--workers` processes. Both halves are kept here, under the spool's parent
directory (shared by the workers):

  join/{owner}-{trace id}{span id}.span    a stored record still without prompt and completion:
                                           its object key, bucket and body
  join/{owner}-{trace id}{span id}.events  the GenAI events received so far for that span

`owner` is a digest of the key name that sent them: a key can only complete its own records.
Whichever half arrives second finds the first, and the caller stores the completed record under
the record's own key (an overwrite). Both halves are written atomically and fsynced before the
export that brought them is acknowledged, and are kept for `--join-window-seconds` so that
events arriving in several exports all join; then they are deleted (events that never met their
span are counted: they belonged to no LLM call the bridge stored). The check-and-write of a pair
is done under an exclusive `flock` on `join/.lock`, so two processes cannot both miss each other.
Bytes on disk are bounded by `--join-max-bytes`. Blocking file I/O: call from a thread. Must not
decode, encode or upload.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from .durable import fsync_directory, write_atomically
from .prepare import SpanHalf

log = logging.getLogger("otel_s3_bridge.join")

SPAN_SUFFIX, EVENTS_SUFFIX = ".span", ".events"
EXPIRE_EVERY_MAX_SECONDS = 30.0


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
        self.expired_events = 0  # event records that never met their span (since start)
        self._full_warned = False
        self._expired_at = 0.0

    def open(self) -> None:
        """Count what an earlier run left (the directory is made when a first half is kept)."""
        if self.directory.is_dir():
            self.expire()

    @contextmanager
    def _locked(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _path(self, owner: str, pair: str, suffix: str) -> Path:
        return self.directory / f"{owner}-{pair}{suffix}"

    def _write(self, path: Path, data: bytes) -> None:
        write_atomically(path, data, sync_directory=False)
        self.used_bytes += len(data)

    def put_spans(self, key_name: str | None, bucket: str | None,
                  halves: list[SpanHalf]) -> dict[int, list[dict[str, Any]]]:
        """Keep the span halves; for those whose events are here already, the events (by the
        half's object index), so that the caller stores the completed record at once."""
        if not halves:
            return {}
        if self.used_bytes >= self.max_bytes:
            if not self._full_warned:
                log.warning("the join store holds %d bytes (--join-max-bytes %d): records stored now cannot be "
                            "completed by GenAI events that arrive later", self.used_bytes, self.max_bytes)
                self._full_warned = True
            return {}
        owner, found = _owner(key_name), {}
        with self._locked():
            for half in halves:
                self._write(self._path(owner, half.pair, SPAN_SUFFIX),
                            orjson.dumps({"bucket": bucket, "key": half.key, "record": orjson.Fragment(half.document)}))
                events = self._read(self._path(owner, half.pair, EVENTS_SUFFIX))
                if events is not None:
                    found[half.index] = events
            fsync_directory(self.directory)
        return found

    def put_events(self, key_name: str | None,
                   events: dict[str, list[dict[str, Any]]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Keep the events (merged with those of the same span received before); for each span whose
        half is here, (that half, every event of its span so far). Raises JoinFull."""
        if not events:
            return []
        if self.used_bytes >= self.max_bytes:
            raise JoinFull(f"the join store holds {self.used_bytes} bytes (--join-max-bytes {self.max_bytes})")
        owner, completed = _owner(key_name), []
        with self._locked():
            for pair, new_events in events.items():
                path = self._path(owner, pair, EVENTS_SUFFIX)
                merged = {_event_identity(event): event for event in (self._read(path) or [])}
                before = len(merged)
                merged.update((_event_identity(event), event) for event in new_events)
                if len(merged) != before or before == 0:
                    self._write(path, orjson.dumps(list(merged.values())))
                half = self._read(self._path(owner, pair, SPAN_SUFFIX))
                if half is not None:
                    completed.append((half, list(merged.values())))
            fsync_directory(self.directory)
        return completed

    @staticmethod
    def _read(path: Path) -> Any:
        try:
            return orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as error:  # a damaged half joins nothing
            log.warning("cannot read %s: %s", path.name, error)
            return None

    def expire_if_due(self) -> int:
        """`expire`, at most every tenth of the window (a scan lists every half held)."""
        now = time.time()
        if now - self._expired_at < min(EXPIRE_EVERY_MAX_SECONDS, self.window_seconds / 10):
            return 0
        return self.expire(now)

    def expire(self, now: float | None = None) -> int:
        """Delete halves older than the window; recount the bytes held. Returns event files
        deleted without having met their span."""
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
        for entry in entries:
            if not entry.name.endswith((SPAN_SUFFIX, EVENTS_SUFFIX)):
                continue
            try:
                stat = entry.stat()
            except OSError:
                continue
            if now - stat.st_mtime < self.window_seconds:
                held += stat.st_size
                continue
            if entry.name.endswith(EVENTS_SUFFIX) and entry.name[:-len(EVENTS_SUFFIX)] + SPAN_SUFFIX not in names:
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
