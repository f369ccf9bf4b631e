"""`--workers N`: runs N bridge processes that share the ports (SO_REUSEPORT), each with its own
spool directory, each in a session of its own; forwards SIGTERM/SIGINT to them and restarts one that
dies after start-up.
Workers write their metrics to one fresh directory (`<spool-dir>/metrics`), which worker 0 serves
summed; a worker's live gauges are dropped when it ends. Must not touch data: every worker is a
complete bridge.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from . import metrics
from .config import BridgeConfig
from .deliver.spool_commands import adopt_orphan_spools

log = logging.getLogger("otel_s3_bridge.supervisor")

WORKER_ENV = "OTEL_S3_BRIDGE_WORKER_INDEX"
START_GRACE_SECONDS = 10.0  # a worker that exits sooner at its first start failed to start: stop everything
RESTART_BACKOFF_SECONDS = 1.0  # a worker restarted, then dying again soon, waits this, doubled each time,
RESTART_BACKOFF_MAX_SECONDS = 60.0  # up to this, before its next start


def worker_index() -> int | None:
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None else None


def supervise(config: BridgeConfig, argv: Sequence[str]) -> int:
    moved = adopt_orphan_spools(config.spool_dir, config.for_worker(0).spool_dir)
    if moved:
        log.info("moved %d spool file(s) left by a former configuration into worker-0's spool", moved)
    stopping = {"signals": 0}
    children: dict[int, tuple[subprocess.Popen, float]] = {}
    metrics_dir = os.path.join(config.spool_dir, "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counters start from zero with the supervisor
    os.makedirs(metrics_dir, exist_ok=True)

    def spawn(index: int) -> None:
        # In a session of its own: a signal to the supervisor's process group (Ctrl-C, `timeout`) reaches
        # the workers once, forwarded, not twice (a second signal means "exit at once", without a drain).
        process = subprocess.Popen([sys.executable, "-m", "otel_s3_bridge", *argv], start_new_session=True,
                                   env={**os.environ, WORKER_ENV: str(index), metrics.MULTIPROCESS_ENV: metrics_dir})
        children[index] = (process, time.monotonic())

    def forward(signum: int, _frame: object) -> None:
        stopping["signals"] += 1
        for process, _ in children.values():
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    restarts = [0] * config.workers  # restarts of each worker in a row, each soon after the one before
    for index in range(config.workers):
        spawn(index)
    log.info("started %d workers sharing the ports", config.workers)

    status = 0
    while children:
        pid, code = os.wait()
        index = next((i for i, (p, _) in children.items() if p.pid == pid), None)
        if index is None:
            continue
        process, started = children.pop(index)
        process.returncode = os.waitstatus_to_exitcode(code)
        metrics.forget_process(pid, metrics_dir)
        if stopping["signals"]:
            status = max(status, process.returncode)
            continue
        quick = time.monotonic() - started < START_GRACE_SECONDS
        if quick and not restarts[index]:  # the first start: a configuration the others share fails too
            log.error("worker %d failed to start (exit %s); stopping the others", index, process.returncode)
            forward(signal.SIGTERM, None)
            status = 1
            continue
        restarts[index] = restarts[index] + 1 if quick else 1  # dying again at once: wait longer each time
        delay = min(RESTART_BACKOFF_SECONDS * 2 ** (restarts[index] - 1), RESTART_BACKOFF_MAX_SECONDS)
        log.warning("worker %d exited with %s; starting it again in %.0f s", index, process.returncode, delay)
        time.sleep(delay)  # signals are still forwarded meanwhile
        if not stopping["signals"]:
            spawn(index)
    return status
