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
from otel_s3_bridge.lake.numbers import nice_ticks
from otel_s3_bridge.lake.report import as_table
from otel_s3_bridge.lake.report_html import PALETTE, render
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
    assert text.count("<svg") == 7 and "no data" not in text  # every chart has data
    assert text.count("<table>") == 7  # and the numbers it draws in a table under it
    assert "Latency by model (ms)" in text
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


# --- numbers read at a glance ---------------------------------------------------------------------

def test_the_table_uses_one_format_per_column():
    """A column mixed `4.59`, `0.6282` and `0.494`, and `665.50` beside `2,569` ms."""
    columns = ["model", "calls", "errors", "input_tokens", "output_tokens", "total_tokens", "cost", "estimated_cost",
               "latency_p50_ms", "latency_p95_ms"]
    rows = [("gpt-4o", 1200, 3, 1_234_567, 45_678, 1_280_245, 4.59, 0.0, 665.5, 2569.2),
            ("claude", 30, 0, 120_000, 9_000, 129_000, 0.6282, 0.6282, 1200.0, 4100.7),
            ("mini", 5, None, 800, 20, 820, 0.494, None, 90.0, 120.0)]
    lines = as_table(columns, rows, width=200).splitlines()
    assert [line.split() for line in lines[2:]] == [
        # calls, errors: counts; tokens: one unit per column (M, k); cost: cents from $1 up; the
        # estimated part: three significant digits of its largest value in every row; latency: whole ms
        ["gpt-4o", "1,200", "3", "1.23M", "45.7k", "1.28M", "4.59", "0.000", "666", "2,569"],
        ["claude", "30", "0", "0.12M", "9.0k", "0.13M", "0.63", "0.628", "1,200", "4,101"],
        ["mini", "5", "-", "0.00M", "0.0k", "0.00M", "0.49", "-", "90", "120"]]
    small = as_table(["model", "input_tokens", "cost"], [("a", 9_999, 0.0123), ("b", 12, 0.0004)]).splitlines()
    assert [line.split() for line in small[2:]] == [["a", "9,999", "0.0123"], ["b", "12", "0.0004"]]


@pytest.mark.parametrize("maximum, ticks", [
    (0.8307, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),  # was $0.2769, $0.5538, $0.8307
    (2569, [0, 1000, 2000, 3000]),
    (7, [0, 2, 4, 6, 8]),
    (100, [0, 20, 40, 60, 80, 100]),
    (0.034, [0, 0.01, 0.02, 0.03, 0.04]),
    (0, [0, 1]),
])
def test_axis_ticks_are_round_steps_of_1_2_or_5(maximum, ticks):
    assert nice_ticks(maximum) == pytest.approx(ticks)


def test_the_page_ticks_its_axes_at_round_values_and_tables_each_chart():
    answers = {"spend": [("2026-12-01", "gpt-4o", 0.5538), ("2026-12-02", "gpt-4o", 0.8307),
                         ("2026-12-02", "claude", 0.0)],
               "tokens": [("gpt-4o", 12_000, 3_400)], "daily": [("2026-12-01", 2569.0, 0.02, 40),
                                                             ("2026-12-02", 665.5, 0.0, 60)],
               "customers": [], "sessions": [], "estimated": [(0.0,)],
               "latency": [("gpt-4o", 665.5, 2569.2, 100)]}
    page = render(answers, title="t", subtitle="s")
    spend_axis = page.split("Spend per day")[1].split("</svg>")[0]
    assert re.findall(r'class="tick" text-anchor="end">([^<]+)<', spend_axis) == \
        ["$0.00", "$0.20", "$0.40", "$0.60", "$0.80", "$1.00"]
    latency_axis = page.split("p95 latency per day")[1].split("</svg>")[0]
    assert re.findall(r'class="tick" text-anchor="end">([^<]+)<', latency_axis) == ["0", "1,000", "2,000", "3,000"]
    errors_axis = page.split("Error rate per day")[1].split("</svg>")[0]
    assert re.findall(r'class="tick" text-anchor="end">([^<]+)<', errors_axis) == \
        ["0.0%", "0.5%", "1.0%", "1.5%", "2.0%"]
    by_model = page.split("Latency by model (ms)")[1].split("</section>")[0]
    assert "<td>gpt-4o</td><td>666</td><td>2,569</td><td>100</td>" in by_model
    spend_table = page.split("Spend per day")[1].split("</section>")[0]
    assert "<td>2026-12-02</td><td>0.831</td><td>0.000</td><td>0.831</td>" in spend_table
