"""What Parquet built without a second parse would cost here: `python -m bench.lake_columns`.

The batch layout spools each record as JSON and, at a flush, DuckDB parses those bodies again into
the lake's columns. The alternative is columns made at ingest, per export, from the records the
decoder already holds, and spooled in place of the JSON (Arrow IPC). This times both sides of that
trade in-process, per record, over bench.cpu_floor's bodies (100 exports of 100 GenAI spans):

* at ingest: `encode_json` (what the spool takes today) against `lake_columns_core.export_columns`
  (a prototype, checked equal to `lake.schema.table` of the same records) plus its IPC encoding,
  interpreted and compiled with mypyc (as the decode core is);
* at the flush: DuckDB over the bodies into a Parquet file (the writer's `_duckdb_tables`) against
  the IPC batches read back and written as the same Parquet file.

Each figure is the least of several passes (process CPU). A diagnostic for bench/analysis.md, not a
target. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSES = 7


def _least(work: Callable[[], object], records: int, passes: int = PASSES) -> float:
    """µs a record of the least disturbed pass."""
    least = float("inf")
    for _ in range(passes):
        started = time.process_time()
        work()
        least = min(least, time.process_time() - started)
    return least / records * 1e6


def _exports():
    from bench import cpu_floor
    from otel_s3_bridge.decode import otlp
    from otel_s3_bridge.decode.records import DecodeResult, iter_records
    from otel_s3_bridge.enrich.pricing import price_record

    context = cpu_floor.prepare_context()
    exports = []
    for body in cpu_floor.bodies():
        parsed = otlp.parse(body, "protobuf", max_resource_bytes=context.max_resource_bytes)
        records = list(iter_records(parsed.spans, DecodeResult(), key_name=context.key_name,
                                    transport=context.transport, received_at_unix_nano=context.received_at_unix_nano,
                                    non_llm_spans=context.non_llm_spans))
        for record in records:
            price_record(record, context.prices, context.received_at_unix_nano)
        exports.append(records)
    return exports, context.received_at_unix_nano // 1_000_000


def _columns(core, records: list[dict], received_ms: int):
    """`core.export_columns` of one export: the lake's fields read as they are, the rest derived."""
    from otel_s3_bridge.lake import schema

    derived = {"timestamp", "scope_name", "scope_version", "ingest_received_at", "ingest_key_name",
               "ingest_transport", "ingest_completed_at", *schema.JSON_COLUMNS}
    plain = [name for name in schema.SCHEMA.names if name not in derived]
    return core.export_columns(records, plain, [schema.SCHEMA.field(name).type for name in plain],
                               list(schema.JSON_COLUMNS), received_ms, schema.SCHEMA)


def _ipc(batch) -> bytes:
    """The record batch as an Arrow IPC stream (what the spool would hold in place of the JSON)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def measure_ingest(core_module: str) -> dict:
    """In this process: encoding every record as JSON, against columns of each export and their IPC."""
    import importlib

    import pyarrow as pa

    from otel_s3_bridge.lake import schema
    from otel_s3_bridge.lake.encode import encode_json

    core = importlib.import_module(core_module)
    exports, received_ms = _exports()
    records = sum(map(len, exports))

    def columns():
        return [_columns(core, export, received_ms) for export in exports]

    batches = columns()
    built = pa.Table.from_batches(batches)
    expected = schema.table([record for export in exports for record in export])
    if not built.equals(expected):
        raise AssertionError("the prototype's columns differ from lake.schema.table")
    return {"records": records, "encode_json_us": _least(lambda: [encode_json(r) for e in exports for r in e], records),
            "columns_us": _least(columns, records), "ipc_us": _least(lambda: [_ipc(b) for b in batches], records),
            "ipc_bytes_per_record": sum(len(_ipc(b)) for b in batches) / records,
            "json_bytes_per_record": sum(len(encode_json(r)) for e in exports for r in e) / records}


def measure_flush() -> dict:
    """In this process: one 10,000-record Parquet file from the JSON bodies through DuckDB, against
    from the export's IPC batches."""
    import pyarrow as pa

    from bench import lake_columns_core as core
    from otel_s3_bridge.deliver import batch_writer
    from otel_s3_bridge.lake import schema
    from otel_s3_bridge.lake.encode import encode_json

    exports, received_ms = _exports()
    bodies = [encode_json(record) for export in exports for record in export]
    streams = [_ipc(_columns(core, export, received_ms)) for export in exports]
    scratch = Path(tempfile.mkdtemp(prefix="lake-columns-"))
    database = batch_writer.DuckDB(scratch)
    try:
        duckdb_us = _least(lambda: schema.encode_tables(batch_writer._duckdb_tables(iter([bodies]), database)),
                           len(bodies), passes=5)
        columnar_us = _least(lambda: schema.encode_tables([pa.Table.from_batches(
            [pa.ipc.open_stream(stream).read_next_batch() for stream in streams])]), len(bodies), passes=5)
    finally:
        database.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"duckdb_parquet_us": duckdb_us, "columnar_parquet_us": columnar_us}


def _child(*arguments: str, pythonpath: Path | None = None) -> dict:
    import os

    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = subprocess.run([sys.executable, "-m", "bench.lake_columns", *arguments], env=env, check=True,
                         capture_output=True, text=True, cwd=HERE.parent).stdout
    return json.loads(out)


def measure() -> dict:
    results = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "ingest_interpreted": _child("--ingest", "bench.lake_columns_core"), "flush": _child("--flush")}
    scratch = Path(tempfile.mkdtemp(prefix="lake-columns-mypyc-"))
    try:  # the prototype compiled as the decode core is (mypyc is installed with the bench's dependencies)
        shutil.copy(HERE / "lake_columns_core.py", scratch / "lake_columns_compiled.py")
        subprocess.run([sys.executable, "-m", "mypyc", "lake_columns_compiled.py"], cwd=scratch, check=True,
                       capture_output=True)
        results["ingest_compiled"] = _child("--ingest", "lake_columns_compiled", pythonpath=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ingest, flush = results["ingest_compiled"], results["flush"]
    # Per record, columns spooled in place of JSON: what ingest adds, what the flush saves.
    results["net_us_per_record"] = (ingest["columns_us"] + ingest["ipc_us"] - ingest["encode_json_us"]
                                    + flush["columnar_parquet_us"] - flush["duckdb_parquet_us"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ingest", metavar="MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--flush", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest:
        print(json.dumps(measure_ingest(args.ingest)))
    elif args.flush:
        print(json.dumps(measure_flush()))
    else:
        print(json.dumps(measure(), indent=1))


if __name__ == "__main__":
    main()
