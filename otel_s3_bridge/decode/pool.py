"""Decode processes: large exports are prepared (`prepare.prepare_export`), and the largest split
into chunks of whole traces first (`split.split_export`), in worker processes.

Parsing and decoding hold the GIL: in a thread they still stall the event loop (measured here:
0.8-1.3 s p99 for /healthz beside a 20 MiB export), in a process they do not. At most one export
per process is in flight (a semaphore, so that waiting bodies stay in the bridge, counted against
the in-flight budget, not in a pipe). Processes are started with `spawn` (the bridge has threads:
gRPC's, the spool's) before the receivers listen, and hand freed memory back to the system after
each export. A process that dies (killed for memory, say) is replaced; its exports are answered
503 so that clients retry. A process whose bridge is gone (killed) ends by itself. With
`processes == 0` exports are prepared in a thread instead. Must not know about transports or the
spool.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from ..errors import Unavailable
from .prepare import ExportContext, PreparedExport, prepare_export
from .split import split_export

log = logging.getLogger("otel_s3_bridge.decode_pool")
T = TypeVar("T")

# After an export this large, a decode process hands its freed memory back to the system (a full
# collection and malloc_trim cost milliseconds: not after every small export).
RELEASE_AFTER_BYTES = 1024 * 1024


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where there is no glibc (finding the library is slow: once)."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def _libc_trim() -> None:
    """glibc keeps freed memory mapped for reuse; after a large export, give it back."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _prepare_in_process(body: bytes, context: ExportContext) -> PreparedExport:
    release = True  # also when the export was refused: it may have been refused after a long decode
    try:
        prepared = prepare_export(body, context)
        release = max(prepared.input_bytes, prepared.output_bytes) >= RELEASE_AFTER_BYTES
        return prepared
    finally:
        if release:
            gc.collect()
            _libc_trim()


def _split_in_process(body: bytes, encoding: str, coding: str, max_request_bytes: int) -> list[bytes]:
    try:
        return split_export(body, encoding, coding, max_request_bytes)
    finally:
        gc.collect()
        _libc_trim()


def _ready() -> bool:
    return True


PARENT_CHECK_SECONDS = 1.0


def _follow_parent(parent: int) -> None:
    """In a decode process: end when the bridge is gone (a `kill -9` or an OOM kill of the bridge
    must not leave its decode processes behind, holding memory)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


class DecodePool:
    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(max(processes, 1))

    async def start(self) -> None:
        if self.processes:
            self._executor = self._new_executor()
            loop = asyncio.get_running_loop()
            # Start every process now (spawn takes a few hundred ms), not at the first large export.
            await asyncio.gather(*(loop.run_in_executor(self._executor, _ready) for _ in range(self.processes)))

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_follow_parent, initargs=(os.getpid(),))

    async def prepare(self, body: bytes, context: ExportContext) -> PreparedExport:
        return await self._run(prepare_export, _prepare_in_process, body, context)

    async def split(self, body: bytes, context: ExportContext) -> list[bytes]:
        """The export as requests of whole traces, small enough to be decoded and spooled one by one."""
        return await self._run(split_export, _split_in_process, body, context.encoding, context.coding,
                               context.max_request_bytes)

    async def _run(self, in_thread: Callable[..., T], in_process: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            if self._executor is None:
                return await asyncio.to_thread(in_thread, *args)
            executor = self._executor
            try:
                return await asyncio.get_running_loop().run_in_executor(executor, in_process, *args)
            except BrokenProcessPool:
                if executor is self._executor:
                    log.error("a decode process ended unexpectedly (killed for memory?); starting new ones")
                    self._executor = self._new_executor()
                    executor.shutdown(wait=False, cancel_futures=True)
                raise Unavailable("the export could not be decoded this time; retry later") from None

    async def stop(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
