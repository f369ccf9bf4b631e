"""The one normalised form of an export's spans, whatever its encoding or transport: `Span`s in a
`ParsedRequest` that counts the spans rejected and keeps the first problem.

Shared by `otlp_json` and `otlp_protobuf`. Must not parse bytes or know LLM conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..values import frozen_reduce

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
# Resource attributes are copied into every record of a request; beyond this many bytes (JSON)
# a resource keeps its attributes in order while they fit and counts the others under this key.
MAX_RESOURCE_BYTES: Final = 16 * 1024
DROPPED_ATTRIBUTES_KEY: Final = "otel_s3_bridge.dropped_attributes_count"
# Scope name and version are copied into every record too; longer ones are cut.
MAX_SCOPE_TEXT: Final = 1024


@dataclass(slots=True, init=False)
class Span:
    """One OTLP span with its resource and scope, values already plain Python (str, int, float, ...)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    resource: dict[str, Any]
    scope_name: str
    scope_version: str

    # Written out, not generated: compiled, a dataclass's generated __init__ is interpreted Python
    # (~7 k instructions a span); this one is native.
    def __init__(self, trace_id: str, span_id: str, parent_span_id: str | None, name: str, kind: int,
                 start_time_unix_nano: int, end_time_unix_nano: int, status_code: int, status_message: str,
                 attributes: dict[str, Any], events: list[dict[str, Any]], links: list[dict[str, Any]],
                 resource: dict[str, Any], scope_name: str, scope_version: str) -> None:
        self.trace_id, self.span_id, self.parent_span_id, self.name = trace_id, span_id, parent_span_id, name
        self.kind, self.start_time_unix_nano, self.end_time_unix_nano = kind, start_time_unix_nano, end_time_unix_nano
        self.status_code, self.status_message = status_code, status_message
        self.attributes, self.events, self.links, self.resource = attributes, events, links, resource
        self.scope_name, self.scope_version = scope_name, scope_version

    def __reduce__(self):  # (pickled to and from decode processes: rebuilt through the __init__ above)
        return frozen_reduce(self)


@dataclass(slots=True)
class ParsedRequest:
    spans: list[Span] = field(default_factory=list)
    rejected_spans: int = 0
    first_problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    def reject(self, problem: str, spans: int = 1) -> None:
        self.rejected_spans += spans
        if self.first_problem is None:
            self.first_problem = problem


class SpanProblem(ValueError):
    """Part of a request cannot be read; the spans it concerns are rejected and counted."""


def bound_resource(attributes: dict[str, Any], max_bytes: int) -> tuple[dict[str, Any], int]:
    """The attributes as they go into records, and how many were left out to stay under `max_bytes`."""
    if len(orjson.dumps(attributes)) <= max_bytes:
        return attributes, 0
    kept: dict[str, Any] = {}
    size, dropped = 2, 0  # the braces
    for key, value in attributes.items():
        item = len(orjson.dumps({key: value})) - 1  # "key":value plus its comma
        if size + item <= max_bytes - 64:  # room for the count itself
            kept[key] = value
            size += item
        else:
            dropped += 1
    kept[DROPPED_ATTRIBUTES_KEY] = dropped
    return kept, dropped


def scope_text(value: str) -> str:
    return value if len(value) <= MAX_SCOPE_TEXT else value[:MAX_SCOPE_TEXT]
