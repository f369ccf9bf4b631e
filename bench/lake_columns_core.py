"""A prototype for `bench.lake_columns` only, never used by the bridge: one export's records as the
columns of the lake's schema, made where the records are (at ingest), so that a Parquet file would
be built without parsing stored JSON again. Typed for mypyc: the bench measures it compiled too.
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]

MISSING = object()


def _text(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)


def export_columns(records: list[dict[str, Any]], plain: list[str], plain_types: list[Any], json_names: list[str],
                   received_ms: int, schema: Any) -> Any:
    """A record batch of `schema` (the lake's): `plain` fields read as they are, the open-ended
    parts (`json_names`) as JSON text (orjson's output is UTF-8: viewed as strings, not checked),
    the span start and the time received as milliseconds, `scope` and `ingest` flattened."""
    columns: dict[str, Any] = {}
    for index in range(len(plain)):
        name = plain[index]
        columns[name] = pa.array([record.get(name) for record in records], type=plain_types[index])
    resources: dict[int, bytes | None] = {}  # the spans of one resource share its dict: encoded once
    for name in json_names:
        texts: list[bytes | None] = []
        for record in records:
            value = record.get(name)
            if name == "resource":
                text = resources.get(id(value), MISSING)
                if text is MISSING:
                    text = resources[id(value)] = _text(value)
                texts.append(text)  # type: ignore[arg-type]
            elif value is None:
                texts.append(None)
            elif type(value) is list and not value:
                texts.append(b"[]")
            else:
                texts.append(orjson.dumps(value))
        columns[name] = pa.array(texts, type=pa.binary()).view(pa.string())
    starts: list[int | None] = []
    scope_names: list[Any] = []
    scope_versions: list[Any] = []
    key_names: list[Any] = []
    transports: list[Any] = []
    for record in records:
        start = record.get("start_time_unix_nano")
        starts.append(None if start is None else start // 1_000_000)
        scope = record.get("scope") or {}
        scope_names.append(scope.get("name"))
        scope_versions.append(scope.get("version"))
        ingest = record.get("ingest") or {}
        key_names.append(ingest.get("key_name"))
        transports.append(ingest.get("transport"))
    count = len(records)
    columns["timestamp"] = pa.array(starts, type=pa.int64()).cast(schema.field("timestamp").type)
    columns["scope_name"] = pa.array(scope_names, type=pa.string())
    columns["scope_version"] = pa.array(scope_versions, type=pa.string())
    columns["ingest_key_name"] = pa.array(key_names, type=pa.string())
    columns["ingest_transport"] = pa.array(transports, type=pa.string())
    columns["ingest_received_at"] = pa.array([received_ms] * count, type=pa.int64()).cast(
        schema.field("ingest_received_at").type)
    columns["ingest_completed_at"] = pa.nulls(count, schema.field("ingest_completed_at").type)
    return pa.RecordBatch.from_arrays([columns[field.name] for field in schema], schema=schema)
