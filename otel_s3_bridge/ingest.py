"""The one consume path every receiver calls: decode -> key -> encode -> spool -> acknowledge.

Receivers hand over parsed spans and the authenticated key name; the answer is an
`ExportResult` or an `Unavailable` error. With the spool (`--ack spool`) an export is
acknowledged once its entries are fsynced in the spool; with `--ack upload` once every object is
in the sink. `InflightBytes` bounds the request bytes held in memory. Must not import aiohttp
or grpc.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import BridgeConfig
from .decode import decode
from .encode import JSON_CONTENT_TYPE, encode_json
from .errors import SinkError, Unavailable
from .keys import object_key
from .otlp import ParsedRequest
from .sink import ObjectSink
from .spool import Spool, SpoolFull

log = logging.getLogger("otel_s3_bridge.ingest")


@dataclass(frozen=True, slots=True)
class ExportResult:
    stored_objects: int
    rejected_spans: int
    message: str | None


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

    def release(self) -> None:
        self._owner.release(self.size)
        self.size = 0


class Ingestor:
    def __init__(self, config: BridgeConfig, sink: ObjectSink, spool: Spool | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._template = config.path_template
        self._prefix = config.prefix
        self._non_llm_spans = config.non_llm_spans
        self._sink = sink
        self._spool = spool
        self._clock = clock
        self._last_failure: str | None = None
        self.inflight = InflightBytes(config.max_inflight_bytes)
        self.accepting = True

    def check_accepting(self) -> None:
        """Called as a request arrives: once the bridge is stopping, new exports are told to retry."""
        if not self.accepting:
            raise Unavailable("the bridge is shutting down; retry later")

    def state(self) -> dict[str, int]:
        state = {"inflight_bytes": self.inflight.current}
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

    async def export(self, parsed: ParsedRequest, *, key_name: str | None, transport: str) -> ExportResult:
        received_at = self._clock()
        decoded = decode(parsed.spans, key_name=key_name, transport=transport,
                         received_at_unix_nano=received_at, non_llm_spans=self._non_llm_spans)
        objects = [(object_key(self._template, record, prefix=self._prefix, fallback_unix_nano=received_at),
                    encode_json(record)) for record in decoded.records]
        if objects and self._spool is not None:
            await self._append_to_spool(objects)
        elif objects:
            await self._put_directly(objects)
        problems = []
        if parsed.first_problem is not None:
            problems.append(f"{parsed.rejected_spans} span(s) rejected; first problem: {parsed.first_problem}")
        problems.extend(parsed.warnings)
        if decoded.dropped_spans:
            problems.append(f"{decoded.dropped_spans} span(s) of traces without LLM attributes dropped "
                            "(--non-llm-spans drop)")
        return ExportResult(len(objects), parsed.rejected_spans + decoded.dropped_spans,
                            "; ".join(problems) or None)

    async def _put_directly(self, objects: list[tuple[str, bytes]]) -> None:
        outcomes = await asyncio.gather(
            *(self._sink.put(key, body, JSON_CONTENT_TYPE) for key, body in objects), return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            self._report_failure(failures[0])
            raise Unavailable(f"could not store {len(failures)} of {len(objects)} object(s) "
                              f"({_describe(failures[0])}); retry later")
        if self._last_failure is not None:
            log.info("writes to %s succeed again", self._sink.description)
            self._last_failure = None

    async def _append_to_spool(self, objects: list[tuple[str, bytes]]) -> None:
        try:
            await self._spool.append(objects)
        except SpoolFull as full:
            raise Unavailable(f"the spool is full ({full}); retry later") from None
        except OSError as error:
            self._report_failure(SinkError(f"cannot write the spool: {error}", retryable=True))
            raise Unavailable("cannot write the spool; retry later") from None

    def _report_failure(self, failure: BaseException) -> None:
        description = _describe(failure)
        if description != self._last_failure:  # log each distinct cause once, not once per request
            log.warning("cannot write to %s: %s", self._sink.description, description)
            self._last_failure = description
        if not isinstance(failure, SinkError):
            log.error("unexpected failure while storing objects", exc_info=failure)


def _describe(failure: BaseException) -> str:
    return failure.message if isinstance(failure, SinkError) else f"{type(failure).__name__}: {failure}"
