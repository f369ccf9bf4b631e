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
    http_port = free_port()
    log_path = tmp_path / "bridge.log"
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens: records stay spooled
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "otel_s3_bridge", "serve", "--workers", "2", "--http-port", str(http_port),
             "--grpc-port", "0", "--metrics-port", "0", "--bucket", "nowhere", "--endpoint-url", unreachable,
             "--spool-dir", str(tmp_path / "spool"), "--drain-seconds", "2"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group, as a shell's job
    try:
        eventually(lambda: log_path.read_text().count("ready:") == 2, 60, log_path.read_text)
        answers = [requests.post(f"http://127.0.0.1:{http_port}/v1/traces", data=_delivery(),
                                 headers={"Content-Type": "application/json"}, timeout=30).status_code
                   for _ in range(6)]
        assert answers == [200] * 6
        os.killpg(supervisor.pid, signal.SIGTERM)  # what Ctrl-C or `timeout` does
        assert supervisor.wait(60) == 0
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
    text = log_path.read_text()
    assert "second signal" not in text
    assert text.count("stopped") >= 2, text


def test_workers_stop_and_drain_when_their_supervisor_is_killed(tmp_path):
    """In sessions of their own, workers are no longer reached by their supervisor's group: when
    it is killed (-9), each notices and stops, draining, instead of serving on alone."""
    http_port = free_port()
    log_path = tmp_path / "bridge.log"
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "otel_s3_bridge", "serve", "--workers", "2", "--http-port", str(http_port),
             "--grpc-port", "0", "--metrics-port", "0", "--output-dir", str(tmp_path / "out"),
             "--spool-dir", str(tmp_path / "spool")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    eventually(lambda: log_path.read_text().count("ready:") == 2, 60, log_path.read_text)
    workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True,
                                                    text=True).stdout.split()]
    assert len(workers) == 2
    supervisor.kill()
    supervisor.wait(10)
    eventually(lambda: not any(os.path.exists(f"/proc/{pid}") and
                               open(f"/proc/{pid}/stat").read().split()[2] != "Z" for pid in workers), 30,
               log_path.read_text)
    text = log_path.read_text()
    assert text.count("the supervisor") == 2 and text.count("stopped") >= 2, text


def test_a_worker_that_dies_again_soon_after_a_restart_is_restarted_with_backoff(tmp_path):
    """A restarted worker that died within the start grace (10 s) made the supervisor stop every
    worker. Now it is started again, after a growing wait, and the others serve meanwhile."""
    http_port = free_port()
    log_path = tmp_path / "bridge.log"
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "otel_s3_bridge", "serve", "--workers", "2", "--http-port", str(http_port),
             "--grpc-port", "0", "--metrics-port", "0", "--output-dir", str(tmp_path / "out"),
             "--spool-dir", str(tmp_path / "spool")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def workers() -> list[int]:
        return [int(pid) for pid in subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True,
                                                     text=True).stdout.split()]
    try:
        eventually(lambda: log_path.read_text().count("ready:") == 2, 60, log_path.read_text)
        time.sleep(START_GRACE_SECONDS)  # past its first start: from now on a death is the worker's, not the setup's
        for which in ("-o", "-n"):  # one killed, restarted, and that one (the newest) killed again at once
            victim = int(subprocess.run(["pgrep", which, "-P", str(supervisor.pid)], capture_output=True,
                                        text=True).stdout)
            os.kill(victim, signal.SIGKILL)
            eventually(lambda: len(workers()) == 2 and victim not in workers(), 30, log_path.read_text)
        eventually(lambda: log_path.read_text().count("ready:") >= 3, 60, log_path.read_text)
        assert supervisor.poll() is None, log_path.read_text()
        ok = requests.post(f"http://127.0.0.1:{http_port}/v1/traces", data=_delivery(),
                           headers={"Content-Type": "application/json"}, timeout=30)
        assert ok.status_code == 200
        assert "starting it again in 2 s" in log_path.read_text()
    finally:
        os.killpg(supervisor.pid, signal.SIGTERM)
        assert supervisor.wait(60) == 0
