"""What the Prometheus metrics cost, in-process: the calls one export makes (its request, its spans,
records and LLM usage, one timed PUT per record) for an OpenRouter delivery and a 100-span GenAI
batch, beside what preparing that export costs; in one process's memory, and in prometheus-client's
multiprocess mode (`--workers N`, every update written to a memory-mapped file). Prints JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

START = 1790000000000000000


def _per_call_us(function, seconds: float = 1.5) -> float:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function()
        count += 1
    return (time.perf_counter() - started) / count * 1e6


def measure() -> list[dict]:
    from bench.payloads import batch_template, openrouter_delivery, to_json
    from otel_s3_bridge import metrics
    from otel_s3_bridge.decode import otlp
    from otel_s3_bridge.lake.keys import compile_template
    from otel_s3_bridge.decode.prepare import ExportContext, prepare_export

    context = ExportContext(encoding=otlp.JSON, coding="", key_name="bench", transport="http/json",
                            received_at_unix_nano=START, non_llm_spans="drop",
                            template=compile_template("{prefix}/{date}"), prefix="openrouter-traces",
                            max_request_bytes=64 << 20, max_resource_bytes=16384, max_output_bytes=256 << 20)
    results = []
    for name, document, spans in (("OpenRouter delivery (3 spans, 1 record)",
                                   openrouter_delivery("gen-1790000000-benchbenchbenchbench", START), 3),
                                  ("GenAI batch of 100 spans (100 records)", batch_template(100, START), 100)):
        body = to_json(document)
        prepared = prepare_export(body, context)

        def count_export() -> None:
            metrics.count_request("http/json", "traces", 200)
            metrics.count_trace_export("http/json", prepared.received, prepared.rejections, prepared.usage)
            for _ in prepared.objects:
                metrics.observe_put(0.004, None)

        results.append({"payload": name, "spans": spans, "records": len(prepared.objects),
                        "prepare_us": _per_call_us(lambda: prepare_export(body, context)),
                        "metrics_us": _per_call_us(count_export)})
    return results


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(measure()))
        return
    out = {}
    for mode in ("one process", "multiprocess (--workers N)"):
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with tempfile.TemporaryDirectory() as directory:
            if mode.startswith("multiprocess"):
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            run = subprocess.run([sys.executable, "-m", "bench.metrics_bench", "--child"], env=env, check=True,
                                 capture_output=True, text=True)
        out[mode] = json.loads(run.stdout)
    print(json.dumps([{"mode": mode, **entry} for mode, entries in out.items() for entry in entries]))


if __name__ == "__main__":
    main()
