"""`report --by model,day` over a lake of N records, in both layouts, timed as a user runs it.

`python -m bench.lake_bench --records 1000000 [--layout batch|trace] [--runs 3]` builds N LLM
records spread over 7 days (8 models, 500 customers, 2 % errors) in a local directory, as the
bridge's batch layout (hourly Parquet files) or trace layout (one JSON object each), then times
`otel-s3-bridge report --by model,day --output-dir DIR` in a new process (interpreter start and
imports included) and checks the calls it counts. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from otel_s3_bridge.lake import schema as lake_schema, partitions
from otel_s3_bridge.decode.prepare import ExportContext, prepare_export
from otel_s3_bridge.lake.keys import compile_template
from otel_s3_bridge.sample import sample_delivery
from otel_s3_bridge.decode import otlp

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "openrouter-traces"
FIRST_DAY = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
DAYS = 7
MODELS = ["openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "anthropic/claude-haiku-4",
          "google/gemini-2.5-pro", "google/gemini-2.5-flash", "meta-llama/llama-4-maverick", "mistral/mistral-large"]


def template_record() -> dict:
    context = ExportContext(encoding=otlp.JSON, coding="", key_name="bench", transport="http/json",
                            received_at_unix_nano=time.time_ns(), non_llm_spans="drop",
                            template=compile_template("{prefix}/{date}"), prefix=PREFIX,
                            max_request_bytes=1 << 30, max_resource_bytes=1 << 20, max_output_bytes=1 << 30)
    prepared = prepare_export(orjson.dumps(sample_delivery("gen-template", time.time_ns())), context)
    return orjson.loads(prepared.objects[0][1])


def records(count: int, seed: int = 7):
    """`count` distinct records, in order of span start over `DAYS` days."""
    chance = random.Random(seed)
    template = template_record()
    span = DAYS * 86400 * 10 ** 9
    start0 = int(FIRST_DAY.timestamp()) * 10 ** 9
    for number in range(count):
        start = start0 + span * number // count
        duration = chance.randint(300, 9000)
        tokens_in, tokens_out = chance.randint(50, 20000), chance.randint(10, 2000)
        error = chance.random() < 0.02
        generation = f"gen-{start // 10 ** 9}-{number:020d}"
        record = dict(template)
        record.update(
            trace_id=generation, generation_id=generation, otel_trace_id=f"{number:032x}", span_id=f"{number:016x}",
            timestamp=datetime.datetime.fromtimestamp(start / 1e9, datetime.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            start_time_unix_nano=start, end_time_unix_nano=start + duration * 10 ** 6, duration_ms=float(duration),
            model=chance.choice(MODELS), input_tokens=tokens_in, output_tokens=tokens_out,
            total_tokens=tokens_in + tokens_out, cost=round((tokens_in * 2.5 + tokens_out * 10) / 1e6, 8),
            customer_id=f"customer-{chance.randrange(500)}", session_id=f"session-{chance.randrange(5000)}",
            status="error" if error else "ok", status_message="upstream error" if error else None)
        yield record


def build_batch(directory: Path, count: int) -> int:
    files = 0
    group: list[dict] = []
    for record in records(count):
        if group and partitions.partition(group[0]) != partitions.partition(record):
            files += _write_file(directory, group)
            group = []
        group.append(record)
    if group:
        files += _write_file(directory, group)
    return files


def _write_file(directory: Path, group: list[dict]) -> int:
    key = partitions.file_key(partitions.partition_dir(PREFIX, group[0]), map(partitions.identity, group),
                             partitions.PARQUET)
    path = directory / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lake_schema.encode_parts([group[start:start + 20_000] for start in range(0, len(group), 20_000)]))
    return 1


def build_trace(directory: Path, count: int) -> int:
    folders: set[Path] = set()
    for record in records(count):
        folder = directory / PREFIX / record["timestamp"][:10]
        if folder not in folders:
            folder.mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        (folder / f"{record['trace_id']}-{record['start_time_unix_nano'] // 10 ** 9}.json").write_bytes(
            orjson.dumps(record))
    return count


def time_report(directory: Path, runs: int) -> tuple[list[float], int]:
    last_day = (FIRST_DAY + datetime.timedelta(days=DAYS - 1)).date().isoformat()
    command = [sys.executable, "-m", "otel_s3_bridge", "report", "--by", "model,day", "--format", "json",
               "--output-dir", str(directory), "--from", FIRST_DAY.date().isoformat(), "--to", last_day]
    seconds, calls = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=True, cwd=ROOT)
        seconds.append(time.perf_counter() - started)
        calls = sum(row["calls"] for row in json.loads(done.stdout)["rows"])
    return seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--layout", choices=("batch", "trace"), default="batch")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="otel-s3-lake-"))
    try:
        started = time.perf_counter()
        written = (build_batch if args.layout == "batch" else build_trace)(directory, args.records)
        built = time.perf_counter() - started
        seconds, calls = time_report(directory, args.runs)
        if calls != args.records:
            raise SystemExit(f"the report counted {calls} calls, not {args.records}")
        size = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
        print(json.dumps({"layout": args.layout, "records": args.records, "files": written,
                          "bytes": size, "build_seconds": round(built, 1), "report_seconds": seconds,
                          "report_seconds_median": statistics.median(seconds)}))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
