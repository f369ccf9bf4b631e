"""Durable file writes: a whole file or nothing, on disk before the function returns.

`write_atomically` is the one temp-file + fsync + rename + directory-fsync sequence the local
sink and the spool's quarantine share; `write_all` writes many pieces with few `writev` calls
(the spool's entries, the join store's batches). Blocking; callers on the event loop run it in a
thread. Must not know what the bytes are.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

IOV_BATCH = 512  # buffers per writev call (the system allows at least 1024)


def write_all(fd: int, pieces: list[bytes]) -> None:
    """Write every piece, in order, with as few system calls as the system allows."""
    views: list[bytes | memoryview] = [piece for piece in pieces if piece]
    index = 0
    while index < len(views):
        batch = views[index:index + IOV_BATCH]
        written = os.writev(fd, batch)
        if written == sum(map(len, batch)):  # all of it, as a file's writev almost always is: no walk
            index += len(batch)
            continue
        while written >= len(views[index]):  # a short write: on from where it stopped
            written -= len(views[index])
            index += 1
        if written:
            views[index] = memoryview(views[index])[written:]  # (no copy of the rest)


def fsync_directory(path: Path) -> None:
    """Make the names in `path` (a new or renamed file) survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` once this returns, also after a crash; never a part of it. Raises OSError."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
