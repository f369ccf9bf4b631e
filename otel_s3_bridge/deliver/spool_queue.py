"""The spool's live queue: spooled entries waiting for the sink, in memory, oldest first.

An entry whose upload failed waits out its own backoff (`retry_later`) while the others go
ahead, so one bad entry never holds an uploader. Bodies of recent entries stay in memory up to a
byte budget; the rest are read back from their segment when their turn comes. When one object is
spooled again (a record completed by its GenAI events), only its newest entry (the latest spool
time) is uploaded: an older one that comes up later is `superseded`, also once the newer one is
done (the newest version of each object seen this run is remembered, queued, done or replayed,
for the last `VERSIONS_REMEMBERED` objects), and `forget` of an entry hands back the older entries
of its object, for the spool to mark done: a retried stale body never overwrites the completed one,
before or after a restart. Must not touch files or the sink: `spool` owns the files, `uploader`
the sink.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VERSIONS_REMEMBERED = 100_000  # objects whose newest spool time is remembered (~15 MB)


@dataclass(slots=True, eq=False, init=False)
class Ref:
    """One spooled entry waiting for the sink. (`__init__` written out: compiled by mypyc, a
    dataclass's generated one stays interpreted, ~5 k instructions a spooled record.)"""

    segment: Any  # the spool's Segment holding it
    offset: int
    length: int
    key: str
    bucket: str | None
    body: bytes | None  # None: read back from the segment file when it is its turn
    enqueued_unix_nano: int
    attempts: int  # failed upload attempts so far
    join: str | None  # the join store's name of the call whose record this is (this run only)
    partition: str | None  # its lake partition, when it goes into a `batch` file
    trace_object: bool  # written as its own `trace` layout object
    controls: bytes  # its objects' encoded ObjectControls; empty: the bridge's own settings
    finished: bool  # uploaded, quarantined or superseded

    def __init__(self, segment: Any, offset: int, length: int, key: str, bucket: str | None, body: bytes | None,
                 enqueued_unix_nano: int, attempts: int = 0, join: str | None = None, partition: str | None = None,
                 trace_object: bool = True, controls: bytes = b"", finished: bool = False) -> None:
        self.segment, self.offset, self.length, self.key, self.bucket = segment, offset, length, key, bucket
        self.body, self.enqueued_unix_nano, self.attempts, self.join = body, enqueued_unix_nano, attempts, join
        self.partition, self.trace_object, self.controls, self.finished = partition, trace_object, controls, finished


class UploadQueue:
    def __init__(self, body_cache_bytes: int) -> None:
        self._ready: collections.deque[Ref] = collections.deque()
        self._delayed: list[tuple[float, int, Ref]] = []  # (due, tie-breaker, entry): a heap
        self._order = itertools.count()
        # Uploaders waiting in `next`, first come first woken: one is woken per entry made ready (an
        # event woke all 16 on each append, and all but one went back to sleep).
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._body_cache_limit = body_cache_bytes
        self.cached_bytes = 0
        self._newest: dict[tuple[str | None, str], Ref] = {}  # (bucket, key) -> its newest unfinished entry
        self._older: dict[tuple[str | None, str], list[Ref]] = {}  # its other unfinished entries
        # (bucket, key) -> the latest spool time of an entry of it seen this run, least recent first
        self._versions: collections.OrderedDict[tuple[str | None, str], int] = collections.OrderedDict()
        self._arrival: collections.deque[Ref] = collections.deque()  # every entry, first put first
        self._unfinished = 0
        self._batch_only: Callable[[list[Ref]], None] | None = None  # see `hand_batch_only_to`

    def __len__(self) -> int:
        return len(self._ready) + len(self._delayed)

    def put(self, ref: Ref) -> None:
        if self._enqueue(ref):
            self._wake(1)
        elif self._batch_only is not None:
            self._batch_only([ref])

    def hand_batch_only_to(self, take: Callable[[list[Ref]], None]) -> None:
        """From now on, entries that go into `batch` files only are handed to `take` (the batch
        writer) as they are queued, those waiting now at once: no uploader has anything to do
        with them (through the uploaders' loop ~3 µs a record here, handed over ~0.5)."""
        self._batch_only = take
        waiting = self.take(lambda ref: not ref.trace_object)
        if waiting:
            take(waiting)

    def put_written(self, segment: Any, start: int, items: list[tuple[str, bytes, str | None]], lengths: list[int],
                    enqueued_unix_nano: int, joins: list[str | None] | None, partitions: list[str | None] | None,
                    trace_objects: bool, controls: list[bytes] | None) -> None:
        """The entries of one append, written in order from `start` of `segment` (the per-record
        loop of every export: here, compiled, rather than in the spool)."""
        offset = start
        batch_only: list[Ref] = []
        for index, (key, body, bucket) in enumerate(items):
            partition = partitions[index] if partitions else None
            # Ref's fields in order, none by keyword: keywords into a compiled class's __init__
            # cost ~5 k instructions a record. 0: no upload attempted yet.
            ref = Ref(segment, offset, lengths[index], key, bucket, body, enqueued_unix_nano, 0,
                      joins[index] if joins else None, partition, trace_objects or partition is None,
                      controls[index] if controls else b"")
            if not self._enqueue(ref):
                batch_only.append(ref)
            offset += lengths[index]
        self._wake(len(items) - len(batch_only))
        if batch_only and self._batch_only is not None:
            self._batch_only(batch_only)

    def _enqueue(self, ref: Ref) -> bool:
        """Count the entry in; False when it is not for the uploaders (handed to `_batch_only`)."""
        place = (ref.bucket, ref.key)
        newest = self._newest.get(place)
        if newest is None or ref.enqueued_unix_nano >= newest.enqueued_unix_nano:
            if newest is not None:
                self._older.setdefault(place, []).append(newest)
            self._newest[place] = ref
        else:  # an older body put later (a quarantined one sent back by `spool retry`)
            self._older.setdefault(place, []).append(ref)
        self.remember(ref.bucket, ref.key, ref.enqueued_unix_nano)
        self._arrival.append(ref)
        self._unfinished += 1
        if ref.body is not None:
            if self.cached_bytes + len(ref.body) > self._body_cache_limit:
                ref.body = None
            else:
                self.cached_bytes += len(ref.body)
        if self._batch_only is not None and not ref.trace_object:
            return False
        self._ready.append(ref)
        return True

    def retry_later(self, ref: Ref, delay_seconds: float) -> None:
        due = asyncio.get_running_loop().time() + delay_seconds
        heapq.heappush(self._delayed, (due, next(self._order), ref))
        self._wake(1)  # to wait until its time, if that comes first

    def remember(self, bucket: str | None, key: str, enqueued_unix_nano: int) -> None:
        """An entry of the object was spooled at that time (queued now, or done: a replayed entry
        the sink already has counts as much as one still waiting)."""
        place = (bucket, key)
        if self._versions.get(place, -1) < enqueued_unix_nano:
            self._versions[place] = enqueued_unix_nano
        self._versions.move_to_end(place)
        if len(self._versions) > VERSIONS_REMEMBERED:
            self._versions.popitem(last=False)

    def superseded(self, ref: Ref) -> bool:
        """A newer entry of the same object is queued, or was spooled (and perhaps uploaded)
        already: this one must not be uploaded."""
        place = (ref.bucket, ref.key)
        newest = self._newest.get(place)
        if newest is not None and newest is not ref:
            return True
        return self._versions.get(place, ref.enqueued_unix_nano) > ref.enqueued_unix_nano

    def forget(self, ref: Ref) -> list[Ref]:
        """The entry is done: let go of its body and of it. Returns the older entries of its
        object still waiting: superseded by it, to be marked done too."""
        self.forget_body(ref)
        ref.finished = True
        self._unfinished -= 1
        if len(self._arrival) > 2 * self._unfinished + 1024:  # finished ones behind a stuck first one
            self._arrival = collections.deque(other for other in self._arrival if not other.finished)
        place = (ref.bucket, ref.key)
        if self._newest.get(place) is not ref:
            others = self._older.get(place)
            if others is not None:
                others[:] = [other for other in others if other is not ref]
                if not others:
                    del self._older[place]
            return []
        del self._newest[place]
        return [other for other in self._older.pop(place, ()) if not other.finished]

    def finish(self, refs: list[Ref]) -> tuple[dict[Any, list[int]], int, int]:
        """`forget` each entry not finished yet, and the older entries of its object it hands back:
        the offsets finished now by segment, how many and their bytes (for the spool's marks; a
        batch file's members are thousands, so the loop is here, compiled)."""
        finished: list[Ref] = []
        for ref in refs:
            if ref.finished:
                continue
            older = self.forget(ref)
            finished.append(ref)
            for one in older:  # none of them is the newest of its object: forgetting it hands back nothing
                self.forget(one)
                finished.append(one)
        marks: dict[Any, list[int]] = {}
        size = 0
        for one in finished:
            offsets = marks.get(one.segment)
            if offsets is None:
                offsets = marks[one.segment] = []
            offsets.append(one.offset)
            size += one.length
        return marks, len(finished), size

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
        self._wake(len(self._waiting))

    def _wake(self, count: int) -> None:
        while count > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def ready_now(self) -> Ref | None:
        """The oldest entry, if one is ready and none waits out a backoff (else None: `next`).
        No coroutine and no clock read: taken once per spooled record."""
        return self._ready.popleft() if self._ready and not self._delayed else None

    async def next(self) -> Ref:
        """The oldest entry that may be tried now (waits for one)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._delayed and self._delayed[0][0] <= now:
                self._ready.append(heapq.heappop(self._delayed)[2])
            if self._ready:
                return self._ready.popleft()
            timeout = self._delayed[0][0] - now if self._delayed else None
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)  # woken, then stopped: the entry it was woken for goes to another
                raise
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
