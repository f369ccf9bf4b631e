"""One export request's bytes -> the objects to store: inflate, parse, decode, key, encode.

A logs export is inflated and parsed the same way into the GenAI events it holds, grouped by
the span they belong to (`join` stores them and completes records). A record that may still be
completed by such events comes with its `SpanHalf`: its key and body, for `join` to keep.

The one pure path every transport's request takes, in the event loop for small requests or in a
decode process for large ones (`decode.pool`): everything it needs comes in as arguments
(`ExportContext`, picklable), everything it found goes out in a `PreparedExport`, so that where
it runs changes nothing. Memory is bounded by the context: the body by `max_request_bytes` once
inflated, the encoded objects by `max_output_bytes` (beyond: `PayloadTooLarge`, the export can
never be held), and records are encoded one at a time and let go. The sending key's policy
(`govern`) is applied to each record (and to a logs export's events) before it is encoded, so
nothing it removes is ever spooled or kept for a join. Raises only `InvalidRequest` and
`PayloadTooLarge`. Must not do I/O or read clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ..enrich.pricing import ESTIMATED, PriceBook, price_record
from ..errors import PayloadTooLarge, RecordsTooLarge
from ..govern.policy import RecordPolicy
from ..govern.records import govern_call_events, govern_record
from ..lake.encode import encode_json
from ..lake.keys import KeyTemplate, object_key
from ..lake.partitions import partition_dir
from ..values import frozen_reduce
from . import conventions, otlp
from .compression import inflate
from .otlp_logs import parse_logs
from .records import DecodeResult, awaits_events, complete_record, iter_records

TRACES: Final = "traces"
LOGS: Final = "logs"
# What the stored records of an export used, for metrics: (source, model, provider, status) ->
# [calls, input, output, cached and reasoning tokens, reported cost, estimated cost].
Usage = dict[tuple[str, str | None, str | None, str | None], list]


@dataclass(frozen=True, slots=True)
class ExportContext:
    encoding: str  # otlp.JSON or otlp.PROTOBUF
    coding: str  # Content-Encoding still to undo ("" when the bytes are plain)
    key_name: str | None
    transport: str
    received_at_unix_nano: int
    non_llm_spans: str
    template: KeyTemplate
    prefix: str
    max_request_bytes: int
    max_resource_bytes: int
    max_output_bytes: int
    signal: str = TRACES
    lake: bool = False  # records also go into `batch` layout files: find each one's lake partition
    prices: PriceBook = PriceBook()  # the deployment's own rates (--prices), before genai-prices' table
    policy: RecordPolicy = RecordPolicy()  # what the sending key's policy allows to be stored

    def __reduce__(self):
        return frozen_reduce(self)


@dataclass(frozen=True, slots=True)
class SpanHalf:
    """A stored record that GenAI event records may complete later: its object and how to build it."""

    index: int  # of its object in `PreparedExport.objects`
    pair: str  # trace id + span id
    key: str
    document: bytes  # the record as stored (the object's body itself, not a copy)

    def __reduce__(self):
        return frozen_reduce(self)


@dataclass(slots=True)
class PreparedExport:
    objects: list[tuple[str, bytes, int]]  # key, body, how many spans the record holds
    input_bytes: int  # the body, inflated
    output_bytes: int
    rejected_spans: int  # (log records, for a logs export)
    problems: list[str]
    halves: list[SpanHalf] = field(default_factory=list)
    events: dict[str, list[dict]] = field(default_factory=dict)  # logs: pair -> its GenAI events
    received: int = 0  # spans (log records) in the export
    rejections: dict[str, int] = field(default_factory=dict)  # of `rejected_spans`, by reason
    usage: Usage = field(default_factory=dict)
    partitions: list[str] = field(default_factory=list)  # with `lake`: each object's lake partition
    sources: list[str] = field(default_factory=list)  # each object's record's instrumentation (its `source`)
    decode_failure: str | None = None  # a span a bug kept from being decoded (the first), for the log
    sampled_out: int = 0  # calls (logs: calls' events) the key's policy samples out: acknowledged, not stored


def _count(value: Any) -> int:
    return value if type(value) is int else 0


def _add_usage(usage: Usage, record: dict[str, Any]) -> None:
    tally = usage.get(key := (record["source"], record["model"], record["provider"], record["status"]))
    if tally is None:
        tally = usage[key] = [0, 0, 0, 0, 0, 0.0, 0.0]
    tally[0] += 1
    # Written out, not a loop over the names: this runs for every record (a loop cost ~3 k instructions).
    tally[1] += _count(record["input_tokens"])
    tally[2] += _count(record["output_tokens"])
    tally[3] += _count(record["cached_tokens"])
    tally[4] += _count(record["reasoning_tokens"])
    cost = record["cost"]
    if isinstance(cost, (int, float)) and cost == cost and 0 <= cost < float("inf"):
        tally[6 if record["cost_source"] == ESTIMATED else 5] += cost


def prepare_export(body: bytes, context: ExportContext) -> PreparedExport:
    if context.coding:
        body = inflate(body, context.coding, context.max_request_bytes)
    elif len(body) > context.max_request_bytes:
        raise PayloadTooLarge(f"the body is larger than the limit of {context.max_request_bytes} bytes")
    if context.signal == LOGS:
        return _prepare_logs(body, context)
    parsed = otlp.parse(body, context.encoding, max_resource_bytes=context.max_resource_bytes)
    decoded = DecodeResult()
    objects: list[tuple[str, bytes, int]] = []
    halves: list[SpanHalf] = []
    partitions: list[str] = []
    sources: list[str] = []
    usage: Usage = {}
    output_bytes = sampled_out = 0
    policy = context.policy
    governed = not policy.changes_nothing
    for record in iter_records(parsed.spans, decoded, key_name=context.key_name, transport=context.transport,
                               received_at_unix_nano=context.received_at_unix_nano,
                               non_llm_spans=context.non_llm_spans):
        if governed and not govern_record(record, policy, conventions.PLACES):
            sampled_out += 1
            continue
        price_record(record, context.prices, context.received_at_unix_nano)
        key = object_key(context.template, record, prefix=context.prefix,
                         fallback_unix_nano=context.received_at_unix_nano)
        encoded = encode_json(record)
        output_bytes += len(encoded) + len(key)
        if awaits_events(record):
            halves.append(SpanHalf(len(objects), record["otel_trace_id"] + record["span_id"], key, encoded))
        if output_bytes > context.max_output_bytes:
            raise RecordsTooLarge(f"the records decoded from this export exceed {context.max_output_bytes} bytes "
                                  "(--max-inflight-bytes); send smaller batches")
        objects.append((key, encoded, 1 + len(record["observations"])))
        sources.append(record["source"])
        if context.lake:
            partitions.append(partition_dir(context.prefix, record))
        _add_usage(usage, record)
    problems = []
    if parsed.first_problem is not None:
        problems.append(f"{parsed.rejected_spans} span(s) rejected; first problem: {parsed.first_problem}")
    problems.extend(parsed.warnings)
    if decoded.dropped_spans:
        problems.append(f"{decoded.dropped_spans} span(s) of traces without an LLM call dropped "
                        "(--non-llm-spans drop)")
    if decoded.failed_spans:
        problems.append(f"{decoded.failed_spans} span(s) could not be decoded, a fault of the bridge's "
                        f"({decoded.first_failure}); the others are stored")
    rejected = parsed.rejected_spans + decoded.dropped_spans + decoded.failed_spans
    return PreparedExport(objects, len(body), output_bytes, rejected, problems, halves,
                          received=len(parsed.spans) + parsed.rejected_spans,
                          rejections={"invalid": parsed.rejected_spans + decoded.failed_spans,
                                      "non_llm": decoded.dropped_spans},
                          usage=usage, partitions=partitions, sources=sources, decode_failure=decoded.first_failure,
                          sampled_out=sampled_out)


def _prepare_logs(body: bytes, context: ExportContext) -> PreparedExport:
    parsed = parse_logs(body, context.encoding)
    events: dict[str, list[dict]] = {}
    for event in parsed.events:
        events.setdefault(event.trace_id + event.span_id, []).append(event.as_span_event())
    sampled_out = 0
    if not context.policy.changes_nothing:
        for pair in list(events):
            governed = govern_call_events(pair[:32], events[pair], context.policy, conventions.PLACES)
            if governed is None:
                del events[pair]
                sampled_out += 1
            else:
                events[pair] = governed
    problems = []
    if parsed.first_problem is not None:
        problems.append(f"{parsed.rejected} log record(s) rejected; first problem: {parsed.first_problem}")
    if parsed.ignored:
        problems.append(f"{parsed.ignored} log record(s) that are not GenAI events of a span dropped "
                        "(the bridge stores LLM calls)")
    return PreparedExport([], len(body), len(body), parsed.rejected + parsed.ignored, problems, events=events,
                          received=len(parsed.events) + parsed.rejected + parsed.ignored,
                          rejections={"invalid": parsed.rejected, "not_genai": parsed.ignored},
                          sampled_out=sampled_out)


def completed_object(key: str, record: dict[str, Any], events: list[dict[str, Any]],
                     completed_at_unix_nano: int) -> tuple[str, bytes]:
    """A stored record completed with its GenAI events (the last of them received at
    `completed_at_unix_nano`): (its own key, the new body)."""
    return key, encode_json(complete_record(record, events, completed_at_unix_nano))
