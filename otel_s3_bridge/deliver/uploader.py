"""Uploader workers: take spooled entries, write them to the sink, then let the spool forget them.

Retryable failures (timeouts, connection errors, 5xx, throttling, expired credentials) send the
entry back to the queue to wait out its own backoff (exponential, full jitter, capped), so one bad
entry never holds a worker; while the sink fails across entries, every worker also waits out a
shared backoff instead of hammering it. Permanent failures (access denied, no such bucket, a key
the store refuses) move the entry to the spool's quarantine; an entry that cannot be read back
from disk is quarantined with its segment. Nothing is ever dropped. Entries that go into the
`batch` layout's files only never reach a worker (the queue hands them to the batch writer); with
`--layout both` an entry goes to the batch writer once its own object is put. Workers are supervised: an
unexpected exception puts the entry back for a later retry and is logged once per cause; a worker
that ends anyway is restarted. Must not decide what is retryable (the sink classifies) nor touch
the receivers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from ..errors import SinkError
from ..lake.encode import JSON_CONTENT_TYPE
from .batch_writer import BatchWriter
from .sink import ObjectSink
from .spool import DamagedEntry, Ref, Spool

log = logging.getLogger("otel_s3_bridge.uploader")

RETRY_INITIAL_SECONDS = 0.2
UNREADABLE_ATTEMPTS = 3  # reads of an entry from disk before it is quarantined as unreadable
MAX_CAUSES_REMEMBERED = 1000


SETTLED_BEFORE_YIELD = 1000  # entries a worker settles without a put before it lets the loop run
SAME_OBJECT_WAIT_SECONDS = 0.05
JOINED_PUTS_MAX = 4  # a record completed by events: puts until what it holds stops changing


class Uploader:
    def __init__(self, spool: Spool, sink: ObjectSink, *, concurrency: int, retry_max_seconds: float,
                 latest_body: Callable[[str, bytes], Awaitable[bytes]] | None = None,
                 batches: BatchWriter | None = None) -> None:
        self._spool = spool
        self._batches = batches
        self._latest_body = latest_body
        self._sink = sink
        self._concurrency = concurrency
        self._retry_max = retry_max_seconds
        self._tasks: dict[int, asyncio.Task] = {}
        self._stopping = False
        self._failing: str | None = None
        self._consecutive_failures = 0
        self._sink_retry_at = 0.0  # loop time before which no worker tries the sink again
        self._causes_logged: set[str] = set()
        self._in_flight: set[tuple[str | None, str]] = set()  # objects being put right now

    def start(self) -> None:
        if self._batches is not None:  # entries for batch files only: no put of their own to make
            self._spool.queue.hand_batch_only_to(self._batches.add_all)
        for number in range(self._concurrency):
            self._start_worker(number)

    def _start_worker(self, number: int) -> None:
        task = asyncio.create_task(self._work(), name=f"uploader-{number}")
        task.add_done_callback(lambda ended, number=number: self._worker_ended(number, ended))
        self._tasks[number] = task

    def _worker_ended(self, number: int, task: asyncio.Task) -> None:
        if self._stopping:
            return
        cause = "cancelled" if task.cancelled() else repr(task.exception())
        self._log_once(f"uploader worker {number} ended ({cause})", "an uploader worker ended; starting it again")
        self._start_worker(number)

    async def _work(self) -> None:
        queue = self._spool.queue
        settled = 0
        while True:
            ref = queue.ready_now() or await self._spool.next()
            try:
                if self._settled(ref):
                    settled += 1
                else:
                    await self._upload(ref)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # stopping: the entry stays in the spool and is replayed at the next start
                self._unexpected(ref, "the upload was cancelled from within")  # not by us: retry it
            except Exception as error:  # a bug must not lose the entry nor the worker
                self._unexpected(ref, f"{type(error).__name__}: {error}", error)
            if settled == SETTLED_BEFORE_YIELD:  # outside the try: a settled entry is never tried again
                settled = 0
                await asyncio.sleep(0)  # a long queue (a replay) never holds the loop for long

    def _settled(self, ref: Ref) -> bool:
        """True when the entry needs no put of its own: done already, or superseded. Synchronous:
        a replay's stale entries end here, thousands a second."""
        if ref.finished:  # marked done while it waited: a newer body of its object is stored
            return True
        if self._spool.queue.superseded(ref):
            self._spool.done(ref)  # a newer body of the same object is queued
            return True
        return False

    async def _upload(self, ref: Ref) -> None:
        target = (ref.bucket, ref.key)
        if target in self._in_flight:  # an older body of it is being put: this one must land last
            self._spool.queue.retry_later(ref, SAME_OBJECT_WAIT_SECONDS)
            return
        self._in_flight.add(target)
        try:
            await self._put(ref)
        finally:
            self._in_flight.discard(target)

    async def _put(self, ref: Ref) -> None:
        delay = self._sink_retry_at - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            body = self._spool.body_of(ref)
        except (OSError, DamagedEntry) as error:
            await self._unreadable(ref, str(error))
            return
        joined = ref.join is not None and self._latest_body is not None
        try:
            if joined:
                # Its GenAI events may have reached another worker, which puts the completed record
                # too: put what the join store holds now, and again if that changed meanwhile, so
                # that whichever put lands last holds everything known before it started.
                for attempt in range(JOINED_PUTS_MAX):
                    latest = await self._latest_body(ref.join, body)
                    if attempt and latest == body:
                        break
                    body = latest
                    await self._sink.put(ref.key, body, JSON_CONTENT_TYPE, bucket=ref.bucket, controls=ref.controls)
            else:
                await self._sink.put(ref.key, body, JSON_CONTENT_TYPE, bucket=ref.bucket, controls=ref.controls)
        except SinkError as error:
            if error.retryable:
                self._retry(ref, error.message)
            else:
                await self._quarantine(ref, body, error.message)
            return
        if ref.partition is not None and self._batches is not None:
            self._batches.add(ref)  # `both` layouts: its batch file is still to come
        else:
            self._spool.done(ref)
        self._consecutive_failures, self._sink_retry_at = 0, 0.0
        if self._failing is not None:
            log.info("uploads to %s succeed again", self._sink.description)
            self._failing = None

    def _backoff(self, failures: int) -> float:
        return random.uniform(0, min(RETRY_INITIAL_SECONDS * 2 ** min(failures, 30), self._retry_max))

    def _retry(self, ref: Ref, cause: str) -> None:
        ref.attempts += 1
        self._consecutive_failures += 1
        self._spool.queue.retry_later(ref, self._backoff(ref.attempts))
        self._sink_retry_at = asyncio.get_running_loop().time() + self._backoff(self._consecutive_failures)
        if cause != self._failing:
            log.warning("upload to %s failed, retrying with backoff: %s", self._sink.description, cause)
            self._failing = cause

    async def _quarantine(self, ref: Ref, body: bytes, cause: str) -> None:
        try:
            await self._spool.quarantine(ref, body, cause)
        except OSError as error:  # the entry stays spooled and is tried again later
            self._log_once(f"cannot quarantine: {error.strerror}", f"cannot quarantine {ref.key}: {error}")
            ref.attempts += 1
            self._spool.queue.retry_later(ref, self._backoff(ref.attempts))
            return
        self._log_once(cause, f"{self._sink.description} refused an object for good: {cause}. Its record is kept "
                              f"in {self._spool.quarantine_dir}; fix the cause, then run `otel-s3-bridge spool retry`")

    async def _unreadable(self, ref: Ref, problem: str) -> None:
        ref.attempts += 1
        if ref.attempts < UNREADABLE_ATTEMPTS:
            self._spool.queue.retry_later(ref, self._backoff(ref.attempts))
            return
        reason = f"an entry of {ref.segment.path.name} cannot be read back ({problem})"
        await self._spool.quarantine_unreadable(ref, reason)
        self._log_once(reason, f"{reason}; the segment is kept in {self._spool.quarantine_dir}")

    def _unexpected(self, ref: Ref, cause: str, error: BaseException | None = None) -> None:
        ref.attempts += 1
        self._spool.queue.retry_later(ref, self._backoff(ref.attempts))
        self._log_once(cause, f"unexpected error uploading {ref.key}; it is retried later: {cause}", error)

    def _log_once(self, cause: str, message: str, error: BaseException | None = None) -> None:
        if cause in self._causes_logged:
            return
        if len(self._causes_logged) >= MAX_CAUSES_REMEMBERED:  # causes come partly from outside: bounded
            self._causes_logged.clear()
        self._causes_logged.add(cause)
        log.error("%s", message, exc_info=error)

    async def drain(self, timeout_seconds: float) -> bool:
        """Wait until every spooled entry is uploaded (or quarantined), at most `timeout_seconds`."""
        try:
            if self._batches is not None:
                await self._batches.drain()
            await asyncio.wait_for(self._spool.wait_idle(), timeout_seconds)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = {}
