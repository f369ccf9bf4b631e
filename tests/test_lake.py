"""The `batch` layout's files (`otel_s3_bridge.lake.schema`): the columnar schema is the record schema of
`proto/otel_s3_bridge/v1/trace_record.proto` with fixed types, Parquet files read back in DuckDB
with those types and the records' values, gzip NDJSON holds the records as stored, and file keys
are Hive partitions named from what they hold."""

from __future__ import annotations

import calendar
import datetime
import gzip
import io
import random

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf.descriptor import FieldDescriptor

from conftest import ROOT, capture_lines
from otel_s3_bridge.deliver import batch_writer
from otel_s3_bridge.lake import schema as lake_schema, partitions
from otel_s3_bridge.lake.encode import encode_json
from otel_s3_bridge.decode.records import decode, rfc3339
from otel_s3_bridge.decode.otlp import parse_json
from test_schema import schema  # noqa: F401  (the compiled .proto, a fixture)

FLATTENED = {"ingest", "scope"}  # small nested messages become `<name>_<field>` columns
TIMESTAMPS = {"timestamp", "ingest_received_at", "ingest_completed_at"}  # RFC 3339 strings in the record


def _records() -> list[dict]:
    lines = capture_lines("claude-code.ndjson") + capture_lines("codex.ndjson")
    lines.append((ROOT / "tests/data/openrouter-captures/codex-error-span.json").read_bytes())
    records = []
    for line in lines:
        records += decode(parse_json(line).spans, key_name="openrouter", transport="http/json",
                          received_at_unix_nano=1_790_606_100_000_000_000).records
    return records


def _expected_columns(message) -> dict[str, str]:
    """Column -> kind ('string', 'int64', 'double', 'timestamp', 'json') from the .proto alone."""
    kinds = {FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_INT64: "int64",
             FieldDescriptor.TYPE_DOUBLE: "double"}
    columns = {}
    for field in message.DESCRIPTOR.fields:
        if field.name in FLATTENED:
            for inner in field.message_type.fields:
                columns[f"{field.name}_{inner.name}"] = kinds[inner.type]
        elif field.type == FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            columns[field.name] = "json"
        else:
            columns[field.name] = kinds[field.type]
    for name in TIMESTAMPS:
        columns[name] = "timestamp"
    return columns


def test_the_columnar_schema_is_the_record_schema_with_fixed_types(schema):  # noqa: F811
    arrow_kinds = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "double", lake_schema.UTC_MS: "timestamp"}
    actual = {field.name: arrow_kinds[field.type] for field in lake_schema.SCHEMA}
    expected = _expected_columns(schema.TraceRecord)
    for name in lake_schema.JSON_COLUMNS:
        assert expected[name] == "json"
        expected[name] = "string"  # JSON text
    assert actual == expected


def test_parquet_reads_back_in_duckdb_with_types_and_values(tmp_path):
    records = _records()
    path = tmp_path / "records.parquet"
    path.write_bytes(lake_schema.encode(records, partitions.PARQUET))
    connection = duckdb.connect()
    types = dict(connection.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path}')")
                 .fetchall())
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE" and types["ingest_received_at"] == types["timestamp"]
    assert types["input_tokens"] == "BIGINT" and types["cost"] == "DOUBLE" and types["prompt"] == "VARCHAR"
    count, tokens, cost, sessions = connection.execute(
        f"SELECT count(*), sum(input_tokens), sum(cost), count(DISTINCT session_id) FROM '{path}'").fetchone()
    assert count == len(records)
    assert tokens == sum(record["input_tokens"] or 0 for record in records)
    assert cost == pytest.approx(sum(record["cost"] or 0 for record in records))
    assert sessions == len({record["session_id"] for record in records if record["session_id"]})
    first = records[0]
    timestamp, role, transport = connection.execute(
        f"SELECT epoch_ms(timestamp), json_extract_string(prompt, '$[0].role'), ingest_transport FROM '{path}' "
        f"WHERE span_id = '{first['span_id']}'").fetchone()
    assert timestamp == first["start_time_unix_nano"] // 1_000_000
    assert role == first["prompt"][0]["role"] and transport == "http/json"


def test_ndjson_holds_the_records_as_stored_and_the_same_records_give_the_same_bytes():
    records = _records()
    data = lake_schema.encode(records, partitions.NDJSON)
    assert [orjson.loads(line) for line in gzip.decompress(data).splitlines()] == records
    assert lake_schema.encode(records, partitions.NDJSON) == data


def test_file_keys_are_hive_partitions_named_from_what_they_hold(tmp_path):
    records = _records()
    groups = partitions.by_partition(records)
    assert sum(len(group) for group in groups.values()) == len(records)

    def key_of(group):
        return partitions.file_key(partitions.partition_dir("openrouter-traces", group[0]),
                                  map(partitions.identity, group), partitions.PARQUET)

    for (dt, hour), group in groups.items():
        key = key_of(group)
        assert key.startswith(f"openrouter-traces/lake/dt={dt}/hour={hour}/") and key.endswith(".parquet")
        assert key_of(group[::-1]) == key  # the same records in any order: the same key
        if len(group) > 1:
            assert key_of(group[1:]) != key
            # Different records, as many: a different file.
            assert key_of(group[:1]) != key_of(group[1:2])
        target = tmp_path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lake_schema.encode(group, partitions.PARQUET))
    # Partition values come from the path: DuckDB's Hive partitioning reads them back.
    rows = duckdb.connect().execute(
        f"SELECT dt, hour, count(*) FROM read_parquet('{tmp_path}/openrouter-traces/lake/*/*/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY ALL").fetchall()
    assert [(str(dt), str(hour).zfill(2), count) for dt, hour, count in rows] == \
        sorted((dt, hour, len(group)) for (dt, hour), group in groups.items())
    # The partition is the span start in UTC, to the hour.
    start = records[0]["start_time_unix_nano"]
    moment = datetime.datetime.fromtimestamp(start / 1e9, datetime.UTC)
    assert partitions.partition(records[0]) == (moment.strftime("%Y-%m-%d"), moment.strftime("%H"))


def test_a_table_of_some_columns_is_those_columns_of_the_whole_table():
    records = _records()
    whole = lake_schema.table(records)
    for columns in (["timestamp", "model", "cost"], ["ingest_key_name", "scope_name", "prompt", "input_tokens"],
                    list(lake_schema.SCHEMA.names)):
        assert lake_schema.table(records, columns).equals(whole.select(columns))


def test_the_batch_writers_parquet_holds_what_lake_table_makes_of_the_records(tmp_path, caplog):
    """The writer reads spooled bodies with DuckDB's JSON functions; `lake_schema.table` is the reference.
    Real records, and one with every awkward string a prompt can hold."""
    records = _records()
    awkward = dict(records[0], span_id="f" * 16, name="tab\there \u2028 \u202e \U0001f600 \x00\x1f \"q\" \\ é",
                   prompt=[{"role": "user", "content": "line\nbreak \u0085 \ud7ff \U0010ffff </script>"}],
                   metadata={"ключ": [1, 2.5, None, True], "": {}}, cost=None, input_tokens=2 ** 62,
                   timestamp="2026-11-30T23:59:59.999Z")
    records.append(awkward)
    bodies = [encode_json(record) for record in records]
    database = batch_writer.DuckDB(tmp_path)
    written = pq.read_table(io.BytesIO(batch_writer._build([(None, 0, 0, body) for body in bodies],
                                                           partitions.PARQUET, database)))
    database.close()
    expected = lake_schema.table(records)
    assert written.schema.equals(lake_schema.SCHEMA, check_metadata=False) and written.num_rows == len(records)
    for name in lake_schema.SCHEMA.names:
        if name in lake_schema.JSON_COLUMNS:  # the same JSON, whoever wrote the text
            assert [None if text is None else orjson.loads(text) for text in written.column(name).to_pylist()] \
                == [None if text is None else orjson.loads(text) for text in expected.column(name).to_pylist()], name
        else:
            assert written.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert list(tmp_path.iterdir()) == []  # nothing left behind (DuckDB's spill)
    assert "DuckDB could not read" not in caplog.text  # DuckDB wrote it, not the Python fallback


def test_a_part_streamed_to_duckdb_in_chunks_keeps_every_record_in_order_in_one_row_group(tmp_path, caplog):
    """More records than one chunk handed to DuckDB (`READ_RECORDS`): the same rows, in the spool's
    order, as `lake_schema.table` makes of them, in one row group per part."""
    base = _records()
    count = 2 * batch_writer.READ_RECORDS + 3
    records = [dict(base[n % len(base)], span_id=f"{n:016x}") for n in range(count)]
    database = batch_writer.DuckDB(tmp_path)
    data = batch_writer._build([(None, 0, 0, encode_json(record)) for record in records], partitions.PARQUET,
                               database)
    database.close()
    file = pq.ParquetFile(io.BytesIO(data))
    assert file.metadata.num_row_groups == 1 and file.metadata.num_rows == count
    written, expected = file.read(), lake_schema.table(records)
    for name in ("span_id", "trace_id", "timestamp", "model", "input_tokens", "cost", "ingest_received_at"):
        assert written.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert "DuckDB could not read" not in caplog.text


def test_a_chunk_duckdb_cannot_read_is_reported_and_encoded_in_python(tmp_path, caplog):
    """A body that is not UTF-8 (never written by the bridge: a defence) in a later chunk: DuckDB's
    read of the stream fails, the Python encoder is tried, and its own error is what the flush sees."""
    good = [encode_json(record) for record in _records()]
    bodies = (good * (batch_writer.READ_RECORDS // len(good) + 1))[:batch_writer.READ_RECORDS + 5]
    bodies.append(b'{"schema": "\xff"}')
    database = batch_writer.DuckDB(tmp_path)
    with pytest.raises(orjson.JSONDecodeError):
        batch_writer._build([(None, 0, 0, body) for body in bodies], partitions.PARQUET, database)
    database.close()
    assert "DuckDB could not read a batch of records" in caplog.text


def test_a_timestamps_milliseconds_are_exact():
    """Against integer division of the nanoseconds the text was written from: a float product
    (`int(datetime.timestamp() * 1000)`) ended one millisecond short for ~0.6 % of times, in the
    Python-built Parquet rows and in `compact`'s choice of a call's newest version."""
    generator = random.Random(7)
    moments = [generator.randrange(1, 253402300799 * 10 ** 9) for _ in range(20_000)]
    moments += [999_999, 1_000_000, 1_764_547_199_999_000_000, 253402300799 * 10 ** 9 + 999_999_999]
    wrong = [nanos for nanos in moments if lake_schema.epoch_ms(rfc3339(nanos)) != nanos // 1_000_000]
    assert wrong == []
    second = calendar.timegm((2026, 9, 28, 10, 1, 2))
    assert lake_schema.epoch_ms("2026-09-28T10:01:02+02:00") == (second - 7200) * 1000
    assert lake_schema.epoch_ms("2026-09-28T10:01:02.5") == second * 1000 + 500  # no zone: UTC
    for text in ("2026-13-28T10:01:02.318Z", "yesterday", "", None, 12):
        assert lake_schema.epoch_ms(text) is None
