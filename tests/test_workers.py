"""`--workers N` and its ports, as an operator meets them: one HTTP and one gRPC port that must
differ, and a stop signal sent to the whole process group (Ctrl-C, `timeout`, `kill -- -PGID`)
that must drain every worker once, not make each exit at once on a second copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from conftest import eventually, free_port
from otel_s3_bridge.supervisor import START_GRACE_SECONDS
from test_cli import run_cli
from test_spool_limits import _delivery


class Workers:
    """`serve --workers 2` as a shell starts it: a process group of its own, its log in a file."""

    def __init__(self, tmp_path, *args: str) -> None:
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}/v1/traces"
        self.log_path = tmp_path / "bridge.log"
        with open(self.log_path, "wb") as log:
            self.supervisor = subprocess.Popen(
                [sys.executable, "-m", "otel_s3_bridge", "serve", "--workers", "2", "--http-port", str(self.http_port),
                 "--grpc-port", "0", "--metrics-port", "0", "--spool-dir", str(tmp_path / "spool"), *args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        eventually(lambda: self.log.count("ready:") == 2, 60, lambda: self.log)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def workers(self, which: str = "") -> list[int]:
        found = subprocess.run(["pgrep", *([which] if which else []), "-P", str(self.supervisor.pid)],
                               capture_output=True, text=True).stdout
        return [int(pid) for pid in found.split()]


def test_the_same_port_for_http_and_grpc_is_refused_at_start(tmp_path):
    """With --workers both receivers bound the one port (SO_REUSEPORT), logged ready, and every
    gRPC export failed."""
    port = str(free_port())
    result = run_cli("serve", "--http-port", port, "--grpc-port", port, "--workers", "2", "--output-dir",
                     str(tmp_path / "out"), "--spool-dir", str(tmp_path / "spool"), timeout=30)
    assert result.returncode == 2
    assert f"--grpc-port: {port} is also --http-port" in result.stderr


def test_a_signal_to_the_process_group_drains_every_worker_once(tmp_path):
    """Workers shared the supervisor's process group: a group signal reached each of them twice
    (directly, and forwarded), the second copy meaning "exit at once", so none drained."""
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens: records stay spooled
    bridge = Workers(tmp_path, "--bucket", "nowhere", "--endpoint-url", unreachable, "--drain-seconds", "2")
    try:
        answers = [requests.post(bridge.url, data=_delivery(), headers={"Content-Type": "application/json"},
                                 timeout=30).status_code for _ in range(6)]
        assert answers == [200] * 6
        os.killpg(bridge.supervisor.pid, signal.SIGTERM)  # what Ctrl-C or `timeout` does
        assert bridge.supervisor.wait(60) == 0
    finally:
        if bridge.supervisor.poll() is None:
            os.killpg(bridge.supervisor.pid, signal.SIGKILL)
    assert "second signal" not in bridge.log
    assert bridge.log.count("stopped") >= 2, bridge.log


def test_workers_stop_and_drain_when_their_supervisor_is_killed(tmp_path):
    """In sessions of their own, workers are no longer reached by their supervisor's group: when
    it is killed (-9), each notices and stops, draining, instead of serving on alone."""
    bridge = Workers(tmp_path, "--output-dir", str(tmp_path / "out"))
    workers = bridge.workers()
    assert len(workers) == 2
    bridge.supervisor.kill()
    bridge.supervisor.wait(10)
    eventually(lambda: not any(os.path.exists(f"/proc/{pid}") and
                               open(f"/proc/{pid}/stat").read().split()[2] != "Z" for pid in workers), 30,
               lambda: bridge.log)
    assert bridge.log.count("the supervisor") == 2 and bridge.log.count("stopped") >= 2, bridge.log


def test_a_worker_that_dies_again_soon_after_a_restart_is_restarted_with_backoff(tmp_path):
    """A restarted worker that died within the start grace (10 s) made the supervisor stop every
    worker. Now it is started again, after a growing wait, and the others serve meanwhile."""
    bridge = Workers(tmp_path, "--output-dir", str(tmp_path / "out"))
    try:
        time.sleep(START_GRACE_SECONDS)  # past its first start: from now on a death is the worker's, not the setup's
        first = set(bridge.workers())
        [victim] = bridge.workers("-o")  # one killed, restarted, and the restarted one killed again at once
        for _ in range(2):
            os.kill(victim, signal.SIGKILL)
            # one listing: two calls could see the dead worker in the first and not the new one in the second
            eventually(lambda: len(set(bridge.workers()) - first) == 1, 30, lambda: bridge.log)
            [victim] = set(bridge.workers()) - first
            first.add(victim)
        # the second death is logged when the supervisor reaps it, which can be after the test sees it
        eventually(lambda: "starting it again in 2 s" in bridge.log, 30, lambda: bridge.log)
        eventually(lambda: bridge.log.count("ready:") >= 3, 60, lambda: bridge.log)
        assert bridge.supervisor.poll() is None, bridge.log
        assert requests.post(bridge.url, data=_delivery(), headers={"Content-Type": "application/json"},
                             timeout=30).status_code == 200
    finally:
        os.killpg(bridge.supervisor.pid, signal.SIGTERM)
        assert bridge.supervisor.wait(60) == 0
