"""Connections are never held forever, and HTTP-level mischief is refused cheaply and quietly.

Real sockets against the real bridge: idle, partial-header and slow-body connections (slowloris),
a file-descriptor limit far below the number of connections, `Expect: 100-continue` with a wrong
token, clients that vanish mid-body, and header bytes aiohttp refuses itself."""

from __future__ import annotations

import selectors
import socket
import time

import grpc
import orjson
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench import attacks
from conftest import TOKENS, S3Bridge, eventually, list_keys, new_bucket

FAST = ["--header-timeout-seconds", "2", "--body-timeout-seconds", "3", "--keepalive-timeout-seconds", "3"]


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def _connect_without_waiting(port: int) -> socket.socket:
    """A connection that may still be completing (an attacker does not wait for the handshake)."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    return sock


def _all_closed_by_the_server(sockets: list[socket.socket], timeout: float) -> dict[str, int]:
    """Read every socket until the server closes it; what each one got before the close."""
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = b""
    open_sockets = set(sockets)
    deadline = time.monotonic() + timeout
    while open_sockets and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BlockingIOError) as error:
                data = b"" if isinstance(error, ConnectionResetError) else None
            if data is None:
                continue
            if data:
                received[sock] += data
            else:
                selector.unregister(sock)
                open_sockets.discard(sock)
    assert not open_sockets, f"{len(open_sockets)} of {len(sockets)} connections still open after {timeout} s"
    answers = {}
    for data in received.values():
        status = data.split(b"\r\n", 1)[0].decode() if data else "closed without an answer"
        answers[status] = answers.get(status, 0) + 1
    return answers


def _valid_export() -> bytes:
    return orjson.dumps(attacks.export([attacks.llm_span()]))


def test_slowloris_connections_are_closed_and_a_valid_export_meanwhile_succeeds(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", FAST)
    try:
        idle = [_connect(bridge.http_port) for _ in range(340)]
        partial = [_connect(bridge.http_port) for _ in range(330)]
        slow_body = [_connect(bridge.http_port) for _ in range(330)]
        for sock in partial:
            sock.send(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: app")
        for sock in slow_body:
            sock.send(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + TOKENS["sdk"].encode() + b"\r\nContent-Length: 100000\r\n\r\n{\"res")
        response = bridge.post(_valid_export())
        assert response.status_code == 200
        answers = _all_closed_by_the_server(idle + partial + slow_body, timeout=60)
        assert answers == {"closed without an answer": 670, "HTTP/1.1 503 Service Unavailable": 330}, answers
        assert "Traceback" not in bridge.log
        assert len(list_keys(s3, bridge.bucket)) == 1
    finally:
        bridge.stop()


def test_a_low_descriptor_limit_degrades_without_flooding_the_log(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", FAST, descriptors=300)
    try:
        assert "file-descriptor limit (300)" in bridge.log
        crowd = [_connect_without_waiting(bridge.http_port) for _ in range(1000)]
        response = None
        for _ in range(5):  # an OTLP client retries a connection that was closed on it
            try:
                response = bridge.post(_valid_export())
                break
            except requests.ConnectionError:
                continue
        assert response is not None and response.status_code == 200
        with grpc.insecure_channel(bridge.grpc_target) as channel:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(
                trace_service_pb2.ExportTraceServiceRequest(), timeout=30,
                metadata=[("authorization", f"Bearer {TOKENS['sdk']}")])
        for sock in crowd:
            sock.close()
        assert len(bridge.log) < 20_000, f"{len(bridge.log)} bytes of log"
        assert "Too many open files" not in bridge.log and "Traceback" not in bridge.log
    finally:
        bridge.stop()


def _raw(port: int, request: bytes, read_until: bytes = b"\r\n\r\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while read_until not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_expect_continue_with_a_wrong_token_gets_401_not_100(bridge):
    answer = _raw(bridge.http_port, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer wrong-token-3b9d1e\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]


def test_expect_continue_with_the_right_token_gets_100_then_200(bridge):
    body = _valid_export()
    with socket.create_connection(("127.0.0.1", bridge.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + TOKENS["sdk"].encode() + b"\r\nExpect: 100-continue\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_client_vanishing_mid_body_is_not_an_error(bridge):
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", bridge.http_port), timeout=10) as sock:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + TOKENS["sdk"].encode() + b"\r\nContent-Length: 100000\r\n\r\n"
                         + b"x" * 1000)
    assert bridge.post(_valid_export()).status_code == 200  # and the bridge has noticed every close
    eventually(lambda: bridge.readiness()["inflight_bytes"] == 0, 30)
    assert " ERROR " not in bridge.log and "Traceback" not in bridge.log


def test_header_bytes_aiohttp_refuses_are_answered_without_echo_or_traceback(bridge):
    token = TOKENS["openrouter"].encode()
    control = _raw(bridge.http_port, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                   + token[:5] + b"\x01" + token[5:] + b"\r\nContent-Length: 2\r\n\r\n{}", read_until=b"}")
    assert control.split(b"\r\n")[0].endswith(b" 400 Bad Request") and token[5:] not in control
    assert b'"code":3' in control  # a google.rpc.Status body
    undecodable = _raw(bridge.http_port, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                       + token + b"\xff\r\nContent-Length: 2\r\n\r\n{}")
    assert undecodable.startswith(b"HTTP/1.1 401"), undecodable[:80]
    assert "Traceback" not in bridge.log and token[5:].decode() not in bridge.log
