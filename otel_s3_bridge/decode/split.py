"""A large trace export split into smaller ones of whole traces, so that its records can be decoded
and spooled a chunk at a time: the memory an export needs no longer grows with its decoded size.

Each chunk is an export request of its own, in the request's encoding (plain: inflated), holding
at most `max_spans` spans (fewer when they are large: about `max_bytes` of request each) with
their resource and scope as sent. A trace is never cut: the conventions read a call's spans
together (parents, observations, one `otlp` record per trace). A request whose shape is not what
the parsers accept is returned whole, so that the one decode path gives the one answer. Raises
only `InvalidRequest` and `PayloadTooLarge`. Pure: must not decode LLM conventions or do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..errors import PayloadTooLarge
from .compression import inflate
from .otlp import JSON
from .otlp_json import json_request_parts
from .otlp_protobuf import protobuf_request

CHUNK_SPANS = 2_000
CHUNK_BYTES = 2 * 1024 * 1024


def split_export(body: bytes, encoding: str, coding: str, max_request_bytes: int, *,
                 max_spans: int = CHUNK_SPANS, max_bytes: int = CHUNK_BYTES) -> list[bytes]:
    if coding:
        body = inflate(body, coding, max_request_bytes)
    elif len(body) > max_request_bytes:
        raise PayloadTooLarge(f"the body is larger than the limit of {max_request_bytes} bytes")
    if encoding == JSON:
        return _split_json(body, max_spans, max_bytes)
    return _split_protobuf(body, max_spans, max_bytes)


def _chunks(spans: list[tuple[Any, int, int, Any]], total_bytes: int, max_spans: int,
            max_bytes: int) -> list[list[tuple[int, int, Any]]]:
    """(trace, resource index, scope index, span) -> chunks of whole traces, in the order sent."""
    per_chunk = max(1, min(max_spans, max_bytes * len(spans) // max(total_bytes, 1)))
    by_trace: dict[Any, list[tuple[int, int, Any]]] = {}
    for trace, resource, scope, span in spans:
        by_trace.setdefault(trace, []).append((resource, scope, span))
    chunks: list[list[tuple[int, int, Any]]] = [[]]
    for members in by_trace.values():
        if chunks[-1] and len(chunks[-1]) + len(members) > per_chunk:
            chunks.append([])
        chunks[-1].extend(members)
    return chunks


def _grouped(members: Iterable[tuple[int, int, Any]]) -> dict[int, dict[int, list[Any]]]:
    grouped: dict[int, dict[int, list[Any]]] = {}
    for resource, scope, span in members:
        grouped.setdefault(resource, {}).setdefault(scope, []).append(span)
    return grouped


def _split_json(body: bytes, max_spans: int, max_bytes: int) -> list[bytes]:
    resources = json_request_parts(body, "resourceSpans", "resource_spans")
    spans = []
    for r_index, resource in enumerate(resources):
        if not isinstance(resource, dict):
            return [body]
        scopes = resource.get("scopeSpans", resource.get("scope_spans")) or []
        if not isinstance(scopes, list):
            return [body]
        for s_index, scope in enumerate(scopes):
            members = scope.get("spans") or [] if isinstance(scope, dict) else None
            if not isinstance(members, list):
                return [body]
            for span in members:
                trace = span.get("traceId", span.get("trace_id")) if isinstance(span, dict) else None
                spans.append((trace if isinstance(trace, str) else id(span), r_index, s_index, span))
    chunks = _chunks(spans, len(body), max_spans, max_bytes)
    if len(chunks) < 2:
        return [body]
    documents = []
    for members in chunks:
        parts = []
        for r_index, scopes in _grouped(members).items():
            resource = {k: v for k, v in resources[r_index].items() if k not in ("scopeSpans", "scope_spans")}
            scope_list = resources[r_index].get("scopeSpans", resources[r_index].get("scope_spans")) or []
            resource["scopeSpans"] = [{**{k: v for k, v in scope_list[s_index].items() if k != "spans"},
                                       "spans": chosen} for s_index, chosen in scopes.items()]
            parts.append(resource)
        documents.append(orjson.dumps({"resourceSpans": parts}))
    return documents


def _split_protobuf(body: bytes, max_spans: int, max_bytes: int) -> list[bytes]:
    request = protobuf_request(ExportTraceServiceRequest, body)
    spans = [(span.trace_id, r_index, s_index, span)
             for r_index, resource in enumerate(request.resource_spans)
             for s_index, scope in enumerate(resource.scope_spans) for span in scope.spans]
    chunks = _chunks(spans, len(body), max_spans, max_bytes)
    if len(chunks) < 2:
        return [body]
    documents = []
    for members in chunks:
        chunk = ExportTraceServiceRequest()
        for r_index, scopes in _grouped(members).items():
            original = request.resource_spans[r_index]
            resource = chunk.resource_spans.add(schema_url=original.schema_url)
            resource.resource.CopyFrom(original.resource)
            for s_index, chosen in scopes.items():
                scope = resource.scope_spans.add(schema_url=original.scope_spans[s_index].schema_url)
                scope.scope.CopyFrom(original.scope_spans[s_index].scope)
                scope.spans.extend(chosen)
        documents.append(chunk.SerializeToString())
    return documents
