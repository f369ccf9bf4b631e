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


def measure(exports: int = 8) -> dict:
    if shutil.which("valgrind") is None:
        return {"missing": "valgrind (apt-get install valgrind)"}
    import otel_s3_bridge
    floor = per_span("floor", exports, pure=True)
    builds = {"compiled" if otel_s3_bridge.BUILD == "compiled" else "installed": per_span("prepare", exports, False),
              "pure": per_span("prepare", exports, True)}
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "exports": exports,
            "floor_per_span": floor, "prepare_per_span": builds,
            "prepare_over_floor": {name: value / floor for name, value in builds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exports", type=int, default=8)
    parser.add_argument("--work", nargs=2, metavar=("WHAT", "EXPORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        _work(args.work[0], int(args.work[1]))
    else:
        print(json.dumps(measure(args.exports)))


if __name__ == "__main__":
    main()
