"""Memory is bounded by what the bridge is configured to hold, and no request stalls the others.

The bridge runs with its default limits against the S3 server; hostile requests come from
`bench/attacks.py` (the benchmarks measure the same requests: bench/RESULTS.md). Memory is read
from /proc: `VmHWM`, the peak resident set of each process of the bridge's tree (its decode
processes included). Each request here took the bridge to gigabytes, or blocked its event loop
for seconds, before. No assertion is about time: liveness is counted (how many /healthz answers
came back while one export was being processed), not timed."""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2

from bench import attacks
from conftest import TOKENS, S3Bridge, list_keys, new_bucket, read_json

GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MB = 1.0
SINGLE_REQUEST_MB = 300 * MB
SIXTEEN_REQUESTS_MB = 1000 * MB


class HealthProbe:
    """GET /healthz in a loop on its own connection while something else happens; counts answers."""

    def __init__(self, bridge: S3Bridge) -> None:
        self.url = f"http://127.0.0.1:{bridge.http_port}/healthz"
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            if session.get(self.url, timeout=60).status_code == 200:
                self.answers += 1

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture
def bridge(moto, s3, tmp_path):
    process = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--grpc-max-message-bytes", str(64 << 20)])
    yield process
    process.stop()
    for token in TOKENS.values():
        assert token not in process.log


def _peaks(bridge: S3Bridge) -> dict[int, float]:
    return bridge.memory_mb("VmHWM")


def _post(bridge: S3Bridge, body: bytes, content_type: str = attacks.JSON, coding: str | None = None):
    headers = {"Content-Type": content_type, **({"Content-Encoding": coding} if coding else {})}
    return bridge.post(body, headers=headers, timeout=300)


@pytest.mark.parametrize("body,coding", [(attacks.amplified_gzip(), "gzip"), (attacks.amplified_plain(), None)],
                         ids=["30 KiB gzip, 4 MiB resource x 600 spans", "2.1 MiB plain, 2 MiB resource x 600 spans"])
def test_a_resource_shared_by_many_spans_is_not_multiplied(bridge, s3, body, coding):
    response = _post(bridge, body, coding=coding)
    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert int(partial.get("rejectedSpans", 0)) == 0 and "resource" in partial["errorMessage"]
    bridge.wait_until_uploaded(120)
    keys = list_keys(s3, bridge.bucket)
    assert len(keys) == 600
    resource = read_json(s3, bridge.bucket, keys[0])["resource"]
    assert resource == {"service.name": "attack", "otel_s3_bridge.dropped_attributes_count": 1}
    assert max(_peaks(bridge).values()) < SINGLE_REQUEST_MB, _peaks(bridge)


def test_sixteen_concurrent_worst_case_requests_stay_under_a_gigabyte(bridge):
    bodies = [(attacks.largest_json(), None), (attacks.amplified_gzip(), "gzip"),
              (attacks.many_spans_protobuf(20_000), None)]

    def send(index: int) -> int:
        body, coding = bodies[index % len(bodies)]
        content_type = attacks.PROTOBUF if index % len(bodies) == 2 else attacks.JSON
        while True:  # as an OTLP client does: retry what is refused for now
            response = _post(bridge, body, content_type, coding)
            if response.status_code != 503:
                return response.status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses == [200] * 16
    peaks = _peaks(bridge)
    assert sum(peaks.values()) < SIXTEEN_REQUESTS_MB, peaks


def test_a_hundred_thousand_spans_neither_stall_nor_stay_in_memory(bridge):
    body = attacks.many_spans_protobuf(100_000)
    with HealthProbe(bridge) as probe:
        response = _post(bridge, body, attacks.PROTOBUF)
        answered = probe.answers
    # 100,000 records of ~1 KB, more than one export may decode to at once: stored a chunk at a time
    assert response.status_code == 200, response.content[:300]
    assert answered >= 10, f"/healthz answered {answered} times while the export was decoded"
    assert max(_peaks(bridge).values()) < SINGLE_REQUEST_MB, _peaks(bridge)
    # The 100,000 records now wait in the spool for upload (their bodies cached up to 32 MiB):
    # what the bridge keeps stays within what one export may take.
    kept = bridge.memory_mb("VmRSS")
    assert max(kept.values()) < SINGLE_REQUEST_MB, kept


def test_the_largest_export_does_not_stall_other_clients(bridge, s3):
    body = attacks.largest_json()
    with HealthProbe(bridge) as probe:
        response = _post(bridge, body)
        answered = probe.answers
    assert response.status_code == 200, response.text[:500]
    assert answered >= 10, f"/healthz answered {answered} times while a {len(body)}-byte export was processed"
    assert max(_peaks(bridge).values()) < SINGLE_REQUEST_MB, _peaks(bridge)


def test_many_empty_gzip_members_are_linear_and_do_not_stall(bridge):
    with HealthProbe(bridge) as probe:
        response = _post(bridge, attacks.empty_gzip_members(4 * 1024 * 1024), coding="gzip")
        answered = probe.answers
    assert response.status_code == 200 and response.json() == {}  # an empty request
    assert answered >= 3


def test_unauthenticated_grpc_calls_are_refused_before_their_messages_are_read(bridge):
    message = b"\x0a" + b"\x00" * (60 * 1024 * 1024)
    baseline = max(_peaks(bridge).values())

    def call(_: int) -> grpc.StatusCode:
        with grpc.insecure_channel(bridge.grpc_target, options=[("grpc.max_send_message_length", 128 << 20)]) as channel:
            try:
                channel.unary_unary(GRPC_EXPORT)(message, metadata=[("authorization", "Bearer wrong")], timeout=60)
            except grpc.RpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(24) as pool:
        codes = set(pool.map(call, range(24)))
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    assert max(_peaks(bridge).values()) < max(baseline + 100, 200), _peaks(bridge)


def test_grpc_calls_beyond_the_cap_are_told_to_retry(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--grpc-max-concurrent-rpcs", "2"])
    try:
        release = threading.Event()

        def silent():  # a request stream that sends nothing until released
            release.wait(60)
            yield from ()

        with grpc.insecure_channel(bridge.grpc_target) as channel:
            held = [channel.stream_unary(GRPC_EXPORT).future(
                silent(), metadata=[("authorization", f"Bearer {TOKENS['sdk']}")], timeout=60) for _ in range(2)]
            refused = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until both held calls are in the handler
                try:
                    channel.unary_unary(GRPC_EXPORT)(b"", metadata=[("authorization", f"Bearer {TOKENS['sdk']}")],
                                                     timeout=30)
                except grpc.RpcError as error:
                    refused = error
                    break
            release.set()
            for call in held:
                call.cancel()
            assert refused is not None and refused.code() == grpc.StatusCode.UNAVAILABLE
            details = dict(refused.trailing_metadata())["grpc-status-details-bin"]
            retry = error_details_pb2.RetryInfo()
            assert status_pb2.Status.FromString(details).details[0].Unpack(retry) and retry.retry_delay.seconds > 0
    finally:
        bridge.stop()


def test_a_decode_process_that_dies_is_replaced_and_nothing_is_lost(bridge, s3):
    """The kernel's OOM killer, say: the export in it is answered 503 (a retry helps) and the next
    large export is decoded by a new process."""
    decoders = [pid for pid in bridge.tree()
                if "spawn_main" in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    assert len(decoders) == 2, bridge.tree()
    for pid in decoders:
        os.kill(pid, signal.SIGKILL)
    body = attacks.largest_json(2 * 1024 * 1024)  # large enough to be decoded in a decode process
    statuses = []
    while not statuses or statuses[-1] == 503:
        statuses.append(_post(bridge, body).status_code)
        assert len(statuses) < 20, statuses
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}
    assert bridge.process.poll() is None
