"""Tokens never reach a log line, refusals never flood the log, keys come from a token file that
can be rotated without a restart, and keys routed to their own prefix and bucket never share a
namespace. Against the real bridge and S3 server; the suite's last check (conftest) searches every
bridge log it wrote for every test token."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid

import grpc
import orjson
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench import attacks
from conftest import (PRESENTED_TOKENS, TOKENS, BridgeProcess, S3Bridge, eventually, free_port, key_for, list_keys,
                      new_bucket, read_json)
from otel_s3_bridge.sample import sample_delivery
from test_cli import run_cli


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(10)
        try:
            return sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return b""


def _export() -> bytes:
    return orjson.dumps(attacks.export([attacks.llm_span()]))


def test_no_path_puts_a_token_in_the_log_even_at_debug_level(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--log-level", "debug"])
    try:
        token = TOKENS["openrouter"].encode()
        head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        for header in (b"Authorization: Bearer " + token[:6] + b"\x01" + token[6:],  # aiohttp echoed this one
                       b"Authorization: Bearer " + token + b"\xff",
                       b"Authorization: Bearer " + token + b"\x7f",
                       b"Authorization: Basic " + token,
                       b"Authorization: Bearer " + PRESENTED_TOKENS[1].encode(),
                       b"Authorization: " + token,
                       b"X-Padding: " + b"p" * 9000 + b"\r\nAuthorization: Bearer " + token,  # a line too long
                       b"".join(b"X-%d: 1\r\n" % n for n in range(200)) + b"Authorization: Bearer " + token):
            _raw(bridge.http_port, head + header + b"\r\n\r\n{}")
        _raw(bridge.http_port, b"GET /v1/traces?token=" + token + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        with grpc.insecure_channel(bridge.grpc_target) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            for presented in (PRESENTED_TOKENS[1], TOKENS["sdk"]):
                try:
                    stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10,
                                metadata=[("authorization", f"Bearer {presented}")])
                except grpc.RpcError:
                    pass
        assert bridge.post(_export()).status_code == 200
    finally:
        bridge.stop()
    log = bridge.log
    for secret in (*TOKENS.values(), *PRESENTED_TOKENS, TOKENS["openrouter"][6:]):
        assert secret not in log, f"{secret!r} is in the log"
    assert "Traceback" not in log


def test_unauthenticated_traffic_does_not_amplify_the_log(bridge):
    """Every kind of unauthenticated request, many times: missing, wrong, undecodable or malformed
    tokens. Each used to be answered quietly, with a 503 and a traceback, or with aiohttp's ERROR
    and traceback; now all are counted in a line or two."""
    before = len(bridge.log)
    variants = [b"", b"Authorization: Bearer " + PRESENTED_TOKENS[0].encode() + b"\r\n",
                b"Authorization: Bearer \xff\xfe\r\n", b"Authorization: Bearer a\x01b\r\n",
                b"Authorization: Basic dXNlcjpwYXNz\r\n"]
    sent = 0
    for n in range(1000):
        request = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   + variants[n % len(variants)] + b"Content-Length: 2\r\n\r\n{}")
        answer = _raw(bridge.http_port, request)
        assert answer.split(b" ", 2)[1] in (b"401", b"400"), answer[:60]
        sent += len(request)
    grown = len(bridge.log) - before
    assert grown < 2_000, f"{sent} bytes of unauthenticated requests wrote {grown} bytes of log"


def _k8s_secret(directory, content: str) -> str:
    """A file mounted the way Kubernetes mounts a Secret: `tokens` -> `..data/tokens`, and `..data`
    a symlink swapped atomically to a new directory when the Secret changes."""
    version = directory / f"..{uuid.uuid4().hex}"
    version.mkdir()
    (version / "tokens").write_text(content)
    staging = directory / "..data_tmp"
    staging.symlink_to(version.name)
    os.replace(staging, directory / "..data")
    link = directory / "tokens"
    if not link.is_symlink():
        link.symlink_to("..data/tokens")
    return str(link)


def _status(bridge: BridgeProcess, token: str) -> int:
    return requests.post(bridge.url, data=_export(), timeout=10, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"}).status_code


def test_a_token_file_is_re_read_when_it_changes(moto, s3, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    beta = "tok-beta-only-hashed-0c1d2e"
    alpha, alpha_next = PRESENTED_TOKENS[2], "tok-alpha-next-8f7e6d"
    path = _k8s_secret(secret, f"# keys\nalpha={alpha}\n\nbeta=sha256:{hashlib.sha256(beta.encode()).hexdigest()}\n")
    bucket = new_bucket(s3)
    bridge = BridgeProcess(["--bucket", bucket, "--endpoint-url", moto.url, "--token-file", path,
                            "--spool-dir", str(tmp_path / "spool"), "--ack", "upload"], tmp_path / "bridge.log")
    try:
        assert _status(bridge, alpha) == 200 and _status(bridge, beta) == 200 and _status(bridge, "nope") == 401
        names = {read_json(s3, bucket, key)["ingest"]["key_name"] for key in list_keys(s3, bucket)}
        assert names == {"alpha", "beta"}
        _k8s_secret(secret, f"alpha={alpha_next}\nbeta=sha256:{hashlib.sha256(beta.encode()).hexdigest()}\n")
        eventually(lambda: _status(bridge, alpha_next) == 200, 30)
        assert _status(bridge, alpha) == 401 and _status(bridge, beta) == 200
        _k8s_secret(secret, "alpha\nbeta=sha256:nothex\n")  # a broken update keeps the keys in use
        eventually(lambda: "cannot be used" in bridge.log, 30)
        assert _status(bridge, alpha_next) == 200
        assert "line 1 is not NAME=TOKEN" in bridge.log and "line 2 (beta)" in bridge.log
    finally:
        bridge.stop()
    assert alpha_next not in bridge.log and beta not in bridge.log


def test_a_bad_token_file_stops_start_up_with_the_line_and_never_the_value(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("good=abcdefgh\nbroken line with tok-secret-123\nother=sha256:12\n")
    result = subprocess.run(
        [sys.executable, "-m", "otel_s3_bridge", "serve", "--token-file", str(path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "line 2 is not NAME=TOKEN" in result.stderr and "line 3 (other)" in result.stderr
    assert "tok-secret-123" not in result.stderr and "abcdefgh" not in result.stderr


def test_keys_routed_to_their_own_prefix_and_bucket_never_overwrite_each_other(moto, s3, tmp_path):
    bucket, sdk_bucket = new_bucket(s3), new_bucket(s3)
    bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log", [
        "--key-prefix", "openrouter=tenants/openrouter", "--key-prefix", "sdk=tenants/sdk",
        "--key-bucket", f"sdk={sdk_bucket}", "--ack", "upload"])
    try:
        now = time.time_ns()
        generation = f"gen-{now // 10**9}-{uuid.uuid4().hex[:20]}"
        body = orjson.dumps(sample_delivery(generation, now))
        assert bridge.post(body, key="openrouter").status_code == 200
        assert bridge.post(body, key="sdk").status_code == 200  # the same generation id, another tenant
        own = read_json(s3, bucket, key_for(generation, now, prefix="tenants/openrouter"))
        other = read_json(s3, sdk_bucket, key_for(generation, now, prefix="tenants/sdk"))
        assert own["ingest"]["key_name"] == "openrouter" and other["ingest"]["key_name"] == "sdk"
        assert list_keys(s3, bucket) == [key_for(generation, now, prefix="tenants/openrouter")]
    finally:
        bridge.stop()


@pytest.mark.parametrize("routes,problem", [
    (["--key-prefix", "openrouter=t/a", "--key-prefix", "sdk=t/a/b"], "would share a namespace"),
    (["--key-prefix", "openrouter=openrouter-traces/x"], "would share a namespace"),
    (["--key-prefix", "nobody=t/x"], "not the name of a key"),
])
def test_routes_that_would_mix_tenants_are_refused(tmp_path, routes, problem):
    result = subprocess.run(
        [sys.executable, "-m", "otel_s3_bridge", "serve", "--token", f"openrouter={TOKENS['openrouter']}",
         "--token", f"sdk={TOKENS['sdk']}", *routes], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and problem in result.stderr
    assert TOKENS["openrouter"] not in result.stderr


@pytest.mark.parametrize("route", ["flag", "config"])
def test_a_key_routed_to_a_missing_bucket_stops_start_up(moto, s3, tmp_path, route):
    """Either way of giving a key its bucket: --key-bucket, or `bucket` in its [keys.NAME] table
    (which the start-up check once left unprobed: the bridge started, then refused every upload)."""
    config = tmp_path / "bridge.toml"
    config.write_text('[keys.sdk]\nbucket = "no-such-bucket-for-sdk"\n')
    where = ["--key-bucket", "sdk=no-such-bucket-for-sdk"] if route == "flag" else ["--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-m", "otel_s3_bridge", "serve", "--bucket", new_bucket(s3), "--endpoint-url", moto.url,
         "--token", f"sdk={TOKENS['sdk']}", *where,
         "--spool-dir", str(tmp_path / "spool"), "--http-port", str(free_port()), "--grpc-port", "0"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "'no-such-bucket-for-sdk' does not exist" in result.stderr


BARE_TOKEN = "dG9rLWJhc2U2NC1zZWNyZXQtOTk4NzY1NDMyMQ=="  # base64, two '=' of padding, no name


def test_a_bare_base64_token_without_a_name_is_refused_never_taken_for_a_name(tmp_path):
    """`TOKEN==` parsed as the key named TOKEN whose token is `=`: `Bearer =` authenticated, and
    the real token's text went into the log, records and object keys as the key's name. Refused,
    from the token file and from --token, naming the line or entry, never the text."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# keys\n{BARE_TOKEN}\n")
    for args in (["--token-file", str(tokens)], ["--token", BARE_TOKEN]):
        result = run_cli("serve", *args, "--output-dir", str(tmp_path / "out"), "--http-port", str(free_port()),
                         "--grpc-port", "0", "--metrics-port", "0", timeout=30)
        assert result.returncode == 2, result.stdout + result.stderr
        assert ("line 2" if "--token-file" in args else "entry 1") in result.stderr
        assert "has no name" in result.stderr
        assert BARE_TOKEN not in result.stderr + result.stdout and BARE_TOKEN[:-2] not in result.stderr
