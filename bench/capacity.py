"""Capacity at default settings, in one run: `python -m bench.capacity`.

Admission under concurrency: the answers (codes counted per level) to issue 21's honest loads —
8, 16 and 64 concurrent 153 KB OTLP/HTTP protobuf exports of 100 OpenInference spans, 16
concurrent 0.9 MB exports, 16 concurrent gRPC exports — and the process tree's peak RSS. Liveness
while the largest valid export is stored: /healthz latency percentiles (its own connection, in a
loop) during a 20 MiB OTLP/JSON export of 18,700 small spans. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import orjson
import requests

from bench import attacks, payloads
from bench.procfs import memory_mb
from bench.suite import TOKEN, Stack

GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LEVELS = (("153 KB x 64, 8 at a time", 100, 64, 8, "http"),
          ("153 KB x 64, 16 at a time", 100, 64, 16, "http"),
          ("153 KB x 128, 64 at a time", 100, 128, 64, "http"),
          ("0.9 MB x 16, 16 at a time", 600, 16, 16, "http"),
          ("153 KB x 32 gRPC, 16 at a time", 100, 32, 16, "grpc"))


def _codes_http(stack: Stack, body: bytes, exports: int, concurrency: int) -> Counter:
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"}

    def post(_: int) -> str:
        return str(requests.post(stack.url, data=body, headers=headers, timeout=300).status_code)

    with ThreadPoolExecutor(concurrency) as pool:
        return Counter(pool.map(post, range(exports)))


def _codes_grpc(stack: Stack, body: bytes, exports: int, concurrency: int) -> Counter:
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        export = channel.unary_unary(GRPC_EXPORT)

        def call(_: int) -> str:
            try:
                export(body, metadata=metadata, timeout=300)
                return "OK"
            except grpc.RpcError as error:
                return error.code().name

        with ThreadPoolExecutor(concurrency) as pool:
            return Counter(pool.map(call, range(exports)))


def admission(scratch: Path) -> list[dict]:
    results = []
    for label, spans, exports, concurrency, transport in LEVELS:
        body = payloads.openinference_batch(spans)
        stack = Stack(scratch)
        try:
            codes = (_codes_grpc if transport == "grpc" else _codes_http)(stack, body, exports, concurrency)
            results.append({"load": label, "body_bytes": len(body), "codes": dict(codes),
                            "refused": sum(count for code, count in codes.items() if code not in ("200", "OK")),
                            "peak_rss_mb": round(stack.bridge.peak_rss_bytes() / 2**20, 1)})
        finally:
            stack.close()
    return results


def health_during_largest_export(scratch: Path) -> dict:
    body = attacks.small_spans_json()
    stack = Stack(scratch)
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with requests.Session() as session:
            url = f"http://127.0.0.1:{stack.http_port}/healthz"
            while not done.is_set():
                started = time.perf_counter()
                session.get(url, timeout=60)
                latencies.append((time.perf_counter() - started) * 1000)

    try:
        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        started = time.perf_counter()
        response = requests.post(stack.url, data=body, timeout=300,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        seconds = time.perf_counter() - started
        done.set()
        thread.join(60)
        ordered = sorted(latencies)
        spans = len(orjson.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"])
        return {"export_bytes": len(body), "spans": spans,
                "code": response.status_code, "export_seconds": round(seconds, 2), "healthz_answers": len(ordered),
                "healthz_p50_ms": round(statistics.median(ordered), 2),
                "healthz_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
                "healthz_max_ms": round(ordered[-1], 2),
                "peak_rss_mb_per_process": memory_mb(stack.bridge.tree(), "VmHWM")}
    finally:
        done.set()
        stack.close()


def measure() -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="otel-s3-capacity-"))
    try:
        return {"admission": admission(scratch), "largest_export": health_during_largest_export(scratch)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    print(json.dumps(measure()))


if __name__ == "__main__":
    main()
