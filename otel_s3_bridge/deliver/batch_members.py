"""A batch file's members, one pass each over thousands of them (compiled with the spool's queue,
`compiled.CORE_MODULES`; interpreted, a flush's passes cost its event loop ~2 µs a member): which
members a newer entry of their object supersedes, what the file's build reads for each, and the
identities its key and manifest are made of. Must not touch files, the sink or the spool's marks.
"""

from __future__ import annotations

from typing import Any

from .spool_queue import Ref, UploadQueue


def superseded(queue: UploadQueue, refs: list[Ref]) -> list[Ref]:
    """The members not finished yet that a newer entry of their object supersedes."""
    return [ref for ref in refs if not ref.finished and queue.superseded(ref)]


def unfinished(refs: list[Ref]) -> list[Ref]:
    return [ref for ref in refs if not ref.finished]


def sources(refs: list[Ref]) -> tuple[list[tuple[Any, int, int, bytes | None]], list[int]]:
    """What the build reads for each member (its segment's path, offset and length, and its body
    when the spool's memory holds it), and the positions of the members a join completes."""
    read: list[tuple[Any, int, int, bytes | None]] = []
    joined: list[int] = []
    for index, ref in enumerate(refs):
        read.append((ref.segment.path, ref.offset, ref.length, ref.body))
        if ref.join is not None:
            joined.append(index)
    return read, joined


def forget_bodies(queue: UploadQueue, refs: list[Ref]) -> None:
    """The members are read: the spool's memory goes to newer entries."""
    for ref in refs:
        queue.forget_body(ref)


def identities(refs: list[Ref]) -> list[str]:
    """Each member as its object's key and spool time, which the file's key digests."""
    return [f"{ref.key}@{ref.enqueued_unix_nano}" for ref in refs]


def manifest_members(refs: list[Ref]) -> list[list[Any]]:
    """Each member as its manifest lists it: [key, spool time]."""
    return [[ref.key, ref.enqueued_unix_nano] for ref in refs]
