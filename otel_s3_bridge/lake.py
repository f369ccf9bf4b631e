"""The `batch` layout's files: one stable columnar schema for records, and the pure functions that
turn a list of records into a Parquet (zstd) or gzip NDJSON file, name it from what it holds, and
place it in its Hive partition `{prefix}/lake/dt=YYYY-MM-DD/hour=HH/` (span start, UTC).

The schema is the record's (`proto/otel_s3_bridge/v1/trace_record.proto`) with fixed types, the same
for every writer and reader (DuckDB, Athena, Trino): scalars keep their proto types (tokens
int64, costs double), `timestamp` and `ingest.received_at` are UTC timestamps, the nested messages
`ingest` and `scope` become `ingest_*` / `scope_*` columns, and the open-ended parts (prompt,
completion, metadata, observations, events, links, attributes, resource) are JSON strings, which
every engine reads (`json_extract`) whatever shape a convention gave them. Partition values are in
the path only. A file's name is a digest of the identities of the records it holds, so writing the
same records again (a replay, a retried upload) overwrites the same object.
Must not do I/O or read clocks.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET, NDJSON = "parquet", "ndjson"
SUFFIXES = {PARQUET: ".parquet", NDJSON: ".ndjson.gz"}
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
        return gzip.compress(b"".join(orjson.dumps(record) + b"\n" for record in records), compresslevel=6,
                             mtime=0)  # mtime 0: the same records give the same bytes
    sink = pa.BufferOutputStream()
    pq.write_table(table(records), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def partition(record: dict[str, Any]) -> tuple[str, str]:
    """(dt, hour) of the record's span start in UTC; a record without one goes by its receipt."""
    nanos = record.get("start_time_unix_nano")
    if not isinstance(nanos, int) or nanos <= 0:
        received = _epoch_ms((record.get("ingest") or {}).get("received_at"))
        nanos = (received or 0) * 1_000_000
    moment = datetime.datetime.fromtimestamp(nanos / 1e9, datetime.UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")


def identity(record: dict[str, Any]) -> str:
    """What makes a record itself: its trace and span (the same LLM call sent again is the same)."""
    return f"{record.get('trace_id')}/{record.get('otel_trace_id')}/{record.get('span_id')}"


def file_key(prefix: str, records: list[dict[str, Any]], file_format: str) -> str:
    """`{prefix}/lake/dt=…/hour=…/{digest}{suffix}` for records of one partition; the digest covers
    their identities in order, so the same records always get the same key."""
    dt, hour = partition(records[0])
    digest = hashlib.sha256("\n".join(identity(record) for record in records).encode()).hexdigest()[:32]
    return f"{prefix}/lake/dt={dt}/hour={hour}/{digest}{SUFFIXES[file_format]}"


def by_partition(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by (dt, hour), each group in the order given."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(partition(record), []).append(record)
    return groups
