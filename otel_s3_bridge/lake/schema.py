"""The `batch` layout's files: one stable columnar schema for records, and the pure functions that
turn a list of records into a Parquet (zstd) or gzip NDJSON file, name it from what it holds, and
place it in its Hive partition `{prefix}/lake/dt=YYYY-MM-DD/hour=HH/` (span start, UTC).

The schema is the record's (`proto/otel_s3_bridge/v1/trace_record.proto`) with fixed types, the same
for every writer and reader (DuckDB, Athena, Trino): scalars keep their proto types (tokens
int64, costs double), `timestamp` and `ingest.received_at` are UTC timestamps, the nested messages
`ingest` and `scope` become `ingest_*` / `scope_*` columns, and the open-ended parts (prompt,
completion, metadata, observations, events, links, attributes, resource) are JSON strings, which
every engine reads (`json_extract`) whatever shape a convention gave them. Partition values are in
the path only (`lake.partitions` places files). Must not do I/O or read clocks.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ..values import unix_nanos
from .partitions import NDJSON

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
       ("ingest_received_at", UTC_MS), ("ingest_key_name", pa.string()), ("ingest_transport", pa.string())]
    # Added later, so last: files written before them read them as null, and a table over the lake
    # takes them with ADD COLUMNS.
    + [("cost_source", pa.string()), ("ingest_completed_at", UTC_MS), ("content_policy", pa.string())])

# Columns whose values repeat from row to row, dictionary-encoded; the others (ids, text, JSON,
# numbers) are not: a dictionary of values seen once is work and bytes for nothing (measured: files
# 11 % smaller, encoded 13 % faster).
REPEATED_COLUMNS = ("schema", "name", "span_name", *_LLM_STRINGS, *_CALL_STRINGS, "status", "scope_name",
                    "scope_version", "source", "ingest_key_name", "ingest_transport", "cost_source", "content_policy")

# One call may be stored more than once: a client resends an export whose answer it lost, a record
# is completed later by its GenAI event logs, `--layout both` and `compact` write it again. Readers
# keep one row per call (IDENTITY): the version completed last by its events, else the one received
# last. `report`, `query` and `compact` apply it; deploy/athena ships it as a view.
IDENTITY = ("trace_id", "span_id")
NEWEST_FIRST = "ingest_completed_at DESC NULLS LAST, ingest_received_at DESC NULLS LAST"
VERSION_COLUMNS = (*IDENTITY, "ingest_completed_at", "ingest_received_at")


def newest_versions_sql(relation: str, columns: list[str] | None = None) -> str:
    """SQL (DuckDB, Trino/Athena, Spark) keeping the newest version of each call in `relation`."""
    listed = ", ".join(f'"{name}"' for name in columns) if columns else "*"
    ranked = (f"SELECT *, row_number() OVER (PARTITION BY {', '.join(IDENTITY)} ORDER BY {NEWEST_FIRST}) "
              f"AS version_rank FROM {relation}")
    return f"SELECT {listed} FROM ({ranked}) WHERE version_rank = 1"


def epoch_ms(rfc3339: Any) -> int | None:
    """`2026-09-28T10:01:02.318Z` -> Unix milliseconds; None for anything else."""
    nanos = unix_nanos(rfc3339)
    return None if nanos is None else nanos // 1_000_000


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _nested(part: str, name: str, convert: Any = None) -> Any:
    def get(record: dict[str, Any]) -> Any:
        value = (record.get(part) or {}).get(name)
        return convert(value) if convert else value
    return get


def _plain(name: str) -> Any:
    return lambda record: record.get(name)


def _json_of(name: str) -> Any:
    return lambda record: _json(record.get(name))


# How each column is read from a record (as stored: JSON types).
_COLUMNS = {
    **{name: _plain(name) for name in SCHEMA.names},
    **{name: _json_of(name) for name in JSON_COLUMNS},
    "timestamp": lambda record: epoch_ms(record.get("timestamp")),
    "scope_name": _nested("scope", "name"),
    "scope_version": _nested("scope", "version"),
    "ingest_received_at": _nested("ingest", "received_at", epoch_ms),
    "ingest_key_name": _nested("ingest", "key_name"),
    "ingest_transport": _nested("ingest", "transport"),
    "ingest_completed_at": _nested("ingest", "completed_at", epoch_ms),
}


def row(record: dict[str, Any]) -> dict[str, Any]:
    """One record as a row of `SCHEMA` (JSON parts as strings, nested messages flattened)."""
    return {name: get(record) for name, get in _COLUMNS.items()}


def table(records: list[dict[str, Any]], columns: list[str] | None = None) -> pa.Table:
    """The records as a table of `SCHEMA`, or of its `columns` alone (the others are not built)."""
    if columns is None:
        return pa.Table.from_pylist([row(record) for record in records], schema=SCHEMA)
    getters = [(name, _COLUMNS[name]) for name in columns]
    schema = pa.schema([SCHEMA.field(name) for name in columns])
    return pa.Table.from_pylist([{name: get(record) for name, get in getters} for record in records], schema=schema)


def duckdb_rows_of_bodies(table: str, column: str) -> str:
    """DuckDB SQL reading stored records (JSON text, one a row in `column` of `table`) as `SCHEMA`
    rows: each top-level field with its type (the open-ended parts as JSON text, kept as written),
    `scope` and `ingest` flattened, the timestamps parsed (cast to `SCHEMA` afterwards)."""
    sql_types = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", UTC_MS: "VARCHAR"}
    types = {field.name: "JSON" if field.name in JSON_COLUMNS else sql_types[field.type]
             for field in SCHEMA if not field.name.startswith(("scope_", "ingest_"))}
    types["scope"] = {"name": "VARCHAR", "version": "VARCHAR"}
    types["ingest"] = {"received_at": "VARCHAR", "key_name": "VARCHAR", "transport": "VARCHAR",
                       "completed_at": "VARCHAR"}
    rfc3339 = "'%Y-%m-%dT%H:%M:%S.%gZ'"
    timestamps = {"timestamp": '"timestamp"', "ingest_received_at": "ingest.received_at",
                  "ingest_completed_at": "ingest.completed_at"}  # RFC 3339 text in the records
    select = []
    for name in SCHEMA.names:
        if name in timestamps:
            select.append(f'try_strptime({timestamps[name]}, {rfc3339})::TIMESTAMPTZ AS "{name}"')
        elif name.startswith(("ingest_", "scope_")):
            part, _, field = name.partition("_")
            select.append(f'{part}.{field} AS "{name}"')
        else:
            select.append(f'"{name}"')
    structure = orjson.dumps(types).decode()  # names and types of our own: no quote to escape
    return (f"SELECT {', '.join(select)} FROM (SELECT unnest(from_json({column}, '{structure}')) "
            f"FROM {table})")


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
    return encode_tables(table(records) for records in parts)


def encode_tables(tables: Iterable[pa.Table]) -> bytes:
    """A Parquet (zstd) file of `SCHEMA` from tables given one at a time (a row group each; a
    table of compatible types is cast to `SCHEMA`)."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, SCHEMA, compression="zstd", use_dictionary=list(REPEATED_COLUMNS)) as writer:
        for part in tables:
            writer.write_table(part if part.schema.equals(SCHEMA) else part.cast(SCHEMA))
    return sink.getvalue().to_pybytes()
