"""The `batch` layout's files: one stable columnar schema for records, and the pure functions that
turn a list of records into a Parquet (zstd) or gzip NDJSON file, name it from what it holds, and
place it in its Hive partition `{prefix}/lake/dt=YYYY-MM-DD/hour=HH/` (span start, UTC).

The schema is the record's (`proto/otel_s3_bridge/v1/trace_record.proto`) with fixed types, the same
for every writer and reader (DuckDB, Athena, Trino): scalars keep their proto types (tokens
int64, costs double), `timestamp` and `ingest.received_at` are UTC timestamps, the nested messages
`ingest` and `scope` become `ingest_*` / `scope_*` columns, and the open-ended parts (prompt,
completion, metadata, observations, events, links, attributes, resource) are JSON strings, which
every engine reads (`json_extract`) whatever shape a convention gave them. Partition values are in
the path only (`lake_keys` places files). Must not do I/O or read clocks.
"""

from __future__ import annotations

import datetime
import gzip
import io
from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .lake_keys import NDJSON

UTC_MS = pa.timestamp("ms", tz="UTC")
JSON_COLUMNS = ("prompt", "completion", "metadata", "observations", "events", "links", "attributes", "resource")
_STRINGS = ("schema", "trace_id", "otel_trace_id", "span_id", "parent_span_id", "generation_id", "name", "span_name")
_LLM_STRINGS = ("model", "requested_model", "provider", "model_author")
_TOKENS = ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")
_CALL_STRINGS = ("session_id", "customer_id", "api_key_name", "finish_reason", "native_finish_reason")

SCHEMA = pa.schema(
    [(name, pa.string()) for name in _STRINGS]
    + [("timestamp", UTC_MS), ("start_time_unix_nano", pa.int64()), ("end_time_unix_nano", pa.int64()),
       ("duration_ms", pa.float64())]
    + [(name, pa.string()) for name in _LLM_STRINGS]
    + [(name, pa.int64()) for name in _TOKENS]
    + [("input_cost", pa.float64()), ("output_cost", pa.float64()), ("cost", pa.float64())]
    + [(name, pa.string()) for name in _CALL_STRINGS]
    + [("time_to_first_token_ms", pa.float64()), ("status", pa.string()), ("status_message", pa.string())]
    + [(name, pa.string()) for name in JSON_COLUMNS]
    + [("scope_name", pa.string()), ("scope_version", pa.string()), ("source", pa.string()),
       ("ingest_received_at", UTC_MS), ("ingest_key_name", pa.string()), ("ingest_transport", pa.string())])


def _epoch_ms(rfc3339: Any) -> int | None:
    """`2026-09-28T10:01:02.318Z` -> Unix milliseconds; None for anything else."""
    if not isinstance(rfc3339, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def row(record: dict[str, Any]) -> dict[str, Any]:
    """One record as a row of `SCHEMA` (JSON parts as strings, nested messages flattened)."""
    out = {name: record.get(name) for name in SCHEMA.names if name in record and name not in JSON_COLUMNS}
    for name in JSON_COLUMNS:
        out[name] = _json(record.get(name))
    out["timestamp"] = _epoch_ms(record.get("timestamp"))
    scope, ingest = record.get("scope") or {}, record.get("ingest") or {}
    out.update(scope_name=scope.get("name"), scope_version=scope.get("version"),
               ingest_received_at=_epoch_ms(ingest.get("received_at")), ingest_key_name=ingest.get("key_name"),
               ingest_transport=ingest.get("transport"))
    return out


def table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([row(record) for record in records], schema=SCHEMA)


def encode(records: list[dict[str, Any]], file_format: str) -> bytes:
    """The file's bytes: Parquet with zstd, or NDJSON of the records as stored, gzip-compressed."""
    if file_format == NDJSON:
        return encode_lines([b"".join(orjson.dumps(record) + b"\n" for record in records)])
    return encode_parts([records])


def encode_lines(chunks: Iterable[bytes]) -> bytes:
    """A gzip NDJSON file of lines given a chunk at a time (no Content-Encoding: it is an archive)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as stream:  # mtime 0: the same bytes
        for chunk in chunks:
            stream.write(chunk)
    return out.getvalue()


def encode_parts(parts: Iterable[list[dict[str, Any]]]) -> bytes:
    """A Parquet (zstd) file of records given a part at a time (a row group each), so that only one
    part is ever held as Python objects."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, SCHEMA, compression="zstd") as writer:
        for records in parts:
            writer.write_table(table(records))
    return sink.getvalue().to_pybytes()
