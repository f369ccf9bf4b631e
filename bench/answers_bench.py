"""What the answers cost, in-process (CPU of the whole process, every thread, from getrusage):

- keeping join halves: the ingest path (`Ingestor.export`: decode, price, key, encode, join store,
  spool append with its fsync) for 100-span GenAI batches without content (each record leaves a
  half in the join store, as OpenTelemetry's instrumentation sends them by default) against the
  same spans carrying their prompt and completion (no half), 16 exports at a time, and the join
  store alone (`JoinStore.put_spans`). No HTTP, no uploads: only the bridge's own work;
- pricing: `pricing.price_record` per call with no reported cost;
- counting once: `lake.read.newest_versions` over a million rows of `report`'s columns.

  python -m bench.answers_bench [--exports 400] [--runs 5]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bench.payloads import MARKERS_PROTOBUF, batch_template, fill, marker_positions, to_protobuf

SPANS = 100
CONCURRENT = 16


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _NoSink:
    description = "nowhere"

    async def put(self, key: str, body: bytes, content_type: str, bucket: str | None = None,
                  controls: bytes = b"") -> None:
        return None


async def _ingest(directory: Path, bodies: list[bytes]) -> float:
    """CPU seconds of the process to take every body through `Ingestor.export`."""
    from otel_s3_bridge.decode import otlp
    from otel_s3_bridge.receive.auth import Principal
    from otel_s3_bridge.config import load_config
    from otel_s3_bridge.receive.ingest import Ingestor
    from otel_s3_bridge.decode.join import JoinStore
    from otel_s3_bridge.deliver.spool import Spool

    # --ack spool: every record through the spool, as the join halves it is compared with go
    config = load_config({"spool_dir": str(directory / "spool"), "output_dir": str(directory / "out"), "ack": "spool"},
                         env={})
    spool = Spool(config.spool_dir, 1 << 40)
    spool.open()
    join = JoinStore(config.join_directory, window_seconds=600, max_bytes=1 << 40)
    join.open()
    ingestor = Ingestor(config, _NoSink(), spool, join=join)
    principal = Principal("bench", "openrouter-traces", None)
    queue = list(bodies)

    async def client() -> None:
        while queue:
            body = queue.pop()
            reservation = ingestor.inflight.reserve()
            try:
                await ingestor.export(body, reservation, encoding=otlp.PROTOBUF, coding="", principal=principal,
                                      transport="http/protobuf", max_request_bytes=64 << 20)
            finally:
                reservation.release()

    started = _cpu()
    await asyncio.gather(*(client() for _ in range(CONCURRENT)))
    spent = _cpu() - started
    await spool.close()
    return spent


def _bodies(content: bool, exports: int, seed: int) -> list[bytes]:
    template = to_protobuf(batch_template(SPANS, time.time_ns(), content=content))
    markers = marker_positions(template, MARKERS_PROTOBUF)
    assert markers, "no ids to make distinct"
    return [fill(template, MARKERS_PROTOBUF, seed, n) for n in range(exports)]


def _join_store_alone(directory: Path, exports: int) -> float:
    """CPU µs per half of `JoinStore.put_spans` with 100 halves an export."""
    from otel_s3_bridge.decode.join import JoinStore
    from otel_s3_bridge.decode.prepare import SpanHalf

    store = JoinStore(directory / "alone", window_seconds=600, max_bytes=1 << 40)
    store.open()
    document = b'{"schema":"otel-s3-bridge.trace.v1","model":"gpt-4o-mini",' + b'"x":"' + b"y" * 1200 + b'"}'
    batches = [[SpanHalf(i, f"{e:024x}{i:08x}{'0' * 16}", f"openrouter-traces/2026-12-05/{e}-{i}.json", document)
                for i in range(SPANS)] for e in range(exports)]
    async def keep() -> None:
        for halves in batches:
            await store.put_spans("bench", None, halves)

    started = _cpu()
    asyncio.run(keep())
    return (_cpu() - started) / (exports * SPANS) * 1e6


def _pricing_us(records: int = 20_000) -> float:
    """µs to price one call (gpt-4o-mini via OpenTelemetry GenAI, 120 input and 42 output tokens)."""
    from otel_s3_bridge.enrich import pricing

    template = {"model": "gpt-4o-mini-2024-07-18", "requested_model": "gpt-4o-mini", "provider": "openai",
                "input_tokens": 120, "output_tokens": 42, "cached_tokens": 100, "cost": None, "input_cost": None,
                "output_cost": None, "cost_source": None, "start_time_unix_nano": time.time_ns()}
    calls = [dict(template, input_tokens=120 + n) for n in range(records)]
    book = pricing.PriceBook()
    pricing.price_record(dict(template), book, 0)  # the table loaded, the price looked up once
    started = _cpu()
    for record in calls:
        pricing.price_record(record, book, 0)
    assert calls[-1]["cost_source"] == "estimated"
    return (_cpu() - started) / records * 1e6


def _dedupe_seconds(rows: int = 1_000_000) -> float:
    """Seconds to keep the newest version of each call of `rows` rows (report's columns)."""
    import pyarrow as pa

    from otel_s3_bridge.lake import schema as lake_schema
    from otel_s3_bridge.lake.read import newest_versions
    from otel_s3_bridge.lake.report import REPORT_COLUMNS

    names = sorted(set(REPORT_COLUMNS) | {"timestamp", *lake_schema.VERSION_COLUMNS}, key=lake_schema.SCHEMA.names.index)
    now = int(time.time() * 1000)
    columns = {}
    for name in names:
        kind = lake_schema.SCHEMA.field(name).type
        if name == "trace_id":
            columns[name] = pa.array([f"gen-1795000000-{n:020d}" for n in range(rows)])
        elif name == "span_id":
            columns[name] = pa.array([f"{n:016x}" for n in range(rows)])
        elif name == "ingest_completed_at":
            columns[name] = pa.nulls(rows, kind)
        elif kind == lake_schema.UTC_MS:
            columns[name] = pa.array([now] * rows, kind)
        else:
            columns[name] = pa.array([None] * rows, kind)
    table = pa.table(columns)
    started = time.perf_counter()
    kept = newest_versions(table)
    assert kept.num_rows == rows
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exports", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    gc.freeze()  # as `serve` runs: the cyclic collector seldom (see cli._serve)
    gc.set_threshold(50_000, 50, 100)
    runs: dict[str, list[float]] = {"without content (a join half each)": [], "with content on the span": []}
    alone = []
    for content in (False, True):  # warm-up, not counted: imports, genai-prices' table, first lookups
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
            asyncio.run(_ingest(Path(scratch), _bodies(content, 20, 99)))
    for run in range(args.runs):
        for label, content in (("without content (a join half each)", False), ("with content on the span", True)):
            with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:  # the disk the bridge would use
                bodies = _bodies(content, args.exports, run)
                spent = asyncio.run(_ingest(Path(scratch), bodies))
                runs[label].append(spent / (args.exports * SPANS) * 1e6)
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:
            alone.append(_join_store_alone(Path(scratch), args.exports))
    result = {label: {"cpu_us_per_span": statistics.median(values), "runs": [round(v, 1) for v in values]}
              for label, values in runs.items()}
    result["join store alone (put_spans, 100 halves an export)"] = {
        "cpu_us_per_span": statistics.median(alone), "runs": [round(v, 2) for v in alone]}
    pricing = [_pricing_us() for _ in range(args.runs)]
    dedupe = [_dedupe_seconds() for _ in range(args.runs)]
    print(json.dumps({"spans_per_export": SPANS, "exports": args.exports, "concurrent": CONCURRENT,
                      "join": result,
                      "pricing_us_per_call": statistics.median(pricing), "pricing_runs": [round(v, 2) for v in pricing],
                      "dedupe_seconds_per_million": statistics.median(dedupe),
                      "dedupe_runs": [round(v, 3) for v in dedupe]}, indent=1))


if __name__ == "__main__":
    main()
