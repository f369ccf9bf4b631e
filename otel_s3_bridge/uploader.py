"""Uploader workers: take spooled entries, write them to the sink, then let the spool forget them.

Retryable failures (timeouts, connection errors, 5xx, throttling, expired credentials) are retried
with exponential backoff and full jitter, without limit; permanent ones (access denied, no such
bucket) move the entry to the spool's quarantine. Each distinct cause is logged once. Must not
decide what is retryable (the sink classifies) nor touch the receivers.
"""

from __future__ import annotations

import asyncio
import logging
import random

from .encode import JSON_CONTENT_TYPE
from .errors import SinkError
from .sink import ObjectSink
from .spool import Ref, Spool

log = logging.getLogger("otel_s3_bridge.uploader")

RETRY_INITIAL_SECONDS = 0.2


class Uploader:
    def __init__(self, spool: Spool, sink: ObjectSink, *, concurrency: int, retry_max_seconds: float) -> None:
        self._spool = spool
        self._sink = sink
        self._concurrency = concurrency
        self._retry_max = retry_max_seconds
        self._tasks: list[asyncio.Task] = []
        self._failing: str | None = None
        self._causes_logged: set[str] = set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"uploader-{n}") for n in range(self._concurrency)]

    async def _work(self) -> None:
        while True:
            ref = await self._spool.next()
            try:
                body = self._spool.body_of(ref)
            except OSError as exc:
                log.error("cannot read spooled entry for %s from %s: %s", ref.key, ref.segment.path, exc)
                self._spool.done(ref)
                continue
            await self._deliver(ref, body)

    async def _deliver(self, ref: Ref, body: bytes) -> None:
        delay = RETRY_INITIAL_SECONDS
        while True:
            try:
                await self._sink.put(ref.key, body, JSON_CONTENT_TYPE)
            except SinkError as error:
                if not error.retryable:
                    self._quarantine(ref, body, error.message)
                    return
                self._note_failure(error.message)
            except Exception as error:  # a bug in a sink must not lose the entry: keep retrying it
                log.exception("unexpected error uploading %s", ref.key)
                self._note_failure(f"{type(error).__name__}: {error}")
            else:
                self._spool.done(ref)
                if self._failing is not None:
                    log.info("uploads to %s succeed again", self._sink.description)
                    self._failing = None
                return
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, self._retry_max)

    def _note_failure(self, cause: str) -> None:
        if cause != self._failing:
            log.warning("upload to %s failed, retrying with backoff: %s", self._sink.description, cause)
            self._failing = cause

    def _quarantine(self, ref: Ref, body: bytes, cause: str) -> None:
        try:
            self._spool.quarantine(ref, body, cause)
        except OSError as exc:  # the entry stays in its segment and is replayed at the next start
            log.error("cannot quarantine %s: %s", ref.key, exc)
            return
        if cause not in self._causes_logged:
            self._causes_logged.add(cause)
            log.error("%s refused an object for good: %s. Its record is kept in %s; fix the cause, then run "
                      "`otel-s3-bridge spool retry`", self._sink.description, cause, self._spool.quarantine_dir)

    async def drain(self, timeout_seconds: float) -> bool:
        """Wait until every spooled entry is uploaded (or quarantined), at most `timeout_seconds`."""
        try:
            await asyncio.wait_for(self._spool.wait_idle(), timeout_seconds)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
