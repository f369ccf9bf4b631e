"""Where the bridge's CPU goes by phase, for bench.cpu_floor's load: `python -m bench.cpu_phases`.

bench.cpu_floor gives one figure per span; this splits it, reading /proc for the bridge's main
process before the load, when the last export is answered and once every record is in its file:
the loop's thread against the others (the Parquet builds, fsyncs), user against system time, and
minor page faults. With `--warm`, the bridge takes the load once before the measured pass (the
allocators' memory already faulted in). A diagnostic, not a target: bench/analysis.md quotes it.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.cpu_floor import SPANS, bodies, send_all
from bench.procfs import stat_fields
from bench.suite import BATCH_OPTIONS, CLOCK_TICKS, TOKEN, Stack

HEADERS = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"}


def snapshot(pid: int) -> dict:
    """CPU seconds of the main thread and of the others, user and system time, minor faults."""
    main = other = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = stat_fields(f"/proc/{pid}/task/{task}/stat")
        except OSError:  # a thread that ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if int(task) == pid:
            main += seconds
        else:
            other += seconds
    fields = stat_fields(f"/proc/{pid}/stat")
    return {"main": main, "other": other, "user": int(fields[11]) / CLOCK_TICKS,
            "system": int(fields[12]) / CLOCK_TICKS, "faults": int(fields[7])}


def _per_span(before: dict, after: dict, spans: int) -> dict:
    phase = {name: (after[name] - before[name]) / spans * 1e6 for name in ("main", "other", "user", "system")}
    return {**{f"{name}_us": round(value, 1) for name, value in phase.items()},
            "faults_per_span": round((after["faults"] - before["faults"]) / spans, 2)}


def one_run(scratch: Path, warm: bool) -> dict:
    stack = Stack(scratch, extra=BATCH_OPTIONS)
    try:
        warm_up = bodies() if warm else bodies(1, 10)
        if set(send_all(stack.url, warm_up, HEADERS, 2)) != {200}:
            raise RuntimeError("the warm-up was refused")
        stack.wait_drained(poll_seconds=0.25)
        load = bodies()
        spans = len(load) * SPANS
        pid = stack.bridge.popen.pid
        requests_before, before = stack.s3_requests(), snapshot(pid)
        codes = send_all(stack.url, load, HEADERS, 2)
        answered = snapshot(pid)
        stack.wait_stored(requests_before)
        stored = snapshot(pid)
        if set(codes) != {200}:
            raise RuntimeError(f"the load was answered {sorted(set(codes))}")
        return {"answering": _per_span(before, answered, spans), "flush": _per_span(answered, stored, spans)}
    finally:
        stack.close()


def measure(runs: int, warm: bool) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="otel-s3-phases-"))
    try:
        outcomes = [one_run(scratch, warm) for _ in range(runs)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    median = {phase: {key: statistics.median(run[phase][key] for run in outcomes) for key in outcomes[0][phase]}
              for phase in ("answering", "flush")}
    return {"warm": warm, "runs": outcomes, "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="send the load once before the measured pass")
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.warm)))


if __name__ == "__main__":
    main()
