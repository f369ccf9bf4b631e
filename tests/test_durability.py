"""Lose nothing: fault injection with real parts. The bridge runs as a process with its spool on
disk, S3 is moto behind a fault-injecting proxy (its own process), clients post real deliveries.
Every test compares the set of acknowledged records with the set of objects in the bucket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import orjson
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from conftest import (TOKENS, Proxy, S3Bridge, eventually, key_for, list_keys, new_bucket, read_json,
                      stored_keys)
from otel_s3_bridge.sample import sample_delivery
from otlp_builders import to_protobuf
from test_grpc_and_sdk import genai_spans

FAST_RETRIES = ["--upload-retry-max-seconds", "1"]


@pytest.fixture
def proxy(moto):
    proxy = Proxy(moto.url)
    yield proxy
    proxy.stop()


def delivery() -> tuple[bytes, str]:
    """A distinct OpenRouter-shaped delivery and the key it must land on."""
    now = time.time_ns()
    generation_id = f"gen-{now // 1_000_000_000}-{uuid.uuid4().hex[:20]}"
    return orjson.dumps(sample_delivery(generation_id, now)), key_for(generation_id, now)


def post_all(bridge: S3Bridge, count: int) -> set[str]:
    acknowledged = set()
    for _ in range(count):
        body, key = delivery()
        response = bridge.post(body)
        assert response.status_code == 200, response.text
        acknowledged.add(key)
    return acknowledged


class Load:
    """Client threads posting distinct deliveries until stopped; remembers what was acknowledged."""

    def __init__(self, bridge: S3Bridge, threads: int = 4) -> None:
        self.bridge = bridge
        self.sent: set[str] = set()
        self.acknowledged: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            body, key = delivery()
            with self._lock:
                self.sent.add(key)
            try:
                response = session.post(self.bridge.url, data=body, headers=self.bridge.headers(), timeout=30)
            except requests.RequestException:
                continue  # the bridge went away: this one was never acknowledged
            if response.status_code == 200:
                with self._lock:
                    self.acknowledged.add(key)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def wait_for(self, acknowledged: int, timeout: float = 60) -> None:
        eventually(lambda: len(self.acknowledged) >= acknowledged, timeout,
                   lambda: f"only {len(self.acknowledged)} acknowledged", interval=0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)


def wait_for_workers(bridge: S3Bridge, count: int) -> None:
    eventually(lambda: bridge.log.count("ready:") >= count, 30, lambda: bridge.log)


def child_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


def restart(bridge: S3Bridge, proxy: Proxy, extra: list[str]) -> S3Bridge:
    """The same bridge configuration and spool directory, a new process."""
    return S3Bridge(proxy, bridge.bucket, bridge.log_path.with_name("restarted.log"),
                    ["--spool-dir", str(bridge.log_path.parent / "spool"), *extra])


def test_s3_down_at_start_then_up(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", FAST_RETRIES)  # nothing listens there yet
    try:
        assert "cannot be reached yet" in bridge.log
        assert requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=5).status_code == 200
        acknowledged = post_all(bridge, 25)
        assert list_keys(s3, bucket) == []
        proxy.start()
        bridge.wait_until_uploaded()
        assert set(stored_keys(s3, bucket)) == acknowledged
        assert read_json(s3, bucket, sorted(acknowledged)[0])["model"] == "openai/gpt-4-turbo"
    finally:
        assert bridge.stop() == 0


def test_flaky_s3_every_object_arrives_once_per_key(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start("--fail-rate", "0.35", "--kinds", "500,503,baddigest,reset,stall", "--stall-seconds", "3")
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", [*FAST_RETRIES, "--s3-timeout-seconds", "1"])
    try:
        acknowledged = post_all(bridge, 60)
        bridge.wait_until_uploaded(wait_seconds=120)
        keys = list_keys(s3, bucket)
        assert len(keys) == len(set(keys)) and set(keys) == acknowledged
        counters = proxy.counters()
        assert all(counters[f"fault_{kind}"] > 0 for kind in ("500", "503", "baddigest", "reset", "stall")), counters
    finally:
        assert bridge.stop() == 0


def test_kill_9_during_load_then_restart_delivers_every_acknowledged_record(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start("--fail-rate", "0.2", "--kinds", "503,stall", "--stall-seconds", "2")
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", [*FAST_RETRIES, "--s3-timeout-seconds", "1"])
    with Load(bridge) as load:
        load.wait_for(150)
        bridge.process.kill()  # SIGKILL in the middle of appends, fsyncs and uploads
        bridge.process.wait(10)
    acknowledged = set(load.acknowledged)
    restarted = restart(bridge, proxy, FAST_RETRIES)
    try:
        restarted.wait_until_uploaded(wait_seconds=120)
        keys = set(list_keys(s3, bucket))
        assert acknowledged <= keys, f"{len(acknowledged - keys)} acknowledged records missing"
        assert keys <= load.sent
    finally:
        assert restarted.stop() == 0


def test_torn_last_write_is_skipped_with_a_warning(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", FAST_RETRIES)  # S3 down: all stays spooled
    acknowledged = post_all(bridge, 10)
    bridge.process.kill()
    bridge.process.wait(10)
    [segment] = (tmp_path / "spool" / "segments").glob("*.seg")
    with open(segment, "ab") as handle:  # what a crash in the middle of a write leaves
        handle.write(b"OSB1\x00\x10\x00\x00partial")
    proxy.start()
    restarted = restart(bridge, proxy, FAST_RETRIES)
    try:
        restarted.wait_until_uploaded()
        assert set(list_keys(s3, bucket)) == acknowledged
        assert "is cut short" in restarted.log and "Traceback" not in restarted.log
    finally:
        assert restarted.stop() == 0


def test_sigterm_during_load_drains_and_exits_0(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start("--fail-rate", "0.1", "--kinds", "503")
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", [*FAST_RETRIES, "--drain-seconds", "20"])
    with Load(bridge) as load:
        load.wait_for(100)
        bridge.process.send_signal(signal.SIGTERM)
        assert bridge.process.wait(35) == 0  # drain deadline 20 s + in-flight grace
    keys = set(list_keys(s3, bucket))
    assert load.acknowledged <= keys, f"{len(load.acknowledged - keys)} acknowledged records missing"
    assert list((tmp_path / "spool" / "segments").glob("*.seg")) == []  # everything drained
    assert "stopped" in bridge.log


def test_second_signal_exits_at_once_and_loses_nothing(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", [*FAST_RETRIES, "--drain-seconds", "600"])
    acknowledged = post_all(bridge, 20)  # S3 is down: the drain could never finish
    bridge.process.send_signal(signal.SIGTERM)
    eventually(lambda: "draining" in bridge.log, 20)
    bridge.process.send_signal(signal.SIGTERM)
    assert bridge.process.wait(10) != 0
    proxy.start()
    restarted = restart(bridge, proxy, FAST_RETRIES)
    try:
        assert "20 entries left by an earlier run" in restarted.log
        restarted.wait_until_uploaded()
        assert set(list_keys(s3, bucket)) == acknowledged
    finally:
        assert restarted.stop() == 0


def test_full_spool_answers_503_and_the_sdk_retry_succeeds_once_there_is_room(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log",
                      [*FAST_RETRIES, "--spool-max-bytes", str(1024 * 1024)])  # S3 down: the spool fills
    try:
        acknowledged, response = set(), None
        for _ in range(2000):
            body, key = delivery()
            response = bridge.post(body)
            if response.status_code != 200:
                break
            acknowledged.add(key)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "spool is full" in response.json()["message"]
        ready = requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=5)
        assert ready.status_code == 503 and "spool is full" in ready.json()["reason"]

        with grpc.insecure_channel(bridge.grpc_target) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                         request_serializer=None,
                                         response_deserializer=ExportTraceServiceResponse.FromString)
            with pytest.raises(grpc.RpcError) as error:
                export(to_protobuf(orjson.loads(delivery()[0])),
                       metadata=[("authorization", f"Bearer {TOKENS['openrouter']}")], timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        retry = error_details_pb2.RetryInfo()
        details = dict(error.value.trailing_metadata())["grpc-status-details-bin"]
        assert status_pb2.Status.FromString(details).details[0].Unpack(retry)

        spans = genai_spans("conv-after-room")
        exporter = HttpExporter(endpoint=bridge.url, timeout=90,
                                headers={"Authorization": f"Bearer {TOKENS['sdk']}"})
        result: list = []
        client = threading.Thread(target=lambda: result.append(exporter.export(spans)))
        client.start()
        time.sleep(1)  # let the exporter meet a 503 first
        proxy.start()  # S3 is back: the spool drains and makes room
        client.join(120)
        assert result == [SpanExportResult.SUCCESS]
        bridge.wait_until_uploaded()
        keys = set(list_keys(s3, bucket))
        assert acknowledged <= keys
        assert [k for k in keys if format(spans[0].context.trace_id, "032x") in k]
    finally:
        assert bridge.stop() == 0


def test_permanent_error_quarantines_and_spool_retry_delivers(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start()
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", FAST_RETRIES)
    spool_dir = str(tmp_path / "spool")
    try:
        s3.delete_bucket(Bucket=bucket)  # the bucket disappears under the running bridge
        acknowledged = post_all(bridge, 12)
        bridge.wait_until_uploaded()  # nothing pending: all of it is in quarantine
        status = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "spool", "status", "--spool-dir",
                                 spool_dir], capture_output=True, text=True, timeout=30)
        assert "quarantined:        12 record(s)" in status.stdout, status.stdout
        assert "does not exist" in status.stdout
        assert bridge.log.count("refused an object for good") == 1  # once per distinct cause

        s3.create_bucket(Bucket=bucket)  # the fix
        retried = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "spool", "retry", "--spool-dir",
                                  spool_dir], capture_output=True, text=True, timeout=30)
        assert retried.returncode == 0 and "moved 12" in retried.stdout
        eventually(lambda: set(list_keys(s3, bucket)) == acknowledged, 60,
                   lambda: "spool retry did not deliver everything", interval=0.1)
        bridge.wait_until_uploaded()
        after = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "spool", "status", "--spool-dir",
                                spool_dir], capture_output=True, text=True, timeout=30)
        assert "quarantined:        0 record(s)" in after.stdout
        assert "waiting for upload: 0 record(s)" in after.stdout
    finally:
        assert bridge.stop() == 0


def test_health_endpoints(moto, s3, proxy, tmp_path):
    proxy.start()
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log")
    try:
        assert requests.get(f"http://127.0.0.1:{bridge.http_port}/healthz", timeout=5).json() == {"status": "ok"}
        ready = requests.get(f"http://127.0.0.1:{bridge.http_port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
    finally:
        assert bridge.stop() == 0


def test_ack_after_upload_mode_still_available(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    proxy.start()
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", ["--ack", "upload"])
    try:
        body, key = delivery()
        assert bridge.post(body).status_code == 200
        assert list_keys(s3, bucket) == [key]  # there at the moment of the acknowledgement
        assert not (tmp_path / "spool").exists()
    finally:
        assert bridge.stop() == 0


def test_request_bytes_in_memory_are_bounded(moto, s3, proxy, tmp_path):
    proxy.start()
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log",
                      ["--max-inflight-bytes", str(1024 * 1024), "--max-request-bytes", str(2 * 1024 * 1024)])
    try:
        slow = socket.create_connection(("127.0.0.1", bridge.http_port), timeout=10)
        slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {TOKENS['openrouter']}\r\nContent-Length: {1_500_000}\r\n\r\n".encode()
                     + b" " * 1_000_000)  # a slow client: most of its body, then a pause
        eventually(lambda: bridge.readiness()["inflight_bytes"] >= 1_000_000, 20, interval=0.02)
        response = bridge.post(b" " * 300_000)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        assert "--max-inflight-bytes" in response.json()["message"]
        slow.sendall(b" " * 500_000)  # the slow client finishes: an (empty) export, answered 200
        assert slow.recv(100).startswith(b"HTTP/1.1 200")
        slow.close()
        assert bridge.readiness()["inflight_bytes"] == 0
        assert bridge.post(b" " * 300_000).status_code == 200
    finally:
        assert bridge.stop() == 0


def test_workers_share_the_ports_and_each_has_its_own_spool(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log", [*FAST_RETRIES, "--workers", "2"])
    try:
        wait_for_workers(bridge, 2)
        acknowledged = set()
        for _ in range(40):  # a new connection each time: the kernel spreads them over the workers
            body, key = delivery()
            assert requests.post(bridge.url, data=body, headers={**bridge.headers(), "Connection": "close"},
                                 timeout=10).status_code == 200
            acknowledged.add(key)
        proxy.start()  # S3 was down: each worker holds part of the load in its own spool
        spools = [tmp_path / "spool" / f"worker-{n}" for n in (0, 1)]
        assert all((spool / "segments").is_dir() for spool in spools)
        eventually(lambda: set(list_keys(s3, bucket)) == acknowledged, 60, interval=0.1)
    finally:
        assert bridge.stop() == 0
    assert bridge.log.count("ready:") == 2 and "worker-1" in bridge.log


def test_a_spool_left_by_more_workers_is_adopted(moto, s3, proxy, tmp_path):
    bucket = new_bucket(s3)
    first = S3Bridge(proxy, bucket, tmp_path / "bridge.log", [*FAST_RETRIES, "--workers", "2"])
    wait_for_workers(first, 2)
    acknowledged = set()
    for _ in range(10):  # S3 is down: all of it stays in the two workers' spools
        body, key = delivery()
        assert requests.post(first.url, data=body, headers={**first.headers(), "Connection": "close"},
                             timeout=10).status_code == 200
        acknowledged.add(key)
    workers = child_pids(first.process.pid)
    assert len(workers) == 2
    for pid in [first.process.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    first.process.wait(10)
    eventually(lambda: not any(Path(f"/proc/{pid}").exists()
                               and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in workers),
               10)
    proxy.start()
    single = S3Bridge(proxy, bucket, tmp_path / "single.log", ["--spool-dir", str(tmp_path / "spool"), *FAST_RETRIES])
    try:
        eventually(lambda: acknowledged <= set(list_keys(s3, bucket)), 60,
                   lambda: "records of the former workers were not uploaded", interval=0.1)
    finally:
        assert single.stop() == 0


def test_a_full_disk_is_a_full_spool_not_a_crash(moto, s3, proxy, tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        bucket = new_bucket(s3)
        bridge = S3Bridge(proxy, bucket, tmp_path / "bridge.log",  # S3 down: the spool fills the disk
                          [*FAST_RETRIES, "--spool-dir", str(disk / "spool")])
        try:
            acknowledged, response = set(), None
            for _ in range(2000):
                body, key = delivery()
                response = bridge.post(body)
                if response.status_code != 200:
                    break
                acknowledged.add(key)
            assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
            assert "the disk holding" in response.json()["message"]
            assert bridge.process.poll() is None and "Traceback" not in bridge.log
            proxy.start()
            bridge.wait_until_uploaded()
            assert acknowledged <= set(list_keys(s3, bucket))
            body, key = delivery()  # accepted once the full segment is uploaded and replaced
            eventually(lambda: bridge.post(body).status_code == 200, 30, lambda: bridge.log, interval=0.1)
            bridge.wait_until_uploaded()
            assert key in set(list_keys(s3, bucket))
        finally:
            assert bridge.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_kill_9_leaves_no_decode_process_behind(moto, s3, proxy, tmp_path):
    """An OOM kill or `kill -9` of the bridge: its decode processes end by themselves."""
    bridge = S3Bridge(proxy, new_bucket(s3), tmp_path / "bridge.log", FAST_RETRIES)
    eventually(lambda: len(bridge.tree()) >= 3, 30, lambda: f"decode processes not started: {bridge.tree()}")
    children = [pid for pid in bridge.tree() if pid != bridge.process.pid]
    bridge.process.kill()
    bridge.process.wait(10)

    def alive(pid: int) -> bool:
        try:
            return "python" in Path(f"/proc/{pid}/cmdline").read_text() and \
                Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    eventually(lambda: not any(alive(pid) for pid in children), 30,
               lambda: f"still running after the bridge was killed: {[pid for pid in children if alive(pid)]}")
