"""Limits under attack: what the hostile requests of `bench/attacks.py` cost the bridge, and how
the event loop answers meanwhile. `python -m bench.hardening` (after `pip install -e '.[test]'`);
writes bench/hardening.json and re-renders bench/RESULTS.md with it (section 6).

Each scenario starts a fresh bridge (its local-directory sink, default limits unless said), sends
the requests from this process, and reads from /proc: VmHWM (peak resident set) of every process
of the bridge's tree, and VmRSS after the request. /healthz latency comes from a thread sending
GET /healthz back to back on one connection while the export is in flight.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import orjson
import requests

from bench import attacks
from bench.procfs import memory_mb
from bench.report import write_report
from bench.suite import Process, free_port

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token-0123456789"
GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Bridge:
    def __init__(self, scratch: Path, *extra: str) -> None:
        self.dir = Path(tempfile.mkdtemp(dir=scratch))
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}/v1/traces"
        self.process = Process(
            [sys.executable, "-m", "otel_s3_bridge", "serve", "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(free_port()), "--token", f"bench={TOKEN}",
             "--output-dir", str(self.dir / "out"),
             "--spool-dir", str(self.dir / "spool"), "--log-level", "warning", *extra],
            self.http_port, self.dir / "bridge.log")
        time.sleep(1.0)  # the decode processes start right after the port opens

    def memory(self, field: str) -> dict[int, float]:
        return memory_mb(self.process.tree(), field)

    def post(self, body: bytes, content_type: str = attacks.JSON, coding: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type}
        if coding:
            headers["Content-Encoding"] = coding
        return requests.post(self.url, data=body, headers=headers, timeout=600).status_code

    def stop(self) -> None:
        self.process.stop()


class HealthLatency:
    def __init__(self, bridge: Bridge) -> None:
        self.url = f"http://127.0.0.1:{bridge.http_port}/healthz"
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.perf_counter()
            session.get(self.url, timeout=600)
            self.samples.append((time.perf_counter() - started) * 1000)

    def __enter__(self) -> HealthLatency:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        ordered = sorted(self.samples)
        return {"answers": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
                "max_ms": round(ordered[-1], 1)}


def while_processing(scratch: Path, body: bytes, content_type: str, coding: str | None, *extra: str) -> dict:
    bridge = Bridge(scratch, *extra)
    try:
        baseline = bridge.memory("VmRSS")
        with HealthLatency(bridge) as health:
            started = time.perf_counter()
            status = bridge.post(body, content_type, coding)
            seconds = time.perf_counter() - started
        time.sleep(0.5)
        return {"status": status, "request_seconds": round(seconds, 2), "body_bytes": len(body),
                "healthz": health.summary(), "peak_mb": bridge.memory("VmHWM"), "baseline_mb": baseline,
                "after_mb": bridge.memory("VmRSS")}
    finally:
        bridge.stop()


def sixteen_concurrent(scratch: Path) -> dict:
    bridge = Bridge(scratch)
    bodies = [(attacks.largest_json(), attacks.JSON, None), (attacks.amplified_gzip(), attacks.JSON, "gzip"),
              (attacks.many_spans_protobuf(20_000), attacks.PROTOBUF, None)]
    refused = [0]

    def send(index: int) -> int:
        body, content_type, coding = bodies[index % len(bodies)]
        while True:
            status = bridge.post(body, content_type, coding)
            if status != 503:
                return status
            refused[0] += 1

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(send, range(16)))
        peak = bridge.memory("VmHWM")
        return {"statuses": statuses, "seconds": round(time.perf_counter() - started, 1), "retried_503": refused[0],
                "peak_mb": peak, "peak_sum_mb": round(sum(peak.values()), 1)}
    finally:
        bridge.stop()


def unauthenticated_grpc(scratch: Path) -> dict:
    bridge = Bridge(scratch, "--grpc-max-message-bytes", str(64 << 20))
    message = b"\x0a" + b"\x00" * (60 * 1024 * 1024)

    def call(_: int) -> str:
        with grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}",
                                   options=[("grpc.max_send_message_length", 128 << 20)]) as channel:
            try:
                channel.unary_unary(GRPC_EXPORT)(message, metadata=[("authorization", "Bearer wrong")], timeout=120)
            except grpc.RpcError as error:
                return error.code().name
        return "OK"

    try:
        with ThreadPoolExecutor(24) as pool:
            codes = sorted(set(pool.map(call, range(24))))
        peak = bridge.memory("VmHWM")
        return {"codes": codes, "peak_mb": peak, "peak_sum_mb": round(sum(peak.values()), 1)}
    finally:
        bridge.stop()


def gzip_members() -> dict:
    from otel_s3_bridge.decode.compression import inflate

    timings = {}
    for mebibytes in (1, 2, 4, 8):
        body = attacks.empty_gzip_members(mebibytes * 1024 * 1024)
        started = time.perf_counter()
        inflate(body, "gzip", 20 * 1024 * 1024)
        timings[f"{mebibytes} MiB"] = round(time.perf_counter() - started, 2)
    return timings


def slowloris(scratch: Path, connections: int = 1000) -> dict:
    bridge = Bridge(scratch)  # default timeouts: headers 10 s, body 30 s, keep-alive 60 s
    try:
        sockets = []
        for n in range(connections):
            sock = socket.create_connection(("127.0.0.1", bridge.http_port), timeout=10)
            if n % 3 == 1:
                sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
            elif n % 3 == 2:
                sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                             + b"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            sock.setblocking(False)
            sockets.append(sock)
        opened = time.perf_counter()
        started = time.perf_counter()
        status = bridge.post(orjson.dumps(attacks.export([attacks.llm_span()])))
        export_ms = round((time.perf_counter() - started) * 1000, 1)
        selector = selectors.DefaultSelector()
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        closed_at: list[float] = []
        remaining = set(sockets)
        while remaining and time.perf_counter() - opened < 120:
            for key, _ in selector.select(timeout=1):
                try:
                    data = key.fileobj.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    selector.unregister(key.fileobj)
                    remaining.discard(key.fileobj)
                    closed_at.append(time.perf_counter() - opened)
        for sock in sockets:
            sock.close()
        return {"connections": connections, "valid_export_status": status, "valid_export_ms": export_ms,
                "still_open_after_120_s": len(remaining), "last_closed_after_s": round(max(closed_at), 1),
                "log_bytes": len(bridge.process.log.read_text())}
    finally:
        bridge.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="otel-s3-bridge-hardening-"))
    largest = attacks.largest_json()
    many_spans = attacks.many_spans_protobuf(100_000)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                   f"Linux {platform.release()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench.hardening",
        "largest_json": while_processing(scratch, largest, attacks.JSON, None),
        "largest_json_in_a_thread": while_processing(scratch, largest, attacks.JSON, None, "--decode-processes", "0"),
        "many_spans_protobuf": while_processing(scratch, many_spans, attacks.PROTOBUF, None),
        "many_spans_protobuf_in_a_thread": while_processing(scratch, many_spans, attacks.PROTOBUF, None,
                                                            "--decode-processes", "0"),
        "amplified_gzip": while_processing(scratch, attacks.amplified_gzip(), attacks.JSON, "gzip"),
        "amplified_plain": while_processing(scratch, attacks.amplified_plain(), attacks.JSON, None),
        "empty_gzip_members_8_mib": while_processing(scratch, attacks.empty_gzip_members(8 << 20), attacks.JSON, "gzip"),
        "sixteen_concurrent": sixteen_concurrent(scratch),
        "unauthenticated_grpc_24x60mib": unauthenticated_grpc(scratch),
        "gzip_members_inflate_seconds": gzip_members(),
        "slowloris": slowloris(scratch),
    }
    (HERE / "hardening.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(json.loads((HERE / "results.json").read_text()), HERE / "RESULTS.md")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
