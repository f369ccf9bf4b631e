"""OTLP logs export requests in (JSON and protobuf): the GenAI event records an LLM call's span is
completed with (the response is `receive.responses.encode_response(..., logs=True)`).

Only what joins a record is kept: log records that name a GenAI event (`event_name`, or the older
`event.name` attribute, starting `gen_ai.`) and carry the trace and span id of their call. Every
other log record is counted (`ignored`) and let go: the bridge stores LLM calls, not logs.
Total like `otlp`: a body that is not an export request raises `InvalidRequest` (400); a log
record that cannot be read is rejected alone and counted. Must not know about records, keys or
files (that is `join`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)

from .otlp import JSON
from .otlp_json import _array, _get, _hex_id, _json_attributes, _json_value, _object, _text, _uint64, json_request_parts
from .otlp_protobuf import _pb_attributes, _pb_id, _pb_value, protobuf_request
from .spans import SpanProblem

GENAI_EVENT_PREFIX = "gen_ai."
EVENT_NAME_ATTRIBUTE = "event.name"  # where event names lived before LogRecord.event_name


@dataclass(slots=True)
class LogEvent:
    """One GenAI event record, addressed to the span of its call."""

    trace_id: str
    span_id: str
    name: str
    time_unix_nano: int
    body: Any
    attributes: dict[str, Any]

    def as_span_event(self) -> dict[str, Any]:
        """The event as the span events `conventions` read: the body's fields (`content`,
        `message`, `finish_reason`, ...) beside the attributes."""
        attributes = dict(self.attributes)
        attributes.pop(EVENT_NAME_ATTRIBUTE, None)
        if isinstance(self.body, dict):
            attributes.update(self.body)
        elif self.body is not None:
            attributes["content"] = self.body
        return {"name": self.name, "time_unix_nano": self.time_unix_nano, "attributes": attributes}


@dataclass(slots=True)
class ParsedLogs:
    events: list[LogEvent] = field(default_factory=list)
    ignored: int = 0  # readable, but no GenAI event of a span
    rejected: int = 0
    first_problem: str | None = None

    def reject(self, problem: str, records: int = 1) -> None:
        self.rejected += records
        if self.first_problem is None:
            self.first_problem = problem


def _event(parsed: ParsedLogs, name: Any, trace_id: str | None, span_id: str | None, time_unix_nano: int,
           body: Any, attributes: dict[str, Any]) -> None:
    if not isinstance(name, str) or not name:
        name = attributes.get(EVENT_NAME_ATTRIBUTE)
    if not (isinstance(name, str) and name.startswith(GENAI_EVENT_PREFIX) and trace_id and span_id
            and trace_id.strip("0") and span_id.strip("0")):
        parsed.ignored += 1
        return
    parsed.events.append(LogEvent(trace_id, span_id, name, time_unix_nano, body, attributes))


def _json_record(parsed: ParsedLogs, raw: Any) -> None:
    record = _object(raw, "a log record")
    time_unix_nano = (_uint64(_get(record, "timeUnixNano", "time_unix_nano"), "timeUnixNano")
                      or _uint64(_get(record, "observedTimeUnixNano", "observed_time_unix_nano"),
                                 "observedTimeUnixNano"))
    _event(parsed, _text(_get(record, "eventName", "event_name"), "eventName"),
           _hex_id(_get(record, "traceId", "trace_id"), 16, "traceId", required=False),
           _hex_id(_get(record, "spanId", "span_id"), 8, "spanId", required=False),
           time_unix_nano, _json_value(record.get("body"), 1), _json_attributes(record.get("attributes")))


def parse_logs_json(body: bytes) -> ParsedLogs:
    parsed = ParsedLogs()
    for rl_index, resource_logs in enumerate(json_request_parts(body, "resourceLogs", "resource_logs")):
        try:
            all_scope_logs = _array(_get(_object(resource_logs, "resourceLogs"), "scopeLogs", "scope_logs"),
                                    "scopeLogs")
        except SpanProblem as exc:
            parsed.reject(f"resourceLogs[{rl_index}]: {exc}", 0)
            continue
        for sl_index, scope_logs in enumerate(all_scope_logs):
            where = f"resourceLogs[{rl_index}].scopeLogs[{sl_index}]"
            try:
                records = _array(_get(_object(scope_logs, where), "logRecords", "log_records"), "logRecords")
            except SpanProblem as exc:
                parsed.reject(f"{where}: {exc}", 0)
                continue
            for index, raw in enumerate(records):
                try:
                    _json_record(parsed, raw)
                except SpanProblem as exc:
                    parsed.reject(f"{where}.logRecords[{index}]: {exc}")
    return parsed


def parse_logs_protobuf(body: bytes) -> ParsedLogs:
    request = protobuf_request(ExportLogsServiceRequest, body)
    parsed = ParsedLogs()
    for rl_index, resource_logs in enumerate(request.resource_logs):
        for sl_index, scope_logs in enumerate(resource_logs.scope_logs):
            for index, raw in enumerate(scope_logs.log_records):
                try:
                    _event(parsed, raw.event_name, _pb_id(raw.trace_id, 16, "traceId", required=False),
                           _pb_id(raw.span_id, 8, "spanId", required=False),
                           raw.time_unix_nano or raw.observed_time_unix_nano,
                           _pb_value(raw.body, 1) if raw.HasField("body") else None, _pb_attributes(raw.attributes))
                except SpanProblem as exc:
                    parsed.reject(f"resourceLogs[{rl_index}].scopeLogs[{sl_index}].logRecords[{index}]: {exc}")
    return parsed


def parse_logs(body: bytes, encoding: str) -> ParsedLogs:
    return parse_logs_json(body) if encoding == JSON else parse_logs_protobuf(body)
