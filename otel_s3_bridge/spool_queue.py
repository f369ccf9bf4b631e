"""The spool's live queue: spooled entries waiting for the sink, in memory, oldest first.

An entry whose upload failed waits out its own backoff (`retry_later`) while the others go
ahead, so one bad entry never holds an uploader. Bodies of recent entries stay in memory up to a
byte budget; the rest are read back from their segment when their turn comes. When one object is
spooled again (a record completed by its GenAI events), only its newest entry is uploaded: an
older one that comes up later is `superseded`, so a retried stale body never overwrites the
completed one. Must not touch
files or the sink: `spool` owns the files, `uploader` the sink.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any


@dataclass(slots=True, eq=False)
class Ref:
    """One spooled entry waiting for the sink."""

    segment: Any  # the spool's Segment holding it
    offset: int
    length: int
    key: str
    bucket: str | None
    body: bytes | None  # None: read back from the segment file when it is its turn
    enqueued_unix_nano: int
    attempts: int = 0  # failed upload attempts so far
    join: str | None = None  # the join store's name of the call whose record this is (this run only)
    partition: str | None = None  # its lake partition, when it goes into a `batch` file
    trace_object: bool = True  # written as its own `trace` layout object
    finished: bool = False  # uploaded, quarantined or superseded


class UploadQueue:
    def __init__(self, body_cache_bytes: int) -> None:
        self._ready: collections.deque[Ref] = collections.deque()
        self._delayed: list[tuple[float, int, Ref]] = []  # (due, tie-breaker, entry): a heap
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._body_cache_limit = body_cache_bytes
        self.cached_bytes = 0
        self._newest: dict[tuple[str | None, str], Ref] = {}  # (bucket, key) -> its newest entry
        self._arrival: collections.deque[Ref] = collections.deque()  # every entry, first put first
        self._unfinished = 0

    def __len__(self) -> int:
        return len(self._ready) + len(self._delayed)

    def put(self, ref: Ref) -> None:
        self._newest[(ref.bucket, ref.key)] = ref
        self._arrival.append(ref)
        self._unfinished += 1
        if ref.body is not None:
            if self.cached_bytes + len(ref.body) > self._body_cache_limit:
                ref.body = None
            else:
                self.cached_bytes += len(ref.body)
        self._ready.append(ref)
        self._changed.set()

    def retry_later(self, ref: Ref, delay_seconds: float) -> None:
        due = asyncio.get_running_loop().time() + delay_seconds
        heapq.heappush(self._delayed, (due, next(self._order), ref))
        self._changed.set()

    def superseded(self, ref: Ref) -> bool:
        """A newer entry for the same object is queued: this one need not be uploaded."""
        return self._newest.get((ref.bucket, ref.key), ref) is not ref

    def forget(self, ref: Ref) -> None:
        """The entry is done: let go of its body and of it."""
        self.forget_body(ref)
        ref.finished = True
        self._unfinished -= 1
        if len(self._arrival) > 2 * self._unfinished + 1024:  # finished ones behind a stuck first one
            self._arrival = collections.deque(other for other in self._arrival if not other.finished)
        if self._newest.get((ref.bucket, ref.key)) is ref:
            del self._newest[(ref.bucket, ref.key)]

    def oldest_enqueued_unix_nano(self) -> int | None:
        """When the first-queued entry not yet finished was spooled (None: nothing waits)."""
        arrival = self._arrival
        while arrival and arrival[0].finished:
            arrival.popleft()
        return arrival[0].enqueued_unix_nano if arrival else None

    def forget_body(self, ref: Ref) -> None:
        if ref.body is not None:
            self.cached_bytes -= len(ref.body)
            ref.body = None

    def take(self, wanted: Callable[[Ref], bool]) -> list[Ref]:
        """Remove and return the entries waiting now that `wanted` picks (at start: a `batch`
        file's members, which go back into that file and nowhere else)."""
        taken = [ref for ref in self._ready if wanted(ref)]
        if taken:
            chosen = set(map(id, taken))
            self._ready = collections.deque(ref for ref in self._ready if id(ref) not in chosen)
        return taken

    def wake(self) -> None:
        """Entries were queued outside `put` (or waiters should look again)."""
        self._changed.set()

    async def next(self) -> Ref:
        """The oldest entry that may be tried now (waits for one)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._delayed and self._delayed[0][0] <= now:
                self._ready.append(heapq.heappop(self._delayed)[2])
            if self._ready:
                return self._ready.popleft()
            self._changed.clear()
            timeout = self._delayed[0][0] - now if self._delayed else None
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
