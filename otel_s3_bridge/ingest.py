"""The one consume path every receiver calls: decode -> key -> encode -> store -> acknowledge.

Receivers hand over parsed spans and the authenticated key name; the answer is an
`ExportResult` or an `Unavailable` error. The export is acknowledged only after every object
of the request is stored. Must not import aiohttp or grpc.
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

log = logging.getLogger("otel_s3_bridge.ingest")


@dataclass(frozen=True, slots=True)
class ExportResult:
    stored_objects: int
    rejected_spans: int
    message: str | None


class Ingestor:
    def __init__(self, config: BridgeConfig, sink: ObjectSink,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._template = config.path_template
        self._prefix = config.prefix
        self._non_llm_spans = config.non_llm_spans
        self._sink = sink
        self._clock = clock
        self._last_failure: str | None = None

    async def export(self, parsed: ParsedRequest, *, key_name: str | None, transport: str) -> ExportResult:
        received_at = self._clock()
        decoded = decode(parsed.spans, key_name=key_name, transport=transport,
                         received_at_unix_nano=received_at, non_llm_spans=self._non_llm_spans)
        objects = [(object_key(self._template, record, prefix=self._prefix, fallback_unix_nano=received_at),
                    encode_json(record)) for record in decoded.records]
        if objects:
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
            for key, _ in objects:
                log.debug("stored %s", key)
        problems = []
        if parsed.rejected_spans:
            problems.append(f"{parsed.rejected_spans} span(s) rejected; first problem: {parsed.first_problem}")
        if decoded.dropped_spans:
            problems.append(f"{decoded.dropped_spans} span(s) of traces without LLM attributes dropped "
                            "(--non-llm-spans drop)")
        return ExportResult(len(objects), parsed.rejected_spans + decoded.dropped_spans,
                            "; ".join(problems) or None)

    def _report_failure(self, failure: BaseException) -> None:
        description = _describe(failure)
        if description != self._last_failure:  # log each distinct cause once, not once per request
            log.warning("cannot write to %s: %s", self._sink.description, description)
            self._last_failure = description
        if not isinstance(failure, SinkError):
            log.error("unexpected failure while storing objects", exc_info=failure)


def _describe(failure: BaseException) -> str:
    return failure.message if isinstance(failure, SinkError) else f"{type(failure).__name__}: {failure}"
