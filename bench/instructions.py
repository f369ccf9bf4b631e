"""Instructions per span, counted by valgrind's callgrind: `python -m bench.instructions`.

CPU seconds on a shared 2-CPU machine move by ±30 % from one pass to the next; instruction counts
do not (the same binary, inputs and environment give the same count). This counts, for the bodies
of bench.cpu_floor (100-span OTLP/protobuf exports of GenAI chat spans), what `prepare_export`
(parse, decode, price, key, encode) executes per span on each build of the decode core, against
the floor (parse with protobuf, read each attribute once into a dict, encode it with orjson). Each
figure is a difference of differences, divided by the spans: (the work on WARM + `--exports`
exports − the work on WARM) − (building those bodies alone − building WARM's): start-up, imports,
first calls and building the bodies cancel out. Instructions
are not time (a cache miss costs more than an addition): this is the stable half of the picture,
the /proc CPU of bench.cpu_floor the other. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BRIDGE_EXPORTS = 100  # bench.cpu_floor's load, for the whole bridge under callgrind (~90 s)
WARM = 2  # exports done before the counted ones, in every process (caches filled, first-call costs paid)


def _work(what: str, exports: int) -> None:
    """In the counted process: build the bodies, then do `what` on WARM + `exports` of them."""
    from bench import cpu_floor

    bodies = cpu_floor.bodies(WARM + exports)
    gc.freeze()  # as `serve` does after start-up
    gc.set_threshold(50_000, 50, 100)
    if what == "prepare":
        from otel_s3_bridge.decode.prepare import prepare_export
        context = cpu_floor.prepare_context()
        for body in bodies:
            prepare_export(body, context)
    elif what == "floor":
        cpu_floor.floor_seconds(bodies)


@functools.cache
def count(what: str, exports: int, pure: bool) -> int:
    """Instructions a whole process executes doing `what` on WARM + `exports` exports."""
    env = {key: value for key, value in os.environ.items() if key != "OTEL_S3_BRIDGE_PURE"}
    env["PYTHONHASHSEED"] = "0"  # the same dict and set layouts in every counted process
    if pure:
        env["OTEL_S3_BRIDGE_PURE"] = "1"
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           sys.executable, "-m", "bench.instructions", "--work", what, str(exports)],
                          cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", done.stderr).group(1))


def per_span(what: str, exports: int, pure: bool) -> float:
    from bench.cpu_floor import SPANS
    work = count(what, exports, pure) - count(what, 0, pure)
    bodies = count("none", exports, pure) - count("none", 0, pure)
    return (work - bodies) / (exports * SPANS)


def bridge_per_span(exports: int = BRIDGE_EXPORTS) -> float:
    """What the whole bridge executes per span, every thread, for bench.cpu_floor's load: the bridge
    runs under callgrind with counting off, takes the load once uncounted (warm: its first flush,
    DuckDB opened), then counts from the first export of the load again until every record is in
    its file (the Parquet build and the upload included; the drain probes too, ~0.1 % of it). A
    batch file closes when it holds the load's records, never on its age: under callgrind the load
    takes ~50 times as long, and a 5 s age would cut it into several files. User space only: what
    the kernel does for the bridge (page faults, sockets, fsync) is not an instruction counted here."""
    import tempfile

    from bench.cpu_floor import SPANS, bodies, send_all
    from bench.suite import TOKEN, Stack

    scratch = Path(tempfile.mkdtemp(prefix="otel-s3-instructions-"))
    out = scratch / "callgrind.out"
    one_file = ("--layout", "batch", "--batch-max-age-seconds", "3600", "--batch-max-records", str(exports * SPANS))
    stack = Stack(scratch, extra=one_file, wrapper=(
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"))
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"}
    try:
        if set(send_all(stack.url, bodies(exports), headers, 2)) != {200}:
            raise RuntimeError("the bridge refused the warm-up load under callgrind")
        stack.wait_drained(timeout=1200, poll_seconds=1)
        load = bodies(exports)
        pid = str(stack.bridge.popen.pid)
        subprocess.run(["callgrind_control", "--instr=on", pid], check=True, capture_output=True)
        codes = send_all(stack.url, load, headers, 2)
        stack.wait_drained(timeout=1200, poll_seconds=1)
        subprocess.run(["callgrind_control", "--instr=off", pid], check=True, capture_output=True)
        if set(codes) != {200}:
            raise RuntimeError(f"the bridge answered {sorted(set(codes))} under callgrind")
        stack.close()  # callgrind writes its file as the bridge exits
        return int(re.search(r"^totals: (\d+)", out.read_text(), re.M).group(1)) / (exports * SPANS)
    finally:
        stack.close()
        shutil.rmtree(scratch, ignore_errors=True)


def measure(exports: int = 8) -> dict:
    if shutil.which("valgrind") is None:
        return {"missing": "valgrind (apt-get install valgrind)"}
    import otel_s3_bridge
    floor = per_span("floor", exports, pure=True)
    builds = {"compiled" if otel_s3_bridge.BUILD == "compiled" else "installed": per_span("prepare", exports, False),
              "pure": per_span("prepare", exports, True)}
    bridge = bridge_per_span()
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "exports": exports,
            "floor_per_span": floor, "prepare_per_span": builds,
            "prepare_over_floor": {name: value / floor for name, value in builds.items()},
            "bridge_exports": BRIDGE_EXPORTS, "bridge_per_span": bridge, "bridge_over_floor": bridge / floor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exports", type=int, default=8)
    parser.add_argument("--bridge-only", action="store_true", help="count the whole bridge's instructions only")
    parser.add_argument("--work", nargs=2, metavar=("WHAT", "EXPORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        _work(args.work[0], int(args.work[1]))
    elif args.bridge_only:
        print(json.dumps({"bridge_per_span": bridge_per_span()}))
    else:
        print(json.dumps(measure(args.exports)))


if __name__ == "__main__":
    main()
