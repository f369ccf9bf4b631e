"""`otel-s3-bridge compact`: a day of trace-layout objects stored by a real bridge becomes Parquet
files of the batch layout (one per hour), idempotently; `--delete-source` removes that day's objects
and no other's; reports read the compacted day from its files and the other days from their
objects, with the figures computed from what the test sent. Local directory and S3 (moto)."""

from __future__ import annotations

import io
import json
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import requests

from conftest import BridgeProcess, S3Bridge, list_keys, new_bucket
from otel_s3_bridge.lake import schema as lake_schema
from otlp_builders import request, span
from test_conventions import CONVENTIONS
from test_genai_events import call_span
from test_report import _calls, _check_report, _cli, _export, stored_in_a_bucket, stored_locally


def _day(call: dict) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(call["start"] / 1e9))


def test_compact_a_day_in_the_local_directory(tmp_path):
    calls = _calls(count=40, seed=5)
    out = stored_locally(tmp_path, calls)
    where = ["--output-dir", str(out)]
    day = _day(calls[1])
    on_day = [call for call in calls if _day(call) == day]
    objects = lambda: sorted((out / "openrouter-traces").glob("*/*.json"))  # noqa: E731
    before = len(objects())

    first = _cli("compact", "--date", day, *where)
    assert first.returncode == 0, first.stderr
    files = sorted((out / "openrouter-traces" / "lake").rglob("*.parquet"))
    assert files and all(f"/dt={day}/hour=" in str(path) for path in files)
    assert sum(pq.read_metadata(path).num_rows for path in files) == len(on_day)
    assert len(objects()) == before  # nothing deleted without --delete-source

    again = _cli("compact", "--date", day, *where)  # idempotent: the same files, the same keys
    assert again.returncode == 0 and again.stdout == first.stdout
    assert sorted((out / "openrouter-traces" / "lake").rglob("*.parquet")) == files
    assert not list((out / "openrouter-traces" / "lake").rglob("*.partial"))

    _check_report(_cli("report", "--from", day, "--to", day, "--by", "model", "--format", "json", *where), on_day)

    deleted = _cli("compact", "--date", day, "--delete-source", *where)
    assert deleted.returncode == 0 and f"{len(on_day)} object(s) deleted" in deleted.stdout
    assert len(objects()) == before - len(on_day)
    assert not list((out / "openrouter-traces" / day).glob("*.json"))
    # The compacted day from its files, the others from their objects: every call, once.
    report = _cli("report", "--since", "7d", "--by", "model", "--format", "json", *where)
    _check_report(report, calls)
    assert "batch and trace layout" in report.stderr


def test_compact_in_the_bucket_deletes_only_that_day(moto, s3, tmp_path):
    calls = _calls(count=24, seed=8)
    bucket = stored_in_a_bucket(moto, s3, tmp_path, calls)
    day = _day(calls[2])
    on_day = [call for call in calls if _day(call) == day]
    where = ["--bucket", bucket, "--endpoint-url", moto.url]
    result = _cli("compact", "--date", day, "--delete-source", *where)
    assert result.returncode == 0, result.stderr
    keys = list_keys(s3, bucket)
    parquet = [key for key in keys if key.endswith(".parquet")]
    assert parquet and all(key.startswith(f"openrouter-traces/lake/dt={day}/hour=") for key in parquet)
    rows = sum(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())).num_rows
               for key in parquet)
    assert rows == len(on_day)
    remaining = [key for key in keys if key.endswith(".json")]
    assert len(remaining) == len(calls) - len(on_day) and not any(f"/{day}/" in key for key in remaining)
    report = json.loads(_cli("report", "--since", "7d", "--by", "model", "--format", "json", *where).stdout)
    assert sum(row["calls"] for row in report["rows"]) == len(calls)


def test_compact_refuses_a_bad_date(tmp_path):
    result = _cli("compact", "--date", "yesterday", "--output-dir", str(tmp_path))
    assert result.returncode == 2 and "--date takes YYYY-MM-DD" in result.stderr


def _store(tmp_path, out, calls: list[dict], *extra: str) -> None:
    """A real bridge, with `extra` options, stores the calls in the local directory `out`."""
    bridge = BridgeProcess(["--output-dir", str(out), "--spool-dir", str(tmp_path / "spool"), *extra],
                           tmp_path / "b.log", cwd=tmp_path)
    try:
        assert requests.post(bridge.url, json=_export(calls), timeout=30).status_code == 200
        bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0


def test_compact_again_as_objects_arrive_and_beside_the_bridges_batch_files(tmp_path):
    """A day written first with `--layout both`, then in the trace layout alone, compacted, then
    more objects, compacted again, sources deleted, compacted once more: every call in one row."""
    out = tmp_path / "out"
    day_of = lambda calls: [call for call in calls if _day(call) == _day(calls[0])]  # noqa: E731
    first = day_of(_calls(count=12, seed=21))
    day = _day(first[0])
    _store(tmp_path, out, first, "--layout", "both", "--batch-max-age-seconds", "1")
    second = [dict(call, start=first[0]["start"] + n) for n, call in enumerate(_calls(count=6, seed=22), 1)]
    _store(tmp_path, out, second)
    where = ["--output-dir", str(out)]
    lake_dir = out / "openrouter-traces" / "lake" / f"dt={day}"
    bridge_files = sorted(path for path in lake_dir.rglob("*.parquet") if not path.name.startswith("compact-"))
    assert bridge_files

    def rows() -> list[str]:
        return sorted(row["span_id"] for path in lake_dir.rglob("*.parquet") for row in pq.read_table(path).to_pylist())

    done = _cli("compact", "--date", day, *where)
    assert done.returncode == 0, done.stderr
    assert f"({len(first)} object(s) already in the bridge's batch files)" in done.stdout
    assert len(rows()) == len(first) + len(second) == len(set(rows()))
    compacted = sorted(lake_dir.rglob("compact-*.parquet"))

    third = [dict(call, start=first[0]["start"] + 100 + n) for n, call in enumerate(_calls(count=5, seed=23))]
    _store(tmp_path, out, third)
    assert _cli("compact", "--date", day, *where).returncode == 0
    assert len(rows()) == len(first) + len(second) + len(third) == len(set(rows()))
    assert sorted(lake_dir.rglob("compact-*.parquet")) != compacted  # replaced, not added to

    assert _cli("compact", "--date", day, "--delete-source", *where).returncode == 0
    again = _cli("compact", "--date", day, *where)  # no objects left: the files keep every record
    assert again.returncode == 0 and len(rows()) == len(first) + len(second) + len(third)
    assert sorted(path for path in lake_dir.rglob("*.parquet") if not path.name.startswith("compact-")) == \
        bridge_files
    _check_report(_cli("report", "--from", day, "--to", day, "--by", "model", "--format", "json", *where),
                  first + second + third)


MIXED_DAY = "2026-09-21"  # the golden requests' day (tests/data/conventions)


def _mixed_exports() -> list[bytes]:
    """One export per convention's golden request, an OpenInference call with `input.value` /
    `output.value`, and an openai-v2 call without content: a day of every convention, with and
    without prompts, all in one hour."""
    exports = [path.read_bytes() for path in sorted(CONVENTIONS.glob("*.request.json"))]
    start = 1_790_000_000 * 10 ** 9 + 7 * 10 ** 9
    trace = uuid.uuid4().hex
    exports.append(json.dumps(request(span(trace, trace[:16], "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4-5", "llm.provider": "anthropic",
        "llm.token_count.prompt": 2000, "llm.token_count.completion": 1000, "input.value": "What is 2 + 2?",
        "output.value": "4"}, start=start))).encode())
    trace = uuid.uuid4().hex
    exports.append(json.dumps(request(call_span(trace, trace[:16], start + 10 ** 9))).encode())
    return exports


def _store_apart(moto, s3, tmp_path, *layout: str) -> str:
    """A real bridge stores the exports one by one, each flushed before the next (so the batch
    layout writes one file per export, several in one hour); returns the bucket."""
    bucket = new_bucket(s3)
    bridge = S3Bridge(moto, bucket, tmp_path / f"bridge{len(layout)}.log",
                      ["--batch-max-age-seconds", "1", "--spool-dir", str(tmp_path / f"spool{len(layout)}"), *layout])
    try:
        for body in _mixed_exports():
            assert bridge.post(body, key="sdk").status_code == 200
            bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0
    return bucket


def _totals(moto, bucket: str) -> list[dict]:
    result = _cli("report", "--by", "model,provider", "--format", "json", "--from", MIXED_DAY, "--to", MIXED_DAY,
                  "--bucket", bucket, "--endpoint-url", moto.url)
    assert result.returncode == 0, result.stderr
    return sorted(json.loads(result.stdout)["rows"], key=lambda row: (row["model"] or "", row["provider"] or ""))


def _parquet_schemas(s3, bucket: str) -> dict[str, pa.Schema]:
    return {key: pq.read_schema(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
            for key in list_keys(s3, bucket, "openrouter-traces/lake/") if key.endswith(".parquet")}


def test_a_day_of_every_convention_with_and_without_content_compacts_in_either_layout(moto, s3, tmp_path):
    """Batch files in one hour holding calls with prompts beside calls without (where `compact`
    used to crash: 'array_take' has no kernel matching (string, null)), and the same day as trace
    objects: `compact` succeeds, every file has the one schema of the DDL whatever its records hold,
    and `report` gives the same totals before and after, in both layouts alike."""
    lake_bucket = _store_apart(moto, s3, tmp_path, "--layout", "batch")
    objects_bucket = _store_apart(moto, s3, tmp_path)
    before = _totals(moto, lake_bucket)
    assert before == _totals(moto, objects_bucket)
    llm_records = sum(1 for path in CONVENTIONS.glob("*.expected.json")
                      for record in json.loads(path.read_bytes()) if record["source"] != "otlp") + 2
    assert sum(row["calls"] for row in before) == llm_records
    assert any(row["cost"] for row in before)
    for bucket in (lake_bucket, objects_bucket):
        for _ in range(2):  # and again: nothing changes
            done = _cli("compact", "--date", MIXED_DAY, "--bucket", bucket, "--endpoint-url", moto.url)
            assert done.returncode == 0, done.stderr
            assert _totals(moto, bucket) == before
        schemas = _parquet_schemas(s3, bucket)
        assert schemas and all(schema.equals(lake_schema.SCHEMA, check_metadata=False) for schema in schemas.values()), \
            {key: schema for key, schema in schemas.items() if not schema.equals(lake_schema.SCHEMA, check_metadata=False)}
    assert len(_parquet_schemas(s3, lake_bucket)) >= len(_mixed_exports()) - 1  # several files in the hour
    assert all(key.rsplit("/", 1)[1].startswith("compact-") for key in _parquet_schemas(s3, objects_bucket))
