"""The `batch` layout's writer: spooled records -> one Parquet (or gzip NDJSON) file per lake
partition per flush, behind the spool beside the `trace` uploader.

The spool's queue hands over the entries that go into batch files only as they are queued
(`add_all`), the uploader those that are also their own `trace` object once put (`add`). Entries wait as
spool refs (their bodies stay in the spool's memory cache or on disk) in one open batch per
(bucket, partition, object controls: a file's tags are true of every record in it), flushed
once it holds --batch-max-records records or --batch-max-bytes of them, or is
--batch-max-age-seconds old, whichever comes first, so a record is in a file at the next flush
whether or not its GenAI event logs may still complete it: a record completed later is
spooled again and goes into a later file, and readers keep a call's newest version
(`schema.NEWEST_FIRST`). Of a call spooled more than once before a flush, only the newest entry is
written, completed with whatever events the join store holds for it by then.

A flush, and what makes it exactly once:
  1. read the members' records and encode the file (in a thread, a part at a time); its key is a
     digest of the members' own keys (`partitions.file_key`: trace id, span start, span id) and spool
     times, so that a later version of the same calls (a resent export, a completion) goes into a
     file of its own and never overwrites the file holding another version
  2. write a manifest `batches/<digest>.batch` in the spool directory (the file's key, format and
     bucket, each member's key and spool time), fsynced, before anything is uploaded
  3. put the file (the sink goes multipart for large ones); a retryable failure is tried again
     with backoff, the same bytes under the same key
  4. rename the manifest to `.uploaded` (durably), mark the members done in the spool with the
     marks fsynced, then delete the manifest.
At start (`recover`, before the uploaders run) manifests a crash left are finished first: the members
of an `.uploaded` one are marked done; a `.batch` one is written again from its members under its
key (an overwrite: never a second file holding the same records). A file the sink refuses for good
sends its members to the spool's quarantine. Must not decide what is retryable (the sink does) nor
parse OTLP; pyarrow and DuckDB are loaded at the first flush, so a `trace`-only bridge never loads them.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import itertools
import logging
import os
import random
import shutil
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .. import metrics
from ..durable import fsync_directory, write_atomically
from ..errors import SinkError
from ..lake import partitions
from . import batch_members as members
from .sink import ObjectSink
from .spool import DamagedEntry, Ref, Spool
from .spool_format import decode_entry

log = logging.getLogger("otel_s3_bridge.batch")

FLUSHES_AT_ONCE = 2  # files being encoded or uploaded at once: each holds its file's bytes in memory
PART_RECORDS = 20_000  # records made into columns (one Parquet row group) at a time
# Of a part's records, handed to DuckDB at a time (a chunk of its own). A quarter of its 2,048-row
# vector: smaller chunks make its JSON parse touch less new memory (measured: a fresh bridge's first
# file 0.72 page faults a record against 1.22 at 2,048, ~1 µs a record less; later files alike;
# the same file, byte for byte).
READ_RECORDS = 512
DUCKDB_MEMORY = "256MB"  # what DuckDB may hold while it reads a part of a file's records
RETRY_INITIAL_SECONDS = 0.2
UNEXPECTED_FAILURES_MAX = 3  # and UNEXPECTED_FAILURES_SECONDS since the first: then the members go to the
UNEXPECTED_FAILURES_SECONDS = 60.0  # spool's quarantine (kept, for `spool retry`); never a burst of failures
MANIFEST, UPLOADED = ".batch", ".uploaded"
ARROW_POOL_VARIABLE, ARROW_POOL = "ARROW_DEFAULT_MEMORY_POOL", "system"  # see `choose_arrow_pool`


@dataclass(eq=False)
class Batch:
    bucket: str | None
    folder: str  # the lake partition: {prefix}/lake/dt=…/hour=…
    opened_at: float  # loop time of its first record
    refs: list[Ref] = field(default_factory=list)
    bytes: int = 0
    key: str | None = None  # fixed by its manifest
    file_format: str | None = None
    manifest: Path | None = None
    failures: int = 0  # unexpected failures to write it
    first_failure_at: float = 0.0  # loop time of the first of them
    disk_failures: int = 0  # local disk errors (retried with backoff, never a reason to quarantine)
    controls: bytes = b""  # its members' encoded ObjectControls (all the same)


@dataclass
class BatchSettings:
    file_format: str
    max_records: int
    max_bytes: int
    max_age_seconds: float
    retry_max_seconds: float


class BatchWriter:
    def __init__(self, spool: Spool, sink: ObjectSink, settings: BatchSettings,
                 latest_body: Callable[[str, bytes], Awaitable[bytes]] | None = None) -> None:
        self._spool = spool
        self._sink = sink
        self._settings = settings
        self._latest_body = latest_body
        self.directory = spool.directory / "batches"
        # At start, on the main thread: before pyarrow is imported, and not while builds read the environment.
        choose_arrow_pool(os.environ, "pyarrow" in sys.modules)
        self._duckdb = DuckDB(self.directory)
        # The builds' own threads, the same ones every flush: a build on one of the loop's shared
        # worker threads met cold allocator caches and paid page faults for them (measured here:
        # DuckDB's read 8-9 µs a record in a fresh thread, 5 in a thread that built before).
        self._builders = ThreadPoolExecutor(FLUSHES_AT_ONCE, thread_name_prefix="batch-build")
        self._open: dict[tuple[str | None, str, bytes], Batch] = {}
        self._flushes: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(FLUSHES_AT_ONCE)
        self._wake = asyncio.Event()
        self._timer: asyncio.Task | None = None
        self._draining = False
        self._disk_problem: str | None = None  # logged once until the disk works again

    # --- taking entries ---------------------------------------------------------------------------

    def add_all(self, refs: list[Ref]) -> None:
        """`add` each entry (the spool's queue hands over an append's `batch`-only entries)."""
        for ref in refs:
            self.add(ref)

    def add(self, ref: Ref) -> None:
        """Take a spooled entry for its partition's next file (never blocks)."""
        place = (ref.bucket, ref.partition, ref.controls)
        batch = self._open.get(place)
        if batch is None:
            batch = self._open[place] = Batch(ref.bucket, ref.partition, asyncio.get_running_loop().time(),
                                              controls=ref.controls)
            self._wake.set()
        batch.refs.append(ref)
        batch.bytes += ref.length
        if len(batch.refs) >= self._settings.max_records or batch.bytes >= self._settings.max_bytes:
            self._close(batch)

    def _close(self, batch: Batch) -> None:
        if self._open.get(place := (batch.bucket, batch.folder, batch.controls)) is batch:
            del self._open[place]
        task = asyncio.create_task(self._flush(batch), name=f"batch {batch.folder}")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def start(self) -> None:
        self._timer = asyncio.create_task(self._schedule(), name="batch timer")

    async def _schedule(self) -> None:
        """Closes batches that reached their age."""
        loop = asyncio.get_running_loop()
        max_age = self._settings.max_age_seconds
        while True:
            self._wake.clear()
            now = loop.time()
            try:
                for batch in list(self._open.values()):
                    if self._draining or now - batch.opened_at >= max_age:
                        self._close(batch)
            except Exception as error:  # a bug must not stop files from closing on age
                log.error("the batch timer failed (%s: %s); it goes on", type(error).__name__, error, exc_info=error)
            waits = [batch.opened_at + max_age - now for batch in self._open.values()]
            try:
                await asyncio.wait_for(self._wake.wait(), max(min(waits), 0.001) if waits else None)
            except TimeoutError:
                pass

    # --- flushing ---------------------------------------------------------------------------------

    async def _flush(self, batch: Batch) -> None:
        async with self._slots:
            try:
                await self._write(batch)
                self._disk_problem = None
                return
            except asyncio.CancelledError:
                raise  # stopping: the manifest (if any) and the entries stay; the next start finishes it
            except OSError as error:  # the local disk (spill, manifest): full, or a blip; it comes back
                batch.disk_failures += 1
                retry_in = self._backoff(batch.disk_failures)
                cause = error.strerror or str(error)
                if cause != self._disk_problem:
                    self._disk_problem = cause
                    log.warning("cannot write a batch file's parts on the local disk (%s, under %s); retrying with "
                                "backoff", cause, self.directory)
            except Exception as error:  # a bug must not lose entries: they are tried again, then kept aside
                cause = f"{type(error).__name__}: {error}"
                now = asyncio.get_running_loop().time()
                batch.failures += 1
                batch.first_failure_at = batch.first_failure_at or now
                if (batch.failures >= UNEXPECTED_FAILURES_MAX
                        and now - batch.first_failure_at >= UNEXPECTED_FAILURES_SECONDS):
                    await self._refused(batch, f"the batch file cannot be made ({cause})", by_sink=False)
                    return
                log.error("writing a batch file for %s failed unexpectedly (%s); its records are tried again",
                          batch.folder, cause, exc_info=error)
                retry_in = self._backoff(batch.failures)
        await asyncio.sleep(retry_in)  # its flush slot free meanwhile, for other partitions
        self._close(batch)  # the same members (and manifest, if any) again

    def _requeue(self, batch: Batch) -> None:
        """The batch's entries go round again (its manifest, if any, is kept: the same file)."""
        if batch.manifest is not None:
            self._close(batch)
            return
        for ref in batch.refs:
            if not ref.finished:
                self.add(ref)

    async def _write(self, batch: Batch) -> None:
        queue = self._spool.queue
        if batch.manifest is None:  # a new file: superseded entries are not written
            stale = members.superseded(queue, batch.refs)
            if stale:
                self._spool.done_all(stale)
        batch.refs = members.unfinished(batch.refs)
        if not batch.refs:
            await self._forget_manifest(batch)
            return
        file_format = batch.file_format or self._settings.file_format
        sources, joined = members.sources(batch.refs)
        if self._latest_body is not None:
            for index in joined:  # completed by another process?
                ref = batch.refs[index]
                sources[index] = (None, 0, 0, await self._latest_body(ref.join, self._spool.body_of(ref)))
        try:
            data = await asyncio.get_running_loop().run_in_executor(self._builders, _build, sources, file_format,
                                                                     self._duckdb)
        except _Unreadable as unreadable:
            ref = batch.refs[unreadable.index]
            reason = f"an entry of {ref.segment.path.name} cannot be read back ({unreadable.cause})"
            await self._spool.quarantine_unreadable(ref, reason)
            log.error("%s; the segment is kept in %s", reason, self._spool.quarantine_dir)
            self._requeue(batch)
            return
        del sources
        members.forget_bodies(queue, batch.refs)
        if batch.manifest is None:
            batch.key = partitions.file_key(batch.folder, members.identities(batch.refs), file_format)
            batch.file_format = file_format
            batch.manifest = await self._write_manifest(batch)
        if not await self._put(batch, data):
            return
        uploaded = batch.manifest.with_suffix(UPLOADED)
        await asyncio.to_thread(_rename_durably, batch.manifest, uploaded)
        batch.manifest = uploaded
        metrics.count_batch_file(file_format, len(batch.refs))
        await self._finish(batch)

    async def _put(self, batch: Batch, data: bytes) -> bool:
        """Put the file until it is stored (True) or refused for good (False, members quarantined)."""
        failures = 0
        while True:
            try:
                await self._sink.put(batch.key, data, partitions.CONTENT_TYPES[batch.file_format], bucket=batch.bucket,
                                     controls=batch.controls)
                return True
            except SinkError as error:
                if not error.retryable:
                    await self._refused(batch, error.message, by_sink=True)
                    return False
                failures += 1
                if failures == 1:
                    log.warning("writing %s to %s failed, retrying with backoff: %s", batch.key,
                                self._sink.description, error.message)
                await asyncio.sleep(self._backoff(failures))

    async def _refused(self, batch: Batch, cause: str, *, by_sink: bool) -> None:
        log.error("%s refused the batch file %s for good: %s. Its %d records are kept in %s; fix the cause, "
                  "then run `otel-s3-bridge spool retry`", self._sink.description if by_sink else "the bridge",
                  batch.key or f"for {batch.folder}", cause, len(batch.refs), self._spool.quarantine_dir)
        for ref in batch.refs:
            if ref.finished:
                continue
            try:
                body = self._spool.body_of(ref)
                await self._spool.quarantine(ref, body, cause)
            except (OSError, DamagedEntry) as error:
                await self._spool.quarantine_unreadable(ref, f"cannot be read back ({error})")
        await self._forget_manifest(batch)

    async def _finish(self, batch: Batch) -> None:
        if await self._spool.done_durably(batch.refs):
            await self._forget_manifest(batch)
        else:  # the manifest says the file is written: the next start marks these entries done
            log.warning("the spool could not record that %s holds its %d records; the next start does", batch.key,
                        len(batch.refs))

    async def _write_manifest(self, batch: Batch) -> Path:
        path = self.directory / f"{batch.key.rsplit('/', 1)[1].split('.', 1)[0]}{MANIFEST}"
        document = orjson.dumps({"key": batch.key, "format": batch.file_format, "bucket": batch.bucket,
                                 "controls": batch.controls.decode(),
                                 "members": members.manifest_members(batch.refs)})
        await asyncio.to_thread(_write_manifest_file, path, document)
        return path

    async def _forget_manifest(self, batch: Batch) -> None:
        if batch.manifest is not None:
            await asyncio.to_thread(batch.manifest.unlink, missing_ok=True)
            batch.manifest = None

    def _backoff(self, failures: int) -> float:
        return random.uniform(0, min(RETRY_INITIAL_SECONDS * 2 ** min(failures, 30), self._settings.retry_max_seconds))

    # --- start and stop ---------------------------------------------------------------------------

    async def recover(self) -> int:
        """Finish the files a crash left half done (call after the spool is open, before the
        uploaders start). Returns how many files are written again."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # A crash's scratch: DuckDB's spill, and records staged as NDJSON by earlier versions.
        for leftover in [*self.directory.glob("*.partial"), *self.directory.glob("*.spill")]:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        rewritten = 0
        for path in sorted(self.directory.iterdir()):
            if path.suffix not in (MANIFEST, UPLOADED):
                continue
            try:
                manifest = orjson.loads(path.read_bytes())
                members = {(key, enqueued) for key, enqueued in manifest["members"]}
                bucket, key, file_format = manifest["bucket"], manifest["key"], manifest["format"]
                controls = str(manifest.get("controls") or "").encode()  # (manifests before object controls: none)
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                log.error("batch manifest %s cannot be read (%s); its records are written to a new file", path,
                          error)
                path.rename(path.with_suffix(".unreadable"))
                continue
            refs = self._spool.queue.take(
                lambda ref: ref.bucket == bucket and (ref.key, ref.enqueued_unix_nano) in members)
            batch = Batch(bucket, key.rsplit("/", 1)[0], 0.0, refs, key=key, file_format=file_format, manifest=path,
                          controls=controls)
            if path.suffix == UPLOADED or not refs:
                await self._finish(batch)
                continue
            log.info("writing %s again (%d records) as a crash left it", key, len(refs))
            self._close(batch)
            rewritten += 1
        return rewritten

    async def drain(self) -> None:
        """Write every open batch now."""
        self._draining = True
        self._wake.set()

    async def stop(self) -> None:
        tasks = [task for task in (self._timer, *self._flushes) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._builders.shutdown(wait=False)  # a cancelled build runs on in its thread
        await asyncio.to_thread(self._duckdb.close)  # after the builds


class _Unreadable(Exception):
    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(index, cause)
        self.index, self.cause = index, cause


def _bodies(sources: list[tuple[Path | None, int, int, bytes | None]]) -> Iterator[bytes]:
    """Each source's body: the one given, else read back from its segment (this thread's own
    descriptors: a member's segment stays on disk until the member is done)."""
    descriptors: dict[Path, int] = {}
    try:
        for index, (path, offset, length, body) in enumerate(sources):
            if body is None:
                try:
                    if path not in descriptors:
                        descriptors[path] = os.open(path, os.O_RDONLY)
                    body = decode_entry(os.pread(descriptors[path], length, offset)).body
                except (OSError, DamagedEntry) as error:
                    raise _Unreadable(index, error) from error
            yield body
    finally:
        for fd in descriptors.values():
            os.close(fd)


def _parts(items: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    part: list[bytes] = []
    for item in items:
        part.append(item)
        if len(part) == size:
            yield part
            part = []
    if part:
        yield part


class DuckDB:
    """The DuckDB database a writer's Parquet builds read records with, opened at the first one
    (opening one costs ~20 ms, which a flush paid every time) and shared: each build has its own
    cursor. One thread, so that the other cores serve exports; its memory bounded, spilling into
    `scratch`."""

    def __init__(self, scratch: Path) -> None:
        self._spill = scratch / "duckdb.spill"
        self._lock = threading.Lock()
        self._database: Any = None
        self._builds = 0  # cursors in use

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        import duckdb

        with self._lock:
            if self._database is None:
                self._database = duckdb.connect(config={"threads": 1, "memory_limit": DUCKDB_MEMORY,
                                                        "temp_directory": str(self._spill)})
            cursor = self._database.cursor()
            self._builds += 1
        try:
            yield cursor
        finally:
            cursor.close()
            with self._lock:
                self._builds -= 1

    def close(self) -> None:
        """At stop. A build still running (cancelled, its thread goes on) keeps the database open
        until the process ends; the next start deletes what it spilled."""
        with self._lock:
            if self._database is not None and not self._builds:
                self._database.close()
                self._database = None
                shutil.rmtree(self._spill, ignore_errors=True)


def choose_arrow_pool(environ: MutableMapping[str, str], arrow_loaded: bool) -> bool:
    """Ask Arrow for the C library's allocator (`ARROW_DEFAULT_MEMORY_POOL=system`) unless that
    variable names one already; True when set here. Arrow reads it once, when pyarrow is imported,
    so this must run before (False, nothing set, once `arrow_loaded`); `pa.set_memory_pool` would
    not do: it changes the pool of pyarrow's own calls, not the one Parquet's writer allocates from.
    Not Arrow's default, mimalloc: a file's build touches tens of MB of new memory, which mimalloc's
    arenas took as 2 MB pages the kernel zeroes whole (bench/analysis.md: a fresh bridge's builds
    cost 10-20 µs a record with it, 8-13 with the C library's)."""
    if environ.get(ARROW_POOL_VARIABLE) or arrow_loaded:
        return False
    environ[ARROW_POOL_VARIABLE] = ARROW_POOL
    return True


@functools.cache
def _log_arrow_pool() -> None:
    import pyarrow as pa

    log.info("Parquet files are built with Arrow's %s memory pool", pa.default_memory_pool().backend_name)


def _build(sources: list[tuple[Path | None, int, int, bytes | None]], file_format: str, database: DuckDB) -> bytes:
    """The file's bytes, reading `PART_RECORDS` records at a time. NDJSON: the bodies as stored,
    gzip-compressed. Parquet: DuckDB's JSON functions turn the bodies into columns, handed over in
    memory as a stream of Arrow string columns of `READ_RECORDS` bodies each (measured here: 8 µs a
    record, against 12 when they were staged as an NDJSON file for its JSON reader, 22 through
    Python dicts; streamed, a fresh bridge's first file ~1.2 µs a record less than one column of
    the whole part, and ~20 MB less memory); should it refuse a part, the records go through
    `schema.table` instead, which is what the other is tested against."""
    from ..lake import schema

    def parts() -> Iterator[list[bytes]]:  # read again from the start on each call
        return _parts(_bodies(sources), PART_RECORDS)

    if file_format == partitions.NDJSON:
        return schema.encode_lines(b"".join(body + b"\n" for body in part) for part in parts())
    _log_arrow_pool()
    import duckdb
    import pyarrow as pa

    try:
        return schema.encode_tables(_duckdb_tables(parts(), database))
    except (duckdb.Error, pa.ArrowInvalid, OSError) as error:  # (OSError: a chunk DuckDB's read of the stream refused)
        log.warning("DuckDB could not read a batch of records (%s); they are encoded in Python instead", error)
        return schema.encode_parts([orjson.loads(body) for body in part] for part in parts())


def _duckdb_tables(parts: Iterator[list[bytes]], database: DuckDB) -> Iterator[Any]:
    import pyarrow as pa

    from ..lake import schema

    rows = schema.duckdb_rows_of_bodies("bodies", "body")
    bodies = pa.schema([("body", pa.large_string())])
    with database.cursor() as cursor:
        for part in parts:
            chunks = (pa.record_batch([_strings(part[start:start + READ_RECORDS])], schema=bodies)
                      for start in range(0, len(part), READ_RECORDS))
            cursor.register("bodies", pa.RecordBatchReader.from_batches(bodies, chunks))
            yield cursor.sql(rows).to_arrow_reader(READ_RECORDS).read_all()
            cursor.unregister("bodies")


def _strings(bodies: list[bytes]) -> Any:
    """The bodies as one Arrow string array: a single copy of their bytes, checked to be UTF-8
    (`ArrowInvalid` otherwise)."""
    import pyarrow as pa

    offsets = array.array("q", itertools.accumulate(map(len, bodies), initial=0))
    strings = pa.LargeStringArray.from_buffers(len(bodies), pa.py_buffer(offsets), pa.py_buffer(b"".join(bodies)))
    strings.validate(full=True)
    return strings


def _write_manifest_file(path: Path, document: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, document)


def _rename_durably(source: Path, target: Path) -> None:
    os.replace(source, target)
    fsync_directory(target.parent)
