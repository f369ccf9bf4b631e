"""`otel-s3-bridge report` and `query` over what a real bridge stored, in the local directory and in
S3 (moto), from the `trace` layout and from `batch` files: the figures are the ones computed here
from the spans the test sent, not from the bridge's own records."""

from __future__ import annotations

import html
import json
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
import requests
from PIL import Image

from conftest import BridgeProcess, S3Bridge, eventually, list_keys, new_bucket
from otel_s3_bridge.lake import schema as lake_schema, partitions
from otel_s3_bridge.lake.report_html import PALETTE
from otlp_builders import request, span

DAY_NS = 86_400 * 10 ** 9
MODELS = ("claude-sonnet-4", "gpt-4o", "a-model-with-a-rather-long-name-that-must-be-cut-to-fit")


def _calls(count: int = 30, seed: int = 3) -> list[dict]:
    """What the test sends, and so what it expects: one OpenInference LLM span per call."""
    chance = random.Random(seed)
    now = time.time_ns()
    calls = []
    for number in range(count):
        calls.append({
            "model": MODELS[number % len(MODELS)], "input": chance.randint(1, 5000), "output": chance.randint(0, 900),
            "cost": round(chance.uniform(0, 0.05), 6), "error": number % 7 == 0,
            "duration_ms": chance.randint(100, 9000), "customer": f"customer-{number % 4}",
            "session": f"session-{number % 9}",
            # Spread over the last four days (UTC), at least an hour from now so none is in the future.
            "start": now - DAY_NS * (number % 4) - 3_600 * 10 ** 9 - chance.randint(0, 10 ** 12)})
    return calls


def _export(calls: list[dict]) -> dict:
    spans = []
    for call in calls:
        trace = uuid.uuid4().hex
        body = span(trace, trace[:16], "ChatCompletion", {
            "openinference.span.kind": "LLM", "llm.model_name": call["model"], "llm.provider": "acme",
            "llm.token_count.prompt": call["input"], "llm.token_count.completion": call["output"],
            "llm.token_count.total": call["input"] + call["output"], "llm.cost.total": call["cost"],
            "user.id": call["customer"], "session.id": call["session"]},
            start=call["start"], duration_ns=call["duration_ms"] * 10 ** 6)
        body["status"] = {"code": 2 if call["error"] else 1}
        spans.append(body)
    return request(*spans)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _expected_by_model(calls: list[dict]) -> dict[str, dict]:
    expected = {}
    for model in MODELS:
        mine = [call for call in calls if call["model"] == model]
        expected[model] = {
            "calls": len(mine), "errors": sum(call["error"] for call in mine),
            "input_tokens": sum(call["input"] for call in mine), "output_tokens": sum(call["output"] for call in mine),
            "total_tokens": sum(call["input"] + call["output"] for call in mine),
            "cost": sum(call["cost"] for call in mine),
            "latency_p50_ms": _quantile([call["duration_ms"] for call in mine], 0.5),
            "latency_p95_ms": _quantile([call["duration_ms"] for call in mine], 0.95)}
    return expected


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_s3_bridge", *args], capture_output=True, text=True, timeout=120)


def _check_report(result: subprocess.CompletedProcess, calls: list[dict]) -> None:
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["by"] == ["model"]
    rows = {row["model"]: row for row in document["rows"]}
    for model, expected in _expected_by_model(calls).items():
        for name, value in expected.items():
            assert rows[model][name] == pytest.approx(value), (model, name)
    assert [row["model"] for row in document["rows"]] == \
        sorted(rows, key=lambda model: -_expected_by_model(calls)[model]["cost"])  # most expensive first


def stored_locally(tmp_path, calls: list[dict]):
    """A real bridge with the local directory sink stores the calls; returns the directory."""
    out = tmp_path / "out"
    bridge = BridgeProcess(["--output-dir", str(out), "--spool-dir", str(tmp_path / "spool")], tmp_path / "b.log",
                           cwd=tmp_path)
    try:
        assert requests.post(bridge.url, json=_export(calls), timeout=30).status_code == 200
        bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0
    return out


def test_report_and_query_over_the_local_directory_in_both_layouts(tmp_path):
    calls = _calls()
    out = stored_locally(tmp_path, calls)
    where = ["--output-dir", str(out)]
    report = _cli("report", "--by", "model", "--format", "json", *where)
    _check_report(report, calls)
    assert "30 record(s)" in report.stderr and "trace layout" in report.stderr

    # By day: one row per (model, day) and the calls add up.
    by_day = json.loads(_cli("report", "--by", "model,day", "--format", "json", *where).stdout)
    assert sum(row["calls"] for row in by_day["rows"]) == len(calls)
    assert {row["day"] for row in by_day["rows"]} == {time.strftime("%Y-%m-%d", time.gmtime(call["start"] / 1e9))
                                                      for call in calls}
    # The terminal table fits 80 columns, the long model name cut with an ellipsis.
    table = _cli("report", "--by", "model,customer", *where)
    assert table.returncode == 0 and all(len(line) <= 80 for line in table.stdout.splitlines())
    assert "…" in table.stdout and len(table.stdout.splitlines()) == 2 + len({(c["model"], c["customer"])
                                                                             for c in calls})
    # query: SQL over the `records` view.
    query = _cli("query", "SELECT customer_id, count(*) AS n FROM records GROUP BY 1 ORDER BY 1", "--format", "csv",
                 *where)
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["customer_id,n"] + [
        f"customer-{n},{sum(1 for call in calls if call['customer'] == f'customer-{n}')}" for n in range(4)]
    # A window that ends before the calls: nothing.
    empty = json.loads(_cli("report", "--from", "2020-01-01", "--to", "2020-01-31", "--format", "json",
                            *where).stdout)
    assert empty["rows"] == [] or empty["rows"][0]["calls"] == 0

    # The same records as batch files (what the batch layout and `compact` write): the same report.
    records = [json.loads(path.read_bytes()) for path in (out / "openrouter-traces").rglob("*.json")]
    for (dt, hour), group in partitions.by_partition(records).items():
        for file_format in (partitions.PARQUET, partitions.NDJSON):  # half the partitions each way
            if (int(hour) % 2 == 0) == (file_format == partitions.PARQUET):
                target = out / partitions.file_key(partitions.partition_dir("openrouter-traces", group[0]),
                                                  map(partitions.identity, group), file_format)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(lake_schema.encode(group, file_format))
    batch = _cli("report", "--by", "model", "--format", "json", *where)
    _check_report(batch, calls)
    assert "batch layout" in batch.stderr


def stored_in_a_bucket(moto, s3, tmp_path, calls: list[dict]) -> str:
    """A real bridge stores the calls in a new bucket of the S3 server; returns the bucket."""
    bucket = new_bucket(s3)
    bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log", ["--ack", "upload"])
    try:
        assert requests.post(bridge.url, json=_export(calls), headers=bridge.headers(), timeout=30).status_code == 200
    finally:
        assert bridge.stop() == 0
    eventually(lambda: len(list_keys(s3, bucket)) == len(calls))
    return bucket


def test_report_reads_the_bucket_with_the_bridge_settings(moto, s3, tmp_path):
    calls = _calls(seed=11)
    bucket = stored_in_a_bucket(moto, s3, tmp_path, calls)
    report = _cli("report", "--by", "model", "--format", "json", "--bucket", bucket, "--endpoint-url", moto.url)
    _check_report(report, calls)


def test_report_refuses_what_it_cannot_answer(tmp_path):
    bad_by = _cli("report", "--by", "model,colour", "--output-dir", str(tmp_path))
    assert bad_by.returncode == 2 and "--by takes" in bad_by.stderr
    bad_since = _cli("report", "--since", "a week", "--output-dir", str(tmp_path))
    assert bad_since.returncode == 2 and "--since takes" in bad_since.stderr
    bad_sql = _cli("query", "SELECT nope FROM records", "--output-dir", str(tmp_path))
    assert bad_sql.returncode == 1 and "nope" in bad_sql.stderr and "Traceback" not in bad_sql.stderr


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def test_the_html_report_is_self_contained_and_renders_in_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium package)")
    calls = _calls(count=60, seed=21)
    out = stored_locally(tmp_path, calls)
    page = tmp_path / "report.html"
    result = _cli("report", "--by", "model", "--html", str(page), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    # Self-contained: no script, and nothing that could be fetched (no src or href, no url(), no @import).
    assert "<script" not in text and not re.search(r"\b(src|href)\s*=|url\(|@import", text)
    assert text.count("<svg") == 6 and "no data" not in text  # every chart has data
    for model in MODELS:
        assert html.escape(model) in text or html.escape(model[:29]) in text
    assert f"{len(calls):,} calls" in text

    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,1600",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (800, 1600)
    colours = Counter(image.get_flattened_data() if hasattr(image, "get_flattened_data") else image.getdata())
    background, share = colours.most_common(1)[0]
    assert share < 0.97 * image.size[0] * image.size[1], "the page is blank"
    # The charts' own colours are on screen: bars were drawn, not only text.
    palette = {tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) for colour in PALETTE[:3]}
    assert sum(colours[colour] for colour in palette) > 5_000
