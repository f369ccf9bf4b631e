"""The bridge beside Arize Phoenix, same OTLP load, same run: `python -m bench.phoenix`.

Phoenix (`phoenix serve`, its own virtualenv: bench/run installs bench/phoenix.lock into
.venv-phoenix) and the bridge (batch layout, then trace layout, on the mock S3) each receive the
same OTLP/HTTP protobuf exports of 100 GenAI chat spans, 2 at a time. CPU is that of each server's
whole process tree from the first export until it has stored everything: the bridge's spool
drained, Phoenix's CPU quiet (it writes spans to its SQLite database in the background) and every
span counted by its REST API. The bridge takes the load three times per layout (a fresh bridge each
time) and its median counts: its side is ~0.15 s of CPU read in 10 ms ticks, and single runs of
the same code read 65 to 95 µs a span within minutes. Prints one JSON object: CPU per span of each
and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench import cpu_floor
from bench.suite import ROOT, Process, free_port

PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"
EXPORTS = 20
QUIET_CPU_SECONDS = 0.05  # per second: Phoenix is done once its tree spends less than this
BRIDGE_RUNS = 3


def _quiet(process: Process, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    last = process.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = process.cpu_seconds()
        if now - last < QUIET_CPU_SECONDS:
            return
        last = now
    raise RuntimeError("Phoenix did not settle")


def _stored_spans(port: int) -> int:
    """Spans Phoenix holds in its default project, counted page by page through its REST API."""
    count, cursor = 0, None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"http://127.0.0.1:{port}/v1/projects/default/spans", params=params, timeout=60).json()
        count += len(page.get("data", []))
        cursor = page.get("next_cursor")
        if not cursor:
            return count


def phoenix_seconds(scratch: Path, bodies: list[bytes], phoenix: Path, concurrency: int) -> dict:
    http_port, grpc_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(dir=scratch))
    env = {"PHOENIX_WORKING_DIR": str(work), "PHOENIX_PORT": str(http_port), "PHOENIX_GRPC_PORT": str(grpc_port),
           "PHOENIX_HOST": "127.0.0.1", "PHOENIX_TELEMETRY_ENABLED": "false"}
    server = Process([str(phoenix), "serve"], http_port, work / "phoenix.log", env=env)
    url = f"http://127.0.0.1:{http_port}/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    try:
        deadline = time.monotonic() + 120
        while requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("Phoenix did not become healthy")
            time.sleep(0.5)
        warm = cpu_floor.bodies(1, 10)[0]
        assert requests.post(url, data=warm, headers=headers, timeout=60).status_code == 200
        _quiet(server)
        cpu = server.cpu_seconds()
        codes = cpu_floor.send_all(url, bodies, headers, concurrency)
        _quiet(server)
        cpu = server.cpu_seconds() - cpu
        return {"cpu_seconds": cpu, "codes": sorted(set(codes)), "stored_spans": _stored_spans(http_port) - 10,
                "peak_rss_mb": server.peak_rss_bytes() / 2**20}
    finally:
        server.stop()


def measure(phoenix: Path = PHOENIX, exports: int = EXPORTS) -> dict:
    if not phoenix.exists():
        raise SystemExit(f"{phoenix} is missing: bash bench/run installs it (bench/phoenix.lock)")
    scratch = Path(tempfile.mkdtemp(prefix="otel-s3-phoenix-"))
    try:
        bodies = cpu_floor.bodies(exports)
        spans = exports * cpu_floor.SPANS
        other = phoenix_seconds(scratch, bodies, phoenix, cpu_floor.CONCURRENCY)
        batch = [cpu_floor.bridge_seconds(scratch, bodies) for _ in range(BRIDGE_RUNS)]
        trace = [cpu_floor.bridge_seconds(scratch, bodies, extra=("--layout", "trace")) for _ in range(BRIDGE_RUNS)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    phoenix_us = other["cpu_seconds"] / spans * 1e6
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "exports": exports, "spans_per_export": cpu_floor.SPANS, "concurrency": cpu_floor.CONCURRENCY,
              "phoenix_version": _version(phoenix), "phoenix": {**other, "us_per_span": phoenix_us}}
    for name, runs in (("bridge_batch", batch), ("bridge_trace", trace)):
        median = sorted(runs, key=lambda run: run["cpu_seconds"])[len(runs) // 2]
        us = median["cpu_seconds"] / spans * 1e6
        result[name] = {**median, "us_per_span": us, "share_of_phoenix": us / phoenix_us,
                        "runs_us_per_span": [run["cpu_seconds"] / spans * 1e6 for run in runs]}
    return result


def _version(phoenix: Path) -> str:
    done = subprocess.run([str(phoenix.parent / "python"), "-c",
                           "import importlib.metadata as m; print(m.version('arize-phoenix'))"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phoenix", type=Path, default=PHOENIX, help="the `phoenix` executable")
    parser.add_argument("--exports", type=int, default=EXPORTS)
    args = parser.parse_args()
    print(json.dumps(measure(args.phoenix, args.exports)))


if __name__ == "__main__":
    sys.exit(main())
