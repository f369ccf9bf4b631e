"""Read by a distributed engine: Apache Spark (pyspark, local mode) reads a compacted day of the lake
with the table of deploy/athena/batch-layout.sql (its columns and types, its partitions) and the
view that keeps the newest version of each call, and gets the row count and spend `report` gives.

The day holds what real bridges wrote into one bucket: trace-layout objects turned into Parquet by
`compact`, and batch-layout files holding a resent export (each of its calls twice) and a call
completed later by its GenAI events (two versions). Spark reads the files as a user would once
they are copied out of the bucket (the S3 connector's jars are not on PyPI)."""

from __future__ import annotations

import json
import re
import shutil
import uuid

import pytest

from conftest import S3Bridge, list_keys, new_bucket
from otel_s3_bridge.lake import schema as lake_schema
from otlp_builders import request, span
from test_athena_ddl import ATHENA, _columns
from test_genai_events import call_span, logs_request, message_events, post_logs, post_spans
from test_report import _cli

DAY = "2026-11-20"
START = 1_795_161_600 * 10 ** 9  # 2026-11-20T08:00:00Z
SPARK_TYPES = {"string": "STRING", "bigint": "BIGINT", "double": "DOUBLE", "timestamp": "TIMESTAMP"}


def _call(number: int, cost: float | None = None) -> dict:
    trace = uuid.uuid4().hex
    attributes = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
                  "llm.token_count.prompt": 1000 + number, "llm.token_count.completion": 100}
    if cost is not None:
        attributes["llm.cost.total"] = cost
    return span(trace, trace[:16], "ChatCompletion", attributes, start=START + number * 60 * 10 ** 9)


def _stored_day(moto, s3, tmp_path) -> str:
    bucket = new_bucket(s3)
    trace = S3Bridge(moto, bucket, tmp_path / "trace.log", ["--spool-dir", str(tmp_path / "spool-trace")])
    try:
        assert trace.post(json.dumps(request(*(_call(n, cost=0.01 * n) for n in range(6)))).encode()).status_code \
            == 200
        trace.wait_until_uploaded()
    finally:
        assert trace.stop() == 0
    batch = S3Bridge(moto, bucket, tmp_path / "batch.log", ["--layout", "batch", "--batch-max-age-seconds", "1",
                                                           "--spool-dir", str(tmp_path / "spool-batch")])
    try:
        resent = json.dumps(request(*(_call(10 + n) for n in range(4)))).encode()  # priced from tokens
        assert batch.post(resent).status_code == 200
        batch.wait_until_uploaded()
        assert batch.post(resent).status_code == 200  # its answer was lost: sent again
        batch.wait_until_uploaded()
        trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
        assert post_spans(batch, call_span(trace_id, span_id, START + 30 * 60 * 10 ** 9)).status_code == 200
        batch.wait_until_uploaded()
        assert post_logs(batch, logs_request(*message_events(trace_id, span_id, START))).status_code == 200
        batch.wait_until_uploaded()
    finally:
        assert batch.stop() == 0
    compacted = _cli("compact", "--date", DAY, "--delete-source", "--bucket", bucket, "--endpoint-url", moto.url)
    assert compacted.returncode == 0, compacted.stderr
    assert not [key for key in list_keys(s3, bucket) if key.endswith(".json")]
    return bucket


def _report(moto, bucket: str) -> dict:
    """`report`'s calls and spend of the day, summed over its rows (by model)."""
    result = _cli("report", "--from", DAY, "--to", DAY, "--format", "json", "--bucket", bucket,
                  "--endpoint-url", moto.url)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    return {"calls": sum(row["calls"] for row in rows), "cost": sum(row["cost"] or 0 for row in rows)}


def _spark_ddl() -> tuple[str, str]:
    """The table's schema as Spark DDL (the Athena table's columns, then its partitions) and the
    view's statement in Spark SQL (Trino's double-quoted identifiers in backticks)."""
    sql = (ATHENA / "batch-layout.sql").read_text()
    partitions = re.findall(r"`([a-z_]+)` (\w+)", sql.split("PARTITIONED BY (", 1)[1].split(")", 1)[0])
    schema = ", ".join(f"`{name}` {SPARK_TYPES[kind]}" for name, kind in _columns(sql) + partitions)
    view = sql.split("CREATE OR REPLACE VIEW llm_calls AS", 1)[1].split(";", 1)[0]
    return schema, "CREATE OR REPLACE TEMP VIEW llm_calls AS" + view.replace('"', "`")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession  # in the test extra: .ci/run installs it

    if shutil.which("java") is None:
        pytest.fail("Java 17 is needed for Spark: .ci/run installs Debian's openjdk-17-jre-headless")
    session = (SparkSession.builder.master("local[2]").appName("otel-s3-bridge-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", "2").config("spark.driver.memory", "512m")
               .getOrCreate())
    yield session
    session.stop()


def test_spark_reads_a_compacted_day_with_the_athena_table_and_view(moto, s3, tmp_path, spark):
    bucket = _stored_day(moto, s3, tmp_path)
    lake_dir = tmp_path / "lake"
    for key in list_keys(s3, bucket, "openrouter-traces/lake/"):
        target = lake_dir / key.removeprefix("openrouter-traces/lake/")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
    expected = _report(moto, bucket)
    assert expected["calls"] == 6 + 4 + 1

    schema, view = _spark_ddl()
    spark.read.schema(schema).parquet(str(lake_dir)).createOrReplaceTempView("llm_traces")
    spark.sql(view)
    raw = spark.sql(f"SELECT count(*) AS n FROM llm_traces WHERE dt = '{DAY}'").collect()[0]["n"]
    assert raw == 6 + 2 * 4 + 2  # the raw table holds every version: why the view is there
    row = spark.sql(f"SELECT count(*) AS calls, sum(cost) AS cost, "
                    f"count(*) FILTER (WHERE cost_source = 'estimated') AS estimated, "
                    f"count(*) FILTER (WHERE prompt IS NOT NULL) AS with_prompt, min(hour) AS hour "
                    f"FROM llm_calls WHERE dt = '{DAY}'").collect()[0]
    assert row["calls"] == expected["calls"]
    assert row["cost"] == pytest.approx(expected["cost"], rel=1e-9)
    assert row["estimated"] == 4 + 1 and row["with_prompt"] == 1  # the completed version of the late call
    assert row["hour"] == "08"  # partitions as the DDL types them: strings
    types = dict(spark.table("llm_calls").dtypes)
    assert types["timestamp"] == "timestamp" and types["input_tokens"] == "bigint" and types["cost"] == "double"
    assert set(types) == {*lake_schema.SCHEMA.names, "dt", "hour"}
