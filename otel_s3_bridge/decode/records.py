"""Spans -> LLM trace records (schema v1): the one decode path for every transport.

Pure and total: spans, the authenticated key name, the transport and the receive time go in;
records come out, and for any spans `otlp` produced every record can be encoded as JSON (values
are depth-bounded there, numbers range-checked here; a field that cannot be read is null).
Spans are grouped by OTLP trace id; each LLM call span (model or usage attributes in any
convention, and not a span its convention names a wrapper of calls) yields one record, and the
other spans of its group become `observations` of the call they sit under. Which spans are
calls is decided from each span alone, never from what else shares the export, so that an app
exporting span by span gets the same records as one exporting in batches. A group without a
call is dropped and counted (the default), or with `non_llm_spans="keep"` yields one `otlp`
record. Which attribute fills which field, and in what precedence, is the
conventions' business (`conventions/`); this module assembles the record. A value the payload
does not carry is null, never guessed. Must not do I/O, read clocks or know transports.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from .. import memo
from ..lake.record import SCHEMA
from ..values import INT64_MAX, INT64_MIN, as_text
from . import conventions
from .spans import Span

CONNECTION_TEST_SPAN: Final = "openrouter-connection-test"
COST_FIELDS: Final = ("input_cost", "output_cost", "cost")
REPORTED: Final = "reported"  # cost_source of a cost the sender reported (`pricing` estimates the others)
STATUS_NAMES: Final = {0: "unset", 1: "ok", 2: "error"}
KIND_NAMES: Final = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
NON_LLM_KEEP: Final = "keep"
NON_LLM_DROP: Final = "drop"


@dataclass(slots=True)
class DecodeResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    connection_tests: int = 0
    dropped_spans: int = 0
    failed_spans: int = 0  # calls a bug kept from being decoded: rejected alone, never a retry forever
    first_failure: str | None = None


# Spans of an export mostly start within the same few seconds: the text of a second is kept (`memo`).
_SECOND_TEXT: Final[dict[int, str]] = {}
SECOND_TEXT_LIMIT: Final = 4096
# ".000Z" ... ".999Z": a format spec per timestamp cost ~1.5 k instructions, two a span
_MILLISECONDS: Final[tuple[str, ...]] = tuple(f".{millis:03d}Z" for millis in range(1000))


def rfc3339(unix_nano: int) -> str:
    """`2026-09-28T10:01:02.318Z`: UTC with milliseconds."""
    seconds, rest = divmod(unix_nano, 1_000_000_000)
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        t = time.gmtime(seconds)
        text = memo.remember(_SECOND_TEXT, seconds, f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
                             f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}", SECOND_TEXT_LIMIT)
    return text + _MILLISECONDS[rest // 1_000_000]


def _duration_ms(start: int, end: int) -> float | None:
    return (end - start) / 1e6 if start and end >= start else None


def _events(span_events: list[dict[str, Any]], skip: set[int]) -> list[dict[str, Any]]:
    return [{"name": e["name"], "timestamp": rfc3339(e["time_unix_nano"]) if e["time_unix_nano"] else None,
             "time_unix_nano": e["time_unix_nano"] or None, "attributes": e["attributes"]}
            for index, e in enumerate(span_events) if index not in skip]


def _observation(span: Span) -> dict[str, Any]:
    return {
        "name": span.name,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "kind": KIND_NAMES.get(span.kind, str(span.kind)),
        "start_time_unix_nano": span.start_time_unix_nano or None,
        "end_time_unix_nano": span.end_time_unix_nano or None,
        "duration_ms": _duration_ms(span.start_time_unix_nano, span.end_time_unix_nano),
        "status": STATUS_NAMES.get(span.status_code, "unset"),
        "status_message": span.status_message or None,
        "attributes": span.attributes,
        "events": _events(span.events, set()),
    }


def _total_tokens(total: int | None, input_tokens: int | None, output_tokens: int | None) -> int | None:
    """The total as sent; else input + output when both are known (and the sum is an int64)."""
    if total is not None or input_tokens is None or output_tokens is None:
        return total
    summed = input_tokens + output_tokens
    return summed if INT64_MIN <= summed <= INT64_MAX else None


def build_record(span: Span, observations: list[Span], *, key_name: str | None, transport: str,
                 received_at: str) -> dict[str, Any]:
    """One schema-v1 record for an LLM span (or a non-LLM root) and its sibling spans."""
    a = conventions.attributes_of(span)
    start = span.start_time_unix_nano
    used_events: set[int] = set()
    f = a.pick_fields()
    prompt = conventions.prompt(a, span.events, used_events)
    completion, completion_finish_reason = conventions.completion(a, span.events, used_events)
    if completion and completion["text"] is not None:
        a.drop_duplicate("output.value", completion["text"])
    record = {
        "schema": SCHEMA,
        "trace_id": as_text(span.resource.get("openrouter.trace.id")) or span.trace_id,
        "otel_trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "generation_id": f["generation_id"],
        "name": f["name"] or span.name,
        "span_name": span.name,
        "timestamp": rfc3339(start) if start else None,
        "start_time_unix_nano": start or None,
        "end_time_unix_nano": span.end_time_unix_nano or None,
        "duration_ms": _duration_ms(start, span.end_time_unix_nano),
        "model": f["model"],
        "requested_model": f["requested_model"],
        "provider": f["provider"],
        "model_author": f["model_author"],
        "input_tokens": f["input_tokens"],
        "output_tokens": f["output_tokens"],
        "total_tokens": _total_tokens(f["total_tokens"], f["input_tokens"], f["output_tokens"]),
        "cached_tokens": f["cached_tokens"],
        "cache_write_tokens": f["cache_write_tokens"],
        "reasoning_tokens": f["reasoning_tokens"],
        "input_cost": f["input_cost"],
        "output_cost": f["output_cost"],
        "cost": f["cost"],
        "cost_source": REPORTED if any(f[name] is not None for name in COST_FIELDS) else None,
        "session_id": f["session_id"],
        "customer_id": f["customer_id"],
        "api_key_name": f["api_key_name"],
        "finish_reason": conventions.finish_reason(a, completion_finish_reason),
        "native_finish_reason": f["native_finish_reason"],
        "time_to_first_token_ms": conventions.time_to_first_token_ms(a, start),
        "status": STATUS_NAMES.get(span.status_code, "unset"),
        "status_message": conventions.status_message(span, a),
        "prompt": prompt,
        "completion": completion,
        "content_policy": "keep",
        "metadata": None,
        "observations": [_observation(other) for other in observations],
        "events": _events(span.events, used_events),
        "links": span.links,
        "attributes": None,
        "resource": span.resource,
        "scope": {"name": span.scope_name or None, "version": span.scope_version or None},
        "source": conventions.source_of(span, a),
        "ingest": {"received_at": received_at, "key_name": key_name, "transport": transport, "completed_at": None},
    }
    record["metadata"] = conventions.metadata(a)
    record["attributes"] = a.remaining()
    return record


# --- grouping --------------------------------------------------------------------------------------

def _ancestors(span: Span, by_id: dict[str, Span]) -> Iterable[str]:
    seen: set[str] = set()
    parent = span.parent_span_id
    while parent and parent in by_id and parent not in seen:
        yield parent
        seen.add(parent)
        parent = by_id[parent].parent_span_id


def iter_records(spans: Iterable[Span], result: DecodeResult, *, key_name: str | None, transport: str,
                 received_at_unix_nano: int, non_llm_spans: str = NON_LLM_DROP) -> Iterator[dict[str, Any]]:
    """The records of `spans`, one at a time (so that a caller can encode each and let it go);
    counts go into `result`."""
    received_at = rfc3339(received_at_unix_nano)
    groups: dict[str, list[Span]] = {}
    for span in spans:
        if span.name == CONNECTION_TEST_SPAN:
            result.connection_tests += 1
        else:
            groups.setdefault(span.trace_id, []).append(span)

    for group in groups.values():
        by_id = {span.span_id: span for span in group}
        record_spans = [span for span in group if conventions.is_call(span)]
        if not record_spans:
            if non_llm_spans == NON_LLM_DROP:
                result.dropped_spans += len(group)
                continue
            roots = [span for span in group if span.parent_span_id not in by_id] or group
            record_spans = [min(roots, key=lambda span: span.start_time_unix_nano)]
        record_ids = {span.span_id for span in record_spans}
        observations: dict[str, list[Span]] = {span.span_id: [] for span in record_spans}
        for span in group:
            if span.span_id not in record_ids:
                owner = next((a for a in _ancestors(span, by_id) if a in record_ids), record_spans[0].span_id)
                observations[owner].append(span)
        for span in record_spans:
            try:
                record = build_record(span, observations[span.span_id], key_name=key_name, transport=transport,
                                      received_at=received_at)
            except Exception as error:  # a bug: the same span would fail again, so it is rejected alone
                result.failed_spans += 1
                if result.first_failure is None:
                    result.first_failure = f"{type(error).__name__}: {error}"[:300]
                continue
            yield record


def decode(spans: Iterable[Span], *, key_name: str | None, transport: str, received_at_unix_nano: int,
           non_llm_spans: str = NON_LLM_DROP) -> DecodeResult:
    """Group spans by trace and build one record per LLM call (or per group without one)."""
    result = DecodeResult()
    result.records = list(iter_records(spans, result, key_name=key_name, transport=transport,
                                       received_at_unix_nano=received_at_unix_nano, non_llm_spans=non_llm_spans))
    return result


# --- GenAI event records (OTLP logs) ----------------------------------------------------------------

OPERATION_DETAILS_EVENT: Final = conventions.gen_ai.OPERATION_DETAILS_EVENT


def awaits_events(record: dict[str, Any]) -> bool:
    """Whether a record may still be completed by its call's GenAI event records: instrumentations
    that send content as events (OpenTelemetry's own, OpenLLMetry's without legacy attributes)
    leave the span with neither prompt nor completion."""
    return (record["source"] in conventions.CONTENT_IN_LOGS
            and record["prompt"] is None and record["completion"] is None)


def complete_record(record: dict[str, Any], events: list[dict[str, Any]],
                    completed_at_unix_nano: int) -> dict[str, Any]:
    """A stored record (as JSON types) with what its GenAI event records carry, read as the same
    conventions read span events: per-message events (`gen_ai.user.message`, `gen_ai.choice`, ...)
    and the attributes of an operation-details event (`gen_ai.input.messages`, ...) give the prompt,
    completion and finish reason where the record has none; events not used join `events`;
    `ingest.completed_at` says when (readers keep a call's version completed last). The same record,
    events and time always give the same result, whatever order the events came in."""
    details: dict[str, Any] = {}
    message_events = []
    for event in sorted(events, key=lambda event: (event["time_unix_nano"], event["name"])):
        if event["name"] == OPERATION_DETAILS_EVENT:
            details = {**event["attributes"], **details}
        else:
            message_events.append(event)
    a = conventions.Attributes(details, conventions.TABLES)
    used: set[int] = set()
    prompt = conventions.prompt(a, message_events, used)
    completion, reason = conventions.completion(a, message_events, used)
    content_dropped = record.get("content_policy") == "drop"  # its events' messages were dropped too
    if record["prompt"] is None and not content_dropped:
        record["prompt"] = prompt
    if record["completion"] is None and not content_dropped:
        record["completion"] = completion
    if record["finish_reason"] is None:
        record["finish_reason"] = conventions.finish_reason(a, reason)
    record["events"] = (record["events"] or []) + _events(message_events, used)
    ingest = record.get("ingest")
    if isinstance(ingest, dict):
        ingest["completed_at"] = rfc3339(completed_at_unix_nano)
    return record
