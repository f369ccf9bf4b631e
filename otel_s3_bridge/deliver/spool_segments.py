"""The spool's segment files on disk: a segment's bookkeeping (`Segment`: entries, uploads done,
sealed), making a new one durably (`SegmentFiles`, a seam tests can hold or fail), and finding,
reading and counting segment files in a directory, for `spool` to adopt and replay.

Must not decide what is uploaded or deleted: that is `spool`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_directory, write_all
from .spool_format import DONE_RECORD, SEGMENT_SUFFIX, done_path, read_done, read_entries


class SegmentFiles:
    """The file operations that make a new segment; a seam, so that tests can hold or fail them."""

    def create(self, path: Path) -> int:
        """Create `path` exclusively, make its name durable, return a descriptor for appending."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            fsync_directory(path.parent)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return fd


@dataclass(eq=False)
class Segment:
    path: Path
    size: int = 0
    entries: int = 0
    done: int = 0
    sealed: bool = False
    read_fd: int | None = None
    done_fd: int | None = None
    marks_lost: bool = False  # a done mark could not be written: a replay would upload those entries again

    @property
    def finished(self) -> bool:
        return self.sealed and self.done == self.entries

    def record_done(self, offsets: list[int]) -> None:
        """Append the entries' marks (one write). None after a failed one: a torn mark would shift
        every later one."""
        if self.marks_lost:
            return
        try:
            if self.done_fd is None:
                self.done_fd = os.open(done_path(self.path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            write_all(self.done_fd, [b"".join(map(DONE_RECORD.pack, offsets))])
        except OSError:  # e.g. a full disk: for an object, the mark only saves a re-upload after a restart;
            self.marks_lost = True  # for a batch file's member, `done_durably` must say it is not on disk

    def close_files(self) -> None:
        for fd in (self.read_fd, self.done_fd):
            if fd is not None:
                os.close(fd)
        self.read_fd = self.done_fd = None


def sync_and_close(descriptors: list[int]) -> None:
    try:
        for fd in descriptors:
            os.fdatasync(fd)
    finally:
        for fd in descriptors:
            os.close(fd)


def link_durably(source: Path, target: Path) -> None:
    if not target.exists():
        os.link(source, target)
        fsync_directory(target.parent)


def directory_stamps(*directories: Path) -> tuple:
    """What changes when a file comes into or leaves a directory (and its mtime's coarse clock
    may hide, hence the periodic look whatever they say)."""
    stamps = []
    for directory in directories:
        try:
            stat = os.stat(directory)
            stamps.append((stat.st_mtime_ns, stat.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def read_new_segments(directory: Path, known: set[Path]) -> list[tuple[Path, int, list, str | None, set[int]]]:
    """(path, size, entries, problem, uploaded offsets) of each segment file not in `known`; a file
    that cannot be read is (path, 0, [], the error, set()). One that vanishes meanwhile (`spool
    retry` moving it) is left for the next look."""
    found = []
    for path in segment_files(directory):
        if path in known:
            continue
        try:
            data = path.read_bytes()
            uploaded = read_done(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            found.append((path, 0, [], error.strerror or str(error), set()))
            continue
        entries, _, problem = read_entries(data)
        found.append((path, len(data), entries, problem, uploaded))
    return found


def count_quarantine(directory: Path) -> tuple[int, int]:
    """(bytes, files) in the quarantine."""
    size = files = 0
    for path in segment_files(directory):
        try:
            size += path.stat().st_size
        except FileNotFoundError:  # `spool retry` moved it meanwhile
            continue
        files += 1
    return size, files


def segment_files(directory: Path) -> list[Path]:
    try:
        return sorted(Path(entry.path) for entry in os.scandir(directory) if entry.name.endswith(SEGMENT_SUFFIX))
    except FileNotFoundError:
        return []
