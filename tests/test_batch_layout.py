"""The `batch` layout end to end: the bridge as a process, moto behind the fault-injecting proxy,
real OTLP clients; files read back with boto3 and pyarrow, rows counted. Every record acknowledged
must be in exactly one row of one file, whatever failed, was retried or was killed on the way."""

from __future__ import annotations

import base64
import collections
import gzip
import io
import os
import subprocess
import sys
import time
import uuid

import orjson
import pyarrow.parquet as pq
import pytest
import requests
from conftest import BridgeProcess, Proxy, S3Bridge, eventually, list_keys, new_bucket, read_json
from otel_s3_bridge.deliver.batch_writer import choose_arrow_pool
from otel_s3_bridge.lake import schema as lake_schema
from otel_s3_bridge.sample import sample_delivery
from test_durability import FAST_RETRIES, Load, post_all, restart
from otlp_builders import request
from test_genai_events import QUESTION, call_span, ids, logs_request, message_events, post_logs, post_spans

LAKE = "openrouter-traces/lake/"


@pytest.fixture
def proxy(moto):
    proxy = Proxy(moto.url)
    yield proxy
    proxy.stop()


def lake_rows(s3, bucket: str) -> dict[str, list[dict]]:
    """Every batch file's rows (Parquet or gzip NDJSON), by key."""
    files = {}
    for key in list_keys(s3, bucket, LAKE):
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if key.endswith(".parquet"):
            files[key] = pq.read_table(io.BytesIO(data)).to_pylist()
        else:
            assert key.endswith(".ndjson.gz"), key
            files[key] = [orjson.loads(line) for line in gzip.decompress(data).splitlines()]
    return files


def generation_ids(files: dict[str, list[dict]]) -> collections.Counter:
    return collections.Counter(row["generation_id"] for rows in files.values() for row in rows)


def acknowledged_generations(keys: set[str]) -> set[str]:
    """The generation ids of trace-layout keys `post_all` / `Load` remember."""
    return {key.rsplit("/", 1)[1].rsplit("-", 1)[0] for key in keys}


def test_batch_layout_writes_parquet_files_by_hour_with_the_schema(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start()
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log",
                      ["--layout", "batch", "--batch-max-age-seconds", "1", "--batch-max-records", "15"])
    try:
        sent = acknowledged_generations(post_all(bridge, 40))
        bridge.wait_until_uploaded()
        files = lake_rows(s3, bucket)
        assert generation_ids(files) == collections.Counter(sent)  # each record once
        assert [key for key in list_keys(s3, bucket) if not key.startswith(LAKE)] == []  # no trace objects
        assert all(len(rows) <= 15 for rows in files.values()) and len(files) >= 3
        for key, rows in files.items():
            folder, name = key.rsplit("/", 1)
            stamp = rows[0]["timestamp"]
            assert folder == f"{LAKE}dt={stamp:%Y-%m-%d}/hour={stamp:%H}"
            assert all(f"{row['timestamp']:%Y-%m-%d/%H}" == f"{stamp:%Y-%m-%d/%H}" for row in rows)
            assert len(name) == len("0123456789abcdef0123456789abcdef.parquet")
            head = s3.head_object(Bucket=bucket, Key=key)
            assert head["ContentType"] == "application/vnd.apache.parquet" and "ContentEncoding" not in head
        schema = pq.read_schema(io.BytesIO(s3.get_object(Bucket=bucket, Key=next(iter(files)))["Body"].read()))
        assert schema.equals(lake_schema.SCHEMA, check_metadata=False)
        row = next(iter(files.values()))[0]
        assert row["model"] == "openai/gpt-4-turbo" and isinstance(row["input_tokens"], int)
        assert orjson.loads(row["prompt"])[0]["role"] and row["ingest_transport"] == "http/json"
        assert "parquet files openrouter-traces/lake/dt=YYYY-MM-DD/hour=HH/" in bridge.log
        assert "Parquet files are built with Arrow's system memory pool" in bridge.log
        metrics = bridge.metrics()
        assert metrics[("otel_s3_bridge_batch_records_total", ())] == 40
        assert metrics[("otel_s3_bridge_batch_files_total", (("format", "parquet"),))] == len(files)
    finally:
        assert bridge.stop() == 0


def test_both_layouts_and_ndjson_files(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start()
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log",
                      ["--layout", "both", "--batch-format", "ndjson", "--batch-max-age-seconds", "1"])
    try:
        keys = post_all(bridge, 12)
        bridge.wait_until_uploaded()
        files = lake_rows(s3, bucket)
        assert all(key.endswith(".ndjson.gz") for key in files)
        assert generation_ids(files) == collections.Counter(acknowledged_generations(keys))
        assert {key for key in list_keys(s3, bucket) if not key.startswith(LAKE)} == keys
        # A line of the NDJSON file is the trace object's record itself.
        some = sorted(keys)[0]
        record = read_json(s3, bucket, some)
        assert record in [row for rows in files.values() for row in rows]
        assert s3.head_object(Bucket=bucket, Key=next(iter(files)))["ContentType"] == "application/gzip"
    finally:
        assert bridge.stop() == 0


def test_a_large_file_goes_up_in_parts_and_max_bytes_closes_files(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start()
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log",
                      ["--layout", "batch", "--batch-format", "ndjson", "--batch-max-age-seconds", "600",
                       "--batch-max-bytes", str(10 * 1024 * 1024), "--s3-multipart-bytes", str(5 * 1024 * 1024)])
    hour = 1_790_000_000 // 3600 * 3600 * 10 ** 9  # one partition for all
    sent = set()
    try:
        for number in range(18):  # ~0.7 MB of incompressible prompt each: 10 MiB closes a file at the 15th
            generation_id = f"gen-{uuid.uuid4().hex}"
            delivery = sample_delivery(generation_id, hour + number * 10 ** 9)
            for attribute in delivery["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]:
                if attribute["key"] == "gen_ai.prompt":
                    content = base64.b64encode(os.urandom(512 * 1024)).decode()
                    attribute["value"]["stringValue"] = orjson.dumps([{"role": "user", "content": content}]).decode()
            assert bridge.post(orjson.dumps(delivery)).status_code == 200
            sent.add(generation_id)
        eventually(lambda: list_keys(s3, bucket, LAKE), 60, lambda: bridge.log)
        [key] = list_keys(s3, bucket, LAKE)
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] > 5 * 1024 * 1024 and head["ETag"].strip('"').endswith("-2")  # two parts
        assert len(lake_rows(s3, bucket)[key]) == 15
    finally:
        assert bridge.stop() == 0  # the drain writes the other three
    files = lake_rows(s3, bucket)
    assert generation_ids(files) == collections.Counter(sent) and len(files) == 2


def test_faults_and_lost_answers_still_store_every_record_once(moto, s3, proxy, tmp_path):
    """A PUT that failed, stalled or whose answer was lost after S3 stored it is retried: the same
    bytes under the same key, so no record is lost or stored twice."""
    bucket = new_bucket(s3)
    proxy.start("--fail-rate", "0.5", "--kinds", "503,reset,stall,lost", "--stall-seconds", "2")
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log",
                      ["--layout", "batch", "--batch-max-age-seconds", "1", "--batch-max-records", "7",
                       *FAST_RETRIES, "--s3-timeout-seconds", "1"])
    try:
        sent = acknowledged_generations(post_all(bridge, 60))
        bridge.wait_until_uploaded(wait_seconds=120)
        assert generation_ids(lake_rows(s3, bucket)) == collections.Counter(sent)
        counters = proxy.counters()
        assert counters["fault_lost"] > 0 and counters["fault_reset"] > 0, counters
    finally:
        assert bridge.stop() == 0


def test_kill_9_under_load_then_restart_stores_every_acknowledged_record_once(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start("--fail-rate", "0.3", "--kinds", "503,lost")
    options = ["--layout", "batch", "--batch-max-age-seconds", "1", "--batch-max-records", "20", *FAST_RETRIES]
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", options)
    with Load(bridge) as load:
        load.wait_for(60)
        eventually(lambda: list_keys(s3, bucket, LAKE), 30)  # files are being written
        load.wait_for(len(load.acknowledged) + 40)
        bridge.process.kill()  # SIGKILL amid appends, flushes, uploads and done marks
        bridge.process.wait(10)
    restarted = restart(bridge, proxy, options)
    try:
        restarted.wait_until_uploaded(wait_seconds=120)
        stored = generation_ids(lake_rows(s3, bucket))
        assert max(stored.values()) == 1, [gen for gen, count in stored.items() if count > 1]
        assert acknowledged_generations(load.acknowledged) <= set(stored)
        assert set(stored) <= acknowledged_generations(load.sent)
    finally:
        assert restarted.stop() == 0


def test_a_file_stored_before_a_crash_is_written_again_under_its_key(moto, s3, proxy, tmp_path):
    """S3 stores the file, the bridge dies before it learns so: the restart writes the same members
    under the same key (the manifest), though new records arrive in the same hour meanwhile."""
    bucket = new_bucket(s3)
    proxy.start("--hold-keys", "/lake/")
    options = ["--layout", "batch", "--batch-max-age-seconds", "1", "--s3-timeout-seconds", "600"]
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", options)
    first = acknowledged_generations(post_all(bridge, 10))
    eventually(lambda: list_keys(s3, bucket, LAKE), 30, lambda: bridge.log)
    [stored_key] = list_keys(s3, bucket, LAKE)
    manifests = list((tmp_path / "spool" / "batches").glob("*.batch"))
    assert len(manifests) == 1
    bridge.process.kill()
    bridge.process.wait(10)
    proxy.process.kill()  # it holds the answer back: it would not end on SIGTERM
    proxy.process.wait(10)
    proxy.start()
    restarted = restart(bridge, proxy, ["--layout", "batch", "--batch-max-age-seconds", "5"])
    try:
        second = acknowledged_generations(post_all(restarted, 10))  # the same hour, within 5 s
        restarted.wait_until_uploaded()
        files = lake_rows(s3, bucket)
        assert collections.Counter(row["generation_id"] for row in files[stored_key]) == collections.Counter(first)
        assert generation_ids(files) == collections.Counter(first | second)
        assert "written again" in restarted.log
        assert list((tmp_path / "spool" / "batches").iterdir()) == []
    finally:
        assert restarted.stop() == 0


def test_a_refused_file_is_quarantined_and_spool_retry_writes_it(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start("--refuse-keys", "/lake/")
    options = ["--layout", "batch", "--batch-max-age-seconds", "1", *FAST_RETRIES]
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", options)
    try:
        sent = acknowledged_generations(post_all(bridge, 8))
        bridge.wait_until_uploaded()
        assert list_keys(s3, bucket, LAKE) == []
        assert "refused the batch file" in bridge.log and "access denied" in bridge.log
    finally:
        assert bridge.stop() == 0
    assert len(list((tmp_path / "spool" / "quarantine").glob("*.seg"))) == 8
    proxy.stop()
    proxy.start()
    subprocess.run([sys.executable, "-m", "otel_s3_bridge", "spool", "retry", "--spool-dir",
                    str(tmp_path / "spool")], check=True, capture_output=True)
    restarted = restart(bridge, proxy, options)
    try:
        restarted.wait_until_uploaded()
        assert generation_ids(lake_rows(s3, bucket)) == collections.Counter(sent)
    finally:
        assert restarted.stop() == 0


def _query(moto, bucket: str, sql: str) -> list[dict]:
    """`otel-s3-bridge query SQL` over the bucket, as a user runs it: its rows."""
    done = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "query", sql, "--format", "json", "--since", "2d",
                           "--bucket", bucket, "--endpoint-url", moto.url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)["rows"]


def test_a_call_without_content_is_in_a_file_at_the_next_flush_and_completed_at_the_one_after(moto, s3, proxy,
                                                                                              tmp_path):
    """A span without content (openai-v2's default) is in a file at the next flush, not after the
    join window (600 s by default); its events, arriving later, make a completed version at the
    flush after, and every reader sees that one alone."""
    bucket = new_bucket(s3)
    proxy.start()
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", ["--layout", "batch", "--batch-max-age-seconds", "1"])
    try:
        trace_id, span_id = ids()
        start = time.time_ns()
        assert post_spans(bridge, call_span(trace_id, span_id, start)).status_code == 200
        eventually(lambda: list_keys(s3, bucket, LAKE), 30, lambda: bridge.log)  # no wait for the join window
        sql = f"SELECT span_id, prompt, completion, ingest_completed_at FROM records WHERE span_id = '{span_id}'"
        [first] = _query(moto, bucket, sql)
        assert first["prompt"] is None and first["ingest_completed_at"] is None

        assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code == 200
        eventually(lambda: len(list_keys(s3, bucket, LAKE)) == 2, 30, lambda: bridge.log)
        bridge.wait_until_uploaded()
        rows = [row for rows in lake_rows(s3, bucket).values() for row in rows]
        assert len(rows) == 2 and {row["span_id"] for row in rows} == {span_id}  # both versions, in two files
        [newest] = _query(moto, bucket, sql)  # the completed one alone
        assert orjson.loads(newest["prompt"])[-1]["content"] == QUESTION and newest["ingest_completed_at"]
        assert _query(moto, bucket, "SELECT count(*) AS calls FROM records") == [{"calls": 1}]
    finally:
        assert bridge.stop() == 0


def test_a_resent_export_is_one_row_to_every_reader(moto, s3, proxy, tmp_path):
    """A client whose answer was lost sends the export again after its first copy was flushed into
    a file: the raw files hold each call twice, `query` and `report` once."""
    bucket = new_bucket(s3)
    proxy.start()
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", ["--layout", "batch", "--batch-max-age-seconds", "1"])
    try:
        export = orjson.dumps(request(*(call_span(*ids(), time.time_ns()) for _ in range(5))))
        assert bridge.post(export).status_code == 200
        eventually(lambda: list_keys(s3, bucket, LAKE), 30, lambda: bridge.log)
        assert bridge.post(export).status_code == 200  # the same export again
        eventually(lambda: len(list_keys(s3, bucket, LAKE)) == 2, 30, lambda: bridge.log)
        bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0
    assert sum(len(rows) for rows in lake_rows(s3, bucket).values()) == 10
    twice = "SELECT trace_id, span_id, count(*) AS n FROM records GROUP BY 1, 2 HAVING count(*) > 1"
    assert _query(moto, bucket, twice) == []
    assert _query(moto, bucket, "SELECT count(*) AS calls FROM records") == [{"calls": 5}]
    report = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "report", "--since", "2d", "--format", "json",
                             "--bucket", bucket, "--endpoint-url", moto.url], capture_output=True, text=True,
                            timeout=120)
    assert orjson.loads(report.stdout)["rows"][0]["calls"] == 5
    # gpt-4o-mini-2024-07-18, 22 input and 7 output tokens each: $0.15 and $0.60 per million
    assert orjson.loads(report.stdout)["rows"][0]["cost"] == pytest.approx(5 * (22 * 0.15 + 7 * 0.60) / 1e6)


def test_batch_layout_in_the_local_directory_and_report_reads_it(tmp_path):
    out = tmp_path / "out"
    bridge = BridgeProcess(["--output-dir", str(out), "--spool-dir", str(tmp_path / "spool"), "--layout", "batch",
                            "--batch-format", "ndjson", "--batch-max-age-seconds", "1"], tmp_path / "bridge.log")
    try:
        sent = set()
        for _ in range(9):
            generation_id = f"gen-{uuid.uuid4().hex}"
            response = requests.post(bridge.url, data=orjson.dumps(sample_delivery(generation_id, time.time_ns())),
                                     headers={"Content-Type": "application/json"}, timeout=30)
            assert response.status_code == 200
            sent.add(generation_id)
        bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0
    files = sorted((out / "openrouter-traces" / "lake").rglob("*.ndjson.gz"))
    rows = [orjson.loads(line) for path in files for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert collections.Counter(row["generation_id"] for row in rows) == collections.Counter(sent)
    assert not list(out.rglob("*.json")) and not list(out.rglob("*.partial"))  # no trace objects, no leftovers
    report = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "report", "--by", "model", "--format", "json",
                             "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert orjson.loads(report.stdout)["rows"][0]["calls"] == 9 and "batch layout" in report.stderr


def test_an_export_of_thousands_of_spans_without_content_keeps_every_half(moto, s3, tmp_path):
    """The join store keeps a large export's halves a part at a time (the loop serves others in
    between): a call in its last part is still completed by its events."""
    bucket = new_bucket(s3)
    bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log", ["--layout", "batch", "--batch-max-age-seconds", "1"])
    try:
        start = time.time_ns()
        calls = [ids() for _ in range(2500)]
        export = orjson.dumps(request(*(call_span(trace_id, span_id, start) for trace_id, span_id in calls)))
        assert bridge.post(export, key="sdk").status_code == 200  # the key its events come with
        trace_id, span_id = calls[-7]
        assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code == 200
        bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0
    assert _query(moto, bucket, "SELECT count(*) AS calls FROM records") == [{"calls": 2500}]
    [row] = _query(moto, bucket, f"SELECT prompt FROM records WHERE span_id = '{span_id}'")
    assert orjson.loads(row["prompt"])[-1]["content"] == QUESTION


def test_scratch_files_a_crash_left_are_deleted_at_start(tmp_path):
    """A batch file's staged records (`*.ndjson.partial`) and DuckDB's spill directory were never
    cleaned after a crash: they went at no start and filled the disk under the spool."""
    batches = tmp_path / "spool" / "batches"
    batches.mkdir(parents=True)
    (batches / "0123.ndjson.partial").write_bytes(b"{}\n" * 1000)
    (batches / "0123.ndjson.spill").mkdir()
    (batches / "0123.ndjson.spill" / "duckdb_temp_block.tmp").write_bytes(b"\0" * 4096)
    bridge = BridgeProcess(["--output-dir", str(tmp_path / "out"), "--spool-dir", str(tmp_path / "spool"),
                            "--layout", "batch"], tmp_path / "bridge.log")
    try:
        assert sorted(path.name for path in batches.iterdir()) == []
    finally:
        assert bridge.stop() == 0


def test_parquet_builds_ask_arrow_for_the_c_library_pool_unless_told_otherwise_or_too_late():
    # mimalloc, Arrow's default, costs a fresh bridge's builds ~40 % more CPU here (bench/analysis.md)
    environ: dict[str, str] = {}
    assert choose_arrow_pool(environ, arrow_loaded=False) and environ == {"ARROW_DEFAULT_MEMORY_POOL": "system"}
    told = {"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}
    assert not choose_arrow_pool(told, arrow_loaded=False) and told == {"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}
    late: dict[str, str] = {}
    assert not choose_arrow_pool(late, arrow_loaded=True) and late == {}  # Arrow read the variable already
