"""deploy/athena/*.sql describe what the bridge writes: the batch-layout table's columns and types
are `lake_schema.SCHEMA`'s, the trace-layout table's columns are the record's top-level fields in the
.proto, and both project the partitions the bridge's keys use. (Athena itself is not here.)"""

from __future__ import annotations

import re

import pyarrow as pa

from conftest import ROOT
from otel_s3_bridge.lake import schema as lake_schema, partitions
from test_schema import schema  # noqa: F401  (the compiled .proto, a fixture)

ATHENA = ROOT / "deploy" / "athena"
ATHENA_TYPES = {pa.string(): "string", pa.int64(): "bigint", pa.float64(): "double", lake_schema.UTC_MS: "timestamp"}


def _columns(sql: str) -> list[tuple[str, str]]:
    body = sql.split("CREATE EXTERNAL TABLE", 1)[1].split("(", 1)[1].split("\n)", 1)[0]
    return re.findall(r"^\s*`([a-z_]+)` (.+?),?$", body, re.MULTILINE)


def test_the_batch_table_is_the_lake_schema_with_projected_hive_partitions():
    sql = (ATHENA / "batch-layout.sql").read_text()
    assert _columns(sql) == [(field.name, ATHENA_TYPES[field.type]) for field in lake_schema.SCHEMA]
    assert "PARTITIONED BY (`dt` string, `hour` string)" in sql and "STORED AS PARQUET" in sql
    location = re.search(r"'storage.location.template' = '([^']+)'", sql).group(1)
    record = {"start_time_unix_nano": 1_790_000_000_000_000_000}
    dt, hour = partitions.partition(record)
    folder = partitions.partition_dir("openrouter-traces", record) + "/"
    assert location.replace("s3://my-llm-traces/", "").replace("${dt}", dt).replace("${hour}", hour) == folder


def test_the_trace_table_has_the_record_fields(schema):  # noqa: F811
    sql = (ATHENA / "trace-layout.sql").read_text()
    columns = _columns(sql)
    assert [name for name, _ in columns] == [field.name for field in schema.TraceRecord.DESCRIPTOR.fields]
    kinds = dict(columns)
    assert kinds["input_tokens"] == "bigint" and kinds["cost"] == "double"
    assert kinds["ingest"] == "struct<received_at:string,key_name:string,transport:string,completed_at:string>"
    assert "'storage.location.template' = 's3://my-llm-traces/openrouter-traces/${dt}/'" in sql


def test_the_view_keeps_the_newest_version_of_each_call_as_the_bridge_does():
    """llm_calls ranks the versions of a call by the bridge's own rule (lake_schema.NEWEST_FIRST over
    lake_schema.IDENTITY, within the partition every version of a call shares) and shows every column."""
    sql = (ATHENA / "batch-layout.sql").read_text()
    view = sql.split("CREATE OR REPLACE VIEW llm_calls AS", 1)[1].split(";", 1)[0]
    selected = re.findall(r'"([a-z_]+)"', view.split("FROM (", 1)[0])
    assert selected == [*lake_schema.SCHEMA.names, "dt", "hour"]
    ranking = re.search(r"PARTITION BY ([^\n]+)\s+ORDER BY ([^\n]+)\)", view)
    assert ranking.group(1).split(", ") == ["dt", "hour", *lake_schema.IDENTITY]
    assert ranking.group(2).strip() == lake_schema.NEWEST_FIRST
    assert "WHERE version_rank = 1" in view and "FROM llm_traces" in view
