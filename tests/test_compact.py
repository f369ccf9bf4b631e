"""`otel-s3-bridge compact`: a day of trace-layout objects stored by a real bridge becomes Parquet
files of the batch layout (one per hour), idempotently; `--delete-source` removes that day's objects
and no other's; reports read the compacted day from its files and the other days from their
objects, with the figures computed from what the test sent. Local directory and S3 (moto)."""

from __future__ import annotations

import io
import json
import time

import pyarrow.parquet as pq

from conftest import list_keys
from test_report import _calls, _check_report, _cli, stored_in_a_bucket, stored_locally


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
