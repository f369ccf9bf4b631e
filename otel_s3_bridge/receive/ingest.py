"""The one consume path every receiver calls: prepare (inflate, parse, decode, key, encode) ->
spool -> acknowledge.

Receivers hand over the request's bytes as received, the authenticated `Principal` and the
bytes' `Reservation`; the answer is an `ExportResult` or a `BridgeError`. Small exports are
prepared in the event loop; larger ones (and any compressed body that inflates past the small
size) in a decode process (`decode.pool`), so that no request can stall the others. Memory is
bounded by `InflightBytes`: the bodies being read and the records decoded from them count
against `--max-inflight-bytes`; one export that could never fit is 413, one that does not fit
now is 503 + Retry-After. With `--ack auto` (trace layout) an export's objects are put first and
it is acknowledged once the sink has them, or once those it did not take within
`--ack-wait-seconds` (or failed to) are fsynced in the spool; with `--ack spool` (and the batch
layout) once its entries are fsynced in the spool; with `--ack upload` once every object is in the
sink, and an object the sink refuses for good is reported in `partial_success` rather than retried
forever.
A logs export carries GenAI event records: they are kept in the join store (`join`), and a stored
record they complete is spooled again, completed, under its own key; likewise a span whose
events came first is stored completed at once. Must not import aiohttp or grpc.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import orjson

from .. import metrics
from ..config import BridgeConfig
from ..decode.compression import inflate
from ..decode.join import JoinFull, JoinStore
from ..decode.otlp import JSON, PROTOBUF
from ..decode.pool import DecodePool
from ..decode.prepare import LOGS, TRACES, ExportContext, PreparedExport, completed_object, prepare_export
from ..deliver.sink import ObjectSink
from ..deliver.spool import Spool, SpoolFull, SpoolTooSmall
from ..enrich.pricing import PriceBook
from ..errors import InvalidRequest, PayloadTooLarge, RateLimited, RecordsTooLarge, SinkError, Unavailable
from ..govern.identities import watch_pseudonym_key
from ..govern.limits import KeyRates
from ..govern.policy import KEEP, KeyPolicy, RecordPolicy
from ..lake.encode import JSON_CONTENT_TYPE
from ..lake.partitions import partition_dir
from ..watched_file import WatchedFile
from .auth import Principal

log = logging.getLogger("otel_s3_bridge.ingest")

# Exports up to this size (once inflated) are prepared in the event loop. A decode process costs a
# trip (pickling both ways, two context switches): measured here, 100-span OTLP/JSON batches
# (93 KB) cost 136 us of CPU per span through decode processes against 57-74 inline, while the
# worst 128 KiB (the smallest spans, each its own record) holds the loop for ~25 ms. Larger exports
# never block it.
INLINE_MAX_BYTES = 128 * 1024
# Records' JSON bytes per request byte, measured with `prepare_export` over OpenInference, GenAI and
# OpenRouter exports (bench/payloads.py, tests/test_admission.py): OTLP/JSON 0.9-1.5 (3.7 for the
# smallest spans), protobuf 1.0-3.0. A compressed body is assumed to inflate this much.
EXPANSION = {JSON: 2, PROTOBUF: 3}
COMPRESSION_RATIO = 8
# An export expected to decode to more than this is decoded and spooled in chunks of whole traces
# (`decode.split`), so that no export needs its whole decoded size in memory at once.
SPLIT_ABOVE_BYTES = 8 * 1024 * 1024
MESSAGES_KEPT = 5  # distinct partial_success messages of a chunked export, joined
# --ack auto: after a put before the answer failed or was late, exports to that bucket are spooled
# without one for this long (the uploader, with its back-off, finds when the bucket is back).
SPOOL_ONLY_SECONDS = 10.0
# Join store failures a retry can get past (space freed, a disk that recovers); others are refused.
RETRYABLE_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM})


def expected_output_bytes(body_bytes: int, context: ExportContext) -> int:
    """What an export's records will plausibly take once decoded (at most what they may take)."""
    inflated = body_bytes * (COMPRESSION_RATIO if context.coding else 1)
    return min(inflated * EXPANSION.get(context.encoding, max(EXPANSION.values())), context.max_output_bytes)


def _rates_of(policy: KeyPolicy) -> tuple[float, float]:
    return policy.max_spans_per_second or 0.0, policy.max_bytes_per_second or 0.0


class Item(NamedTuple):
    """One object an export stores."""

    key: str
    body: bytes
    bucket: str | None
    spans: int  # how many spans (or GenAI events) it holds, for partial_success when refused
    join: str | None = None  # the join store's name of its call, when a half is kept for it
    partition: str | None = None  # its lake partition, when it goes into a `batch` layout file
    controls: bytes = b""  # its objects' encoded ObjectControls (the key's, tags filled in); b"": none


@dataclass(frozen=True, slots=True)
class ExportResult:
    stored_objects: int
    rejected_spans: int
    message: str | None
    received: int = 0  # spans (log records) in the export, for the key's rate limits


class InflightBytes:
    """Bytes of requests being received or processed; beyond the limit new ones are told to retry."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def acquire(self, size: int, already_held: int = 0) -> None:
        # A request is always let through when it is the only one holding bytes.
        if self.current > already_held and self.current + size > self.limit:
            raise Unavailable(f"the bridge holds {self.current} request bytes in memory "
                              f"(--max-inflight-bytes {self.limit}); retry later")
        self.current += size

    def release(self, size: int) -> None:
        self.current -= size

    def reserve(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """The bytes one request holds; released in one go when the request ends."""

    def __init__(self, owner: InflightBytes) -> None:
        self._owner = owner
        self.size = 0

    def add(self, size: int) -> None:
        self._owner.acquire(size, already_held=self.size)
        self.size += size

    def shrink_to(self, size: int) -> None:
        if size < self.size:
            self._owner.release(self.size - size)
            self.size = size

    def release(self) -> None:
        self._owner.release(self.size)
        self.size = 0


class Ingestor:
    def __init__(self, config: BridgeConfig, sink: ObjectSink, spool: Spool | None = None,
                 pool: DecodePool | None = None, join: JoinStore | None = None,
                 clock: Callable[[], int] = time.time_ns, prices: WatchedFile[PriceBook] | None = None) -> None:
        self._config = config
        self._prices = prices
        self._join = join
        self._join_order = JoinOrder()
        self._sink = sink
        self._spool = spool
        self._pool = pool or DecodePool(0)
        self._puts_first = config.puts_first and spool is not None
        # Per bucket (each key may have its own; they come from the configuration), by the loop's
        # clock: after a put first to it failed, its exports go to the spool alone until then.
        self._spool_only_until: dict[str | None, float] = {}
        self._clock = clock
        self._last_failure: str | None = None
        self._decode_failures: set[str] = set()
        self.inflight = InflightBytes(config.max_inflight_bytes)
        self.pseudonym_key = watch_pseudonym_key(config.pseudonym_key_file)
        self._rates = KeyRates(lambda name: _rates_of(config.policy_of(name)))
        self._controls: dict[tuple[str | None, str | None], bytes] = {}
        self.accepting = True

    def check_accepting(self) -> None:
        """Called as a request arrives: once the bridge is stopping, new exports are told to retry."""
        if not self.accepting:
            raise Unavailable("the bridge is shutting down; retry later")

    def state(self) -> dict[str, int]:
        state = {"inflight_bytes": self.inflight.current}
        if self._join is not None:
            state["join_bytes"] = self._join.used_bytes
        if self._spool is not None:
            state.update(spool_pending=self._spool.pending, spool_bytes=self._spool.used_bytes,
                         spool_max_bytes=self._spool.max_bytes, quarantined_total=self._spool.quarantined_total)
        return state

    def not_ready_reason(self) -> str | None:
        if not self.accepting:
            return "shutting down"
        if self._spool is not None and not self._spool.has_room:
            return f"the spool is full ({self._spool.used_bytes} of {self._spool.max_bytes} bytes)"
        return None

    async def export(self, body: bytes, reservation: Reservation, *, encoding: str, coding: str,
                     principal: Principal, transport: str, max_request_bytes: int,
                     signal: str = TRACES) -> ExportResult:
        """Store what `body` (an OTLP traces or logs export) holds; `coding` is its Content-Encoding
        ("" when plain)."""
        config = self._config
        try:
            self._rates.admit(principal.name)
        except RateLimited:
            metrics.count_rate_limited(principal.name)
            raise
        context = ExportContext(
            encoding=encoding, coding=coding, key_name=principal.name, transport=transport,
            received_at_unix_nano=self._clock(), non_llm_spans=config.non_llm_spans, template=config.path_template,
            prefix=principal.prefix, max_request_bytes=max_request_bytes,
            max_resource_bytes=config.max_resource_bytes, max_output_bytes=config.decoded_bytes_limit, signal=signal,
            lake=config.writes_batches, prices=self._prices.value if self._prices is not None else PriceBook(),
            policy=self._record_policy(principal))
        received_bytes = len(body)
        result = await self._export_whole_or_in_chunks(body, context, reservation, principal)
        self._rates.charge(principal.name, result.received, received_bytes)
        return result

    def _controls_of(self, key_name: str | None, source: str | None) -> bytes:
        """The object controls of a record from `key_name` of instrumentation `source`, encoded for
        the spool; b"" when they are the sink's own (the flags', nothing filled in). One per (key,
        source), both from small sets (names of keys, of conventions)."""
        encoded = self._controls.get((key_name, source))
        if encoded is None:
            if len(self._controls) >= 1024:
                self._controls.clear()
            controls = self._config.object_controls_of(key_name).render(key_name, source)
            encoded = b"" if controls == self._config.object_controls else controls.encode()
            self._controls[(key_name, source)] = encoded
        return encoded

    def _record_policy(self, principal: Principal) -> RecordPolicy:
        policy = principal.policy
        return RecordPolicy(policy.content or KEEP, policy.identities or KEEP,
                            1.0 if policy.sample is None else policy.sample,
                            self.pseudonym_key.value if self.pseudonym_key is not None else None,
                            self._config.redact_patterns, self._config.redact_phone_region)

    async def _export_whole_or_in_chunks(self, body: bytes, context: ExportContext, reservation: Reservation,
                                         principal: Principal) -> ExportResult:
        if context.signal == LOGS or expected_output_bytes(len(body), context) <= SPLIT_ABOVE_BYTES:
            held = reservation.size
            try:
                return await self._export_chunk(body, context, reservation, principal)
            except RecordsTooLarge:  # more records than expected (the smallest spans): in chunks, then
                if context.signal == LOGS:
                    raise
                reservation.shrink_to(held)
        return await self._export_in_chunks(body, context, reservation, principal)

    async def _export_in_chunks(self, body: bytes, context: ExportContext, reservation: Reservation,
                                principal: Principal) -> ExportResult:
        """A large export, a chunk of whole traces at a time: each chunk's records are spooled
        (fsynced) and let go before the next is decoded; the export is answered once all are."""
        chunks = await self._pool.split(body, context)
        # The chunks stand for the body, already held: only what inflating added is reserved anew
        # (reserving both made large exports side by side refuse each other forever).
        reservation.add(max(0, sum(map(len, chunks)) - len(body)))
        del body
        context = replace(context, coding="")
        stored, rejected, received, problems = 0, 0, 0, []
        chunks.reverse()
        while chunks:  # each chunk let go once spooled
            held = reservation.size
            result = await self._export_chunk(chunks.pop(), context, reservation, principal)
            reservation.shrink_to(held)
            stored, rejected = stored + result.stored_objects, rejected + result.rejected_spans
            received += result.received
            if result.message and result.message not in problems:
                problems.append(result.message)
        return ExportResult(stored, rejected, "; ".join(problems[:MESSAGES_KEPT]) or None, received)

    async def _export_chunk(self, body: bytes, context: ExportContext, reservation: Reservation,
                            principal: Principal) -> ExportResult:
        signal, transport = context.signal, context.transport
        prepared = await self._prepare(body, context, reservation)
        if prepared.decode_failure is not None and prepared.decode_failure not in self._decode_failures:
            if len(self._decode_failures) >= 100:  # the causes carry text from payloads: bounded
                self._decode_failures.clear()
            self._decode_failures.add(prepared.decode_failure)
            log.error("a span could not be decoded (%s): it is rejected in partial_success, the rest stored; "
                      "please report this as a bug", prepared.decode_failure)
        rejected, problems = prepared.rejected_spans, list(prepared.problems)
        joins = signal == LOGS or bool(prepared.halves and self._join is not None)
        in_order = _HeldUntilWritten(self._join_order if joins else None, alone=signal == LOGS)
        async with in_order:
            if signal == LOGS:
                items = await self._completed_by_events(prepared, principal, reservation)
            else:
                partitions = prepared.partitions or [None] * len(prepared.objects)
                # Per distinct source, and Item's fields in order: keywords and a call per record
                # cost ~0.5 µs a record here (1.1 against 0.7 µs for the items and the spool's lists).
                controls = {source: self._controls_of(principal.name, source) for source in set(prepared.sources)}
                items = [Item(key, body, principal.bucket, spans, None, partition, controls[source])
                         for (key, body, spans), source, partition in zip(prepared.objects, prepared.sources,
                                                                          partitions)]
                await self._complete_with_known_events(prepared, principal, items)
            if items and self._spool is not None:
                spooled, puts_first = items, self._puts_first and not joins
                if puts_first:
                    spooled = await self._put_first(items)
                if spooled:
                    await self._append_to_spool(spooled, on_written=in_order.release, bucket_may_take=puts_first)
                metrics.count_acknowledged(len(items) - len(spooled), len(spooled))
            elif items:
                refused_objects, refused, cause = await self._put_directly(items)
                if refused:
                    rejected += refused
                    problems.append(f"{refused} {'log record' if signal == LOGS else 'span'}(s) could not be "
                                    f"stored: {cause}")
                    if signal == TRACES:
                        metrics.count_refused_spans(refused)
                metrics.count_acknowledged(len(items) - refused_objects, 0)
        if signal == LOGS:
            metrics.count_logs_export(transport, prepared.received, prepared.rejections)
        else:
            metrics.count_trace_export(transport, prepared.received, prepared.rejections, prepared.usage)
            metrics.count_sampled_out(principal.name, prepared.sampled_out)  # (a call's events are not a call)
        return ExportResult(len(items), rejected, "; ".join(problems) or None, prepared.received)

    async def _complete_with_known_events(self, prepared: PreparedExport, principal: Principal,
                                          items: list[Item]) -> None:
        """Keep the halves of records that GenAI events may complete; a record whose events are
        here already is stored completed."""
        if not prepared.halves or self._join is None:
            return
        try:
            found = await self._join.put_spans(principal.name, principal.bucket, prepared.halves)
        except OSError as error:
            self._join_failed(error)
            return  # the records are stored as they are; their events will find nothing to complete
        for half in prepared.halves:
            name = self._join.name(principal.name, half.pair)
            if half.index in found:
                events, completed_at = found[half.index]
                body = completed_object(half.key, orjson.loads(half.document), events, completed_at)[1]
                items[half.index] = items[half.index]._replace(body=body, join=name)
            else:
                items[half.index] = items[half.index]._replace(join=name)

    async def _completed_by_events(self, prepared: PreparedExport, principal: Principal,
                                   reservation: Reservation) -> list[Item]:
        """Keep the events; the records they complete, built again, under their own keys."""
        if not prepared.events:
            return []
        if self._join is None:
            raise Unavailable("this bridge keeps no join store; GenAI event logs cannot be taken")
        try:
            completed = await self._join.put_events(principal.name, prepared.events)
        except JoinFull as full:
            raise Unavailable(f"{full}; retry later") from None
        except OSError as error:
            self._join_failed(error)
            raise InvalidRequest(f"the GenAI events cannot be kept ({error.strerror}); see the bridge's log") from None
        items = []
        for name, envelope, events, completed_at in completed:
            try:
                key, body = completed_object(envelope["key"], envelope["record"], events, completed_at)
            except (TypeError, KeyError, ValueError, AttributeError) as error:  # damaged on disk: joins nothing
                log.warning("a stored record's half cannot be read back (%s: %s); its events stay unjoined",
                            type(error).__name__, error)
                continue
            reservation.add(len(body))
            partition = partition_dir(principal.prefix, envelope["record"]) if self._config.writes_batches else None
            items.append(Item(key, body, envelope["bucket"], len(events), name, partition,
                              self._controls_of(principal.name, envelope["record"].get("source"))))
        return items

    async def latest_body(self, join_name: str, body: bytes) -> bytes:
        """The body a spooled record's object must hold now: completed with every GenAI event the
        join store has for it (another process may have received them), else `body` as spooled."""
        if self._join is None:
            return body
        latest = self._join.latest(join_name)
        if latest is None:
            return body
        half, events, completed_at = latest
        try:
            return completed_object(half["key"], half["record"], events, completed_at)[1]
        except (TypeError, KeyError, ValueError, AttributeError):
            return body

    async def _prepare(self, body: bytes, context: ExportContext, reservation: Reservation) -> PreparedExport:
        """The export's objects, their bytes added to `reservation` (503 when they cannot be held now)."""
        if len(body) <= INLINE_MAX_BYTES and context.max_request_bytes >= INLINE_MAX_BYTES:
            try:
                plain = inflate(body, context.coding, INLINE_MAX_BYTES) if context.coding else body
            except PayloadTooLarge:
                pass  # a small compressed body that inflates large: a decode process inflates it
            else:  # (`replace` builds a new context, ~4 µs: not for the plain bodies most exports are)
                prepared = prepare_export(plain, replace(context, coding="") if context.coding else context)
                reservation.add(prepared.output_bytes)
                return prepared
        held = reservation.size
        # Room for what it will plausibly decode to, not for the most it may: decode processes are
        # few (--decode-processes), so the exports waiting for one hold only their bodies, and
        # each result is held to the budget as it comes back (503 only when it is really spent).
        reservation.add(expected_output_bytes(len(body), context))
        prepared = await self._pool.prepare(body, context)
        grown = held + prepared.output_bytes - reservation.size
        if grown > 0:
            reservation.add(grown)
        else:
            reservation.shrink_to(held + prepared.output_bytes)
        return prepared

    async def _store(self, item: Item) -> None:
        await self._sink.put(item.key, item.body, JSON_CONTENT_TYPE, bucket=item.bucket, controls=item.controls)

    async def _put_directly(self, items: list[Item]) -> tuple[int, int, str | None]:
        """Put every object; (objects and spans refused for good, a cause). Raises Unavailable when a
        retry helps."""
        slots = asyncio.Semaphore(self._config.upload_concurrency)

        async def put(item: Item) -> None:
            async with slots:
                await self._store(item)

        outcomes = await asyncio.gather(*(put(item) for item in items), return_exceptions=True)
        retryable = [o for o in outcomes if isinstance(o, BaseException) and not _permanent(o)]
        if retryable:
            self._report_failure(retryable[0])
            raise Unavailable(f"could not store {len(retryable)} of {len(outcomes)} object(s) "
                              f"({_describe(retryable[0])}); retry later")
        refused = [(o, item.spans) for o, item in zip(outcomes, items) if isinstance(o, BaseException)]
        if refused:
            self._report_failure(refused[0][0])
            return len(refused), sum(spans for _, spans in refused), _describe(refused[0][0])
        if self._last_failure is not None:
            log.info("writes to %s succeed again", self._sink.description)
            self._last_failure = None
        return 0, 0, None

    async def _put_first(self, items: list[Item]) -> list[Item]:
        """--ack auto: put the objects now; those the bucket has not taken within --ack-wait-seconds,
        or failed to, are returned to be spooled (and retried, or quarantined, from there as with
        --ack spool). After a failure the spool alone is used for a while, for that bucket: while it
        is down, its exports are not each held up by a try that fails, and other keys' buckets are
        still put to first."""
        loop, bucket = asyncio.get_running_loop(), items[0].bucket  # (an export's objects share its key's bucket)
        if loop.time() < self._spool_only_until.get(bucket, 0.0):
            return items
        wait = self._config.ack_wait_seconds
        if len(items) == 1:  # an OpenRouter delivery: put here, no putter coroutine
            item = items[0]
            try:
                async with asyncio.timeout(wait):
                    await self._store(item)
            except Exception as failure:  # (a TimeoutError when late) the spool's way handles it
                self._put_first_failed(loop, bucket, [failure])
                return items
            return []
        stored = [False] * len(items)
        failures: list[Exception] = []
        waiting = iter(enumerate(items))

        async def putter() -> None:  # --upload-concurrency of them, not a task per object
            for index, item in waiting:
                if failures:  # the rest are spooled, not tried against a bucket that fails
                    return
                try:
                    await self._store(item)
                except Exception as failure:
                    failures.append(failure)
                    return
                stored[index] = True

        try:
            async with asyncio.timeout(wait):
                await asyncio.gather(*(putter() for _ in range(min(self._config.upload_concurrency, len(items)))))
        except TimeoutError:
            pass
        if all(stored):
            return []
        self._put_first_failed(loop, bucket, failures)
        return [item for item, done in zip(items, stored) if not done]

    def _put_first_failed(self, loop: asyncio.AbstractEventLoop, bucket: str | None,
                          failures: list[Exception]) -> None:
        self._spool_only_until[bucket] = loop.time() + SPOOL_ONLY_SECONDS
        expected = (SinkError, TimeoutError)  # refused, failing, or late
        unexpected = next((failure for failure in failures if not isinstance(failure, expected)), None)
        if unexpected is not None:  # the uploader meets it again, and reports it as it does
            log.error("unexpected failure of a put before the answer; its objects are spooled", exc_info=unexpected)

    async def _append_to_spool(self, items: list[Item], on_written: Callable[[], None] | None = None,
                               bucket_may_take: bool = False) -> None:
        """`bucket_may_take`: the objects may be put first when sent again (--ack auto), so objects
        larger than the whole spool are told to retry (503), not to give up (413)."""
        try:
            partitions = [item.partition for item in items] if self._config.writes_batches else None
            await self._spool.append([(item.key, item.body, item.bucket) for item in items],
                                     [item.join for item in items], on_written, partitions,
                                     trace_objects=self._config.writes_objects,
                                     controls=[item.controls for item in items])
        except SpoolTooSmall as too_large:
            if bucket_may_take:
                raise Unavailable(f"{too_large} (--spool-max-bytes), and the bucket did not take it now; "
                                  "retry later") from None
            raise PayloadTooLarge(f"{too_large} (--spool-max-bytes); send smaller batches") from None
        except SpoolFull as full:
            raise Unavailable(f"the spool is full ({full}); retry later") from None
        except OSError as error:
            self._report_failure(SinkError(f"cannot write the spool: {error}", retryable=True))
            raise Unavailable("cannot write the spool; retry later") from None

    def _join_failed(self, error: OSError) -> None:
        """A full or failing disk is told to retry (503); any other failure would fail again, so
        the export goes on (spans) or is refused for good (events) rather than be retried forever."""
        if error.errno in RETRYABLE_DISK_ERRORS:
            self._report_failure(SinkError(f"cannot write the join store: {error}", retryable=True))
            raise Unavailable("cannot write the join store; retry later") from None
        log.error("cannot write the join store (%s): records are stored without their GenAI events", error)

    def _report_failure(self, failure: BaseException) -> None:
        description = _describe(failure)
        if description != self._last_failure:  # log each distinct cause once, not once per request
            log.warning("cannot write to %s: %s", self._sink.description, description)
            self._last_failure = description
        if not isinstance(failure, SinkError):
            log.error("unexpected failure while storing objects", exc_info=failure)


class JoinOrder:
    """The order in which exports that keep or complete join halves reach the spool: a completed
    body must be queued after the body it completes. Trace exports, which keep span halves (and
    complete a record only with events already kept), go side by side, so that they share the
    spool's fsyncs; a logs export, which completes records kept before it, goes alone: after
    every trace export that came before it has written its entries, and before any that comes
    after it (which then waits: no logs export waits behind an endless stream of trace exports).
    Held from entering until the export's entries are written to the spool (`release`, not
    their fsync), or until leaving."""

    def __init__(self) -> None:
        self._sharing = 0  # trace exports inside
        self._alone = False  # a logs export inside
        self._alone_waiting = 0
        self._waiters: list[asyncio.Future] = []

    def _may_enter(self, alone: bool) -> bool:
        if alone:
            return not self._alone and not self._sharing
        return not self._alone and not self._alone_waiting

    async def acquire(self, *, alone: bool) -> None:
        while not self._may_enter(alone):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._alone_waiting += alone
            try:
                await waiter
            finally:
                self._alone_waiting -= alone
        if alone:
            self._alone = True
        else:
            self._sharing += 1

    def release(self, *, alone: bool) -> None:
        if alone:
            self._alone = False
        else:
            self._sharing -= 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _HeldUntilWritten:
    """Holds the join order (when given) from entering until `release` or until leaving."""

    def __init__(self, order: JoinOrder | None, *, alone: bool) -> None:
        self._order = order
        self._alone = alone
        self._held = False

    async def __aenter__(self) -> _HeldUntilWritten:
        if self._order is not None:
            await self._order.acquire(alone=self._alone)
            self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._order.release(alone=self._alone)

    async def __aexit__(self, *exc_info) -> None:
        self.release()


def _permanent(failure: BaseException) -> bool:
    return isinstance(failure, SinkError) and not failure.retryable


def _describe(failure: BaseException) -> str:
    return failure.message if isinstance(failure, SinkError) else f"{type(failure).__name__}: {failure}"
