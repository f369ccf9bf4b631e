"""The bridge's own S3 PUT (`--s3-put-path direct`) against what S3 and the network really do: an
error document that arrives in parts, a redirect to another host, a peer that stops reading the
body, an endpoint at an IPv6 literal. The bridge runs as a process; the fault-injecting proxy (or
a bare HTTP server of the test's) plays the network; results are read back from moto."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib

import pytest

from conftest import BridgeProcess, Proxy, S3Bridge, free_port, key_for, new_bucket, \
    read_json
from otel_s3_bridge.sample import sample_delivery


def _delivery(prompt_bytes: int = 0) -> tuple[bytes, str, int]:
    """An OpenRouter delivery (with a prompt of `prompt_bytes`), its generation id and start."""
    generation = f"gen-{uuid.uuid4().hex}"
    start = time.time_ns()
    document = sample_delivery(generation, start)
    if prompt_bytes:
        for attribute in document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]:
            if attribute["key"] == "gen_ai.prompt":
                attribute["value"]["stringValue"] = json.dumps({"messages": [
                    {"role": "user", "content": "x" * prompt_bytes}]})
    return json.dumps(document).encode(), generation, start


def test_an_error_document_in_two_parts_is_read_whole(moto, s3, tmp_path):
    """S3's `RequestTimeout` (retryable) arrived in two reads: only the first, without its <Code>,
    was parsed, and the record was quarantined as refused for good."""
    body, generation, start = _delivery()
    proxy = Proxy(moto.url).start("--split-error-keys", generation)
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--endpoint-url", proxy.url])
    try:
        assert bridge.post(body).status_code == 200
        assert read_json(s3, bridge.bucket, key_for(generation, start))["generation_id"] == generation
        assert proxy.counters()["split"] == 1 and bridge.readiness()["quarantined_total"] == 0
    finally:
        assert bridge.stop() == 0
        proxy.stop()


class _Elsewhere(http.server.BaseHTTPRequestHandler):
    """Another host: answers 200 to anything, and remembers what reached it."""

    received: list[dict] = []

    def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Elsewhere.received.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_redirect_is_never_followed(moto, s3, tmp_path):
    """A 307 to another host was followed: the PUT went there (without its signature, but with a
    session token when there is one) and that host's 200 counted as stored. Now it is S3's
    `TemporaryRedirect`, retried where the bucket is."""
    elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Elsewhere)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    body, generation, start = _delivery()
    proxy = Proxy(moto.url).start("--redirect-keys", generation, "--redirect-to",
                                  f"http://127.0.0.1:{elsewhere.server_address[1]}")
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--endpoint-url", proxy.url],
                      env={"AWS_SESSION_TOKEN": "session-token-for-the-test"})
    try:
        assert bridge.post(body).status_code == 200
        assert read_json(s3, bridge.bucket, key_for(generation, start))["generation_id"] == generation
        assert proxy.counters()["redirected"] == 2
        assert _Elsewhere.received == []
    finally:
        assert bridge.stop() == 0
        proxy.stop()
        elsewhere.shutdown()


def test_a_peer_that_never_answers_but_trickles_does_not_hold_the_put_forever(moto, s3, tmp_path):
    """The first PUT is answered `100 Continue` every half second, its body never read: each byte
    reset the read timeout, and with no deadline on the whole request the upload hung for good.
    Now the PUT's deadline (timeouts plus the body at 512 KiB/s) ends it, and the retry stores it."""
    body, generation, start = _delivery()
    proxy = Proxy(moto.url).start("--trickle-keys", generation)
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--endpoint-url", proxy.url, "--s3-timeout-seconds", "2"])
    try:
        assert bridge.post(body).status_code == 200
        assert read_json(s3, bridge.bucket, key_for(generation, start), wait_seconds=60)["generation_id"] == generation
        assert proxy.counters()["trickled"] == 1
    finally:
        assert bridge.stop() == 0
        proxy.stop()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_endpoint_at_an_ipv6_literal_is_signed_as_it_is_sent(tmp_path):
    """`--endpoint-url http://[::1]:PORT`: the signed Host lost its brackets, so every PUT failed
    as "bad credentials" against an S3 server that checks signatures."""
    if not _ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback (::1), which the test needs")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "::1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("::1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "moto did not listen on ::1"
                time.sleep(0.05)
        import boto3

        url = f"http://[::1]:{port}"
        setup = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "setup",
                 "aws_secret_access_key": "setup"}
        boto3.client("s3", **setup).create_bucket(Bucket="ipv6-traces")  # 1
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="writer")  # 2
        iam.put_user_policy(UserName="writer", PolicyName="p", PolicyDocument=json.dumps({  # 3
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName="writer")["AccessKey"]  # 4: the last unchecked call
        env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        body, generation, start = _delivery()
        bridge = BridgeProcess(["--bucket", "ipv6-traces", "--endpoint-url", url, "--spool-dir",
                                str(tmp_path / "spool")], tmp_path / "bridge.log", env=env)
        try:
            import requests

            assert requests.post(bridge.url, data=body, headers={"Content-Type": "application/json"},
                                 timeout=30).status_code == 200
            bridge.wait_until_uploaded()
            assert bridge.readiness()["quarantined_total"] == 0, bridge.log
        finally:
            assert bridge.stop() == 0
        reader = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        assert reader.head_object(Bucket="ipv6-traces", Key=key_for(generation, start))
    finally:
        server.terminate()
        server.wait(10)


def test_an_https_endpoint_with_its_own_ca_is_written_unsigned_payload(moto, s3, tmp_path):
    """S3 over HTTPS, as AWS, R2 and most MinIO deployments are: the direct path's connections
    speak TLS, check the endpoint's certificate against the CA that botocore is given
    (`AWS_CA_BUNDLE`, here a CA made for the test: the system's would refuse it), and send the
    payload as `UNSIGNED-PAYLOAD`, as AWS's SDKs do over HTTPS."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    ca.cert_pem.write_to_path(str(ca_file))
    proxy = Proxy(moto.url, tls=(str(chain), str(key), str(ca_file))).start()
    body, generation, start = _delivery()
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--endpoint-url", proxy.url],
                      env={"AWS_CA_BUNDLE": str(ca_file)})
    try:
        assert bridge.post(body).status_code == 200
        assert read_json(s3, bridge.bucket, key_for(generation, start))["generation_id"] == generation
        counters = proxy.counters()
        assert counters["puts"] >= 2 and counters["unsigned_payload"] == counters["puts"]  # the check's probe too
        assert bridge.readiness()["quarantined_total"] == 0
    finally:
        assert bridge.stop() == 0
        proxy.stop()


def test_an_endpoint_behind_a_proxy_is_written_through_it(moto, s3, tmp_path):
    """HTTP_PROXY (or HTTPS_PROXY) names the only way out, as in a cluster whose egress goes through
    a proxy: botocore sends the client's requests through it, and so must every PUT. The direct
    path speaks to the endpoint itself, so with a proxy in force the objects are put by
    aiobotocore, through the proxy (here the test's proxy, forwarding to moto, counts them)."""
    proxy = Proxy(moto.url).start()
    body, generation, start = _delivery()
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      env={"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""})
    try:
        assert bridge.post(body).status_code == 200
        assert read_json(s3, bridge.bucket, key_for(generation, start))["generation_id"] == generation
        assert proxy.counters()["puts"] >= 2  # the check's probe and the record
        assert "through a proxy" in bridge.log and proxy.url not in bridge.log  # said, without its URL
    finally:
        assert bridge.stop() == 0
        proxy.stop()


@pytest.mark.parametrize("prompt_bytes", [0, 2 * 1024 * 1024])  # the larger one digested in a thread
def test_a_bucket_that_requires_a_checksum_gets_the_crc32_of_each_body(moto, s3, tmp_path, prompt_bytes):
    """A bucket with Object Lock's default retention (an audit trail's WORM bucket) refuses a PUT
    without Content-MD5 or an x-amz-checksum-* header, for good (400 InvalidRequest: every record
    was quarantined); AWS's SDKs send a CRC-32 of the body by default, and so does the direct path.
    The proxy plays such a bucket and checks each CRC-32 against the body it came with (400
    BadDigest otherwise); moto keeps it, and boto3 reads it back with the object."""
    proxy = Proxy(moto.url).start("--require-checksum")
    body, generation, start = _delivery(prompt_bytes)
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--endpoint-url", proxy.url])
    try:
        assert bridge.post(body).status_code == 200
        key = key_for(generation, start)
        assert read_json(s3, bridge.bucket, key)["generation_id"] == generation
        stored = s3.get_object(Bucket=bridge.bucket, Key=key, ChecksumMode="ENABLED")
        data = stored["Body"].read()
        assert stored["ChecksumCRC32"] == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        counters = proxy.counters()
        assert counters["puts"] >= 2 and counters["checksummed"] == counters["puts"]  # the check's probe too
        assert "bad_digests" not in counters and bridge.readiness()["quarantined_total"] == 0
        told_otherwise = subprocess.run(
            [sys.executable, "-m", "otel_s3_bridge", "check", "--bucket", bridge.bucket, "--endpoint-url", proxy.url],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"})
        assert told_otherwise.returncode != 0, told_otherwise.stderr  # refused for good, and why
        assert "unset AWS_REQUEST_CHECKSUM_CALCULATION=when_required" in told_otherwise.stderr, told_otherwise.stderr
    finally:
        assert bridge.stop() == 0
        proxy.stop()


def test_a_store_that_refuses_checksum_headers_is_told_apart_at_the_check(moto, s3, tmp_path):
    """A store that does not implement the header (Cloudflare R2 answered it 501 NotImplemented in
    early 2025) is not worth retrying: `check` fails for good and says how to leave the header out,
    and then passes."""
    proxy = Proxy(moto.url).start("--refuse-checksums")
    command = [sys.executable, "-m", "otel_s3_bridge", "check", "--bucket", new_bucket(s3), "--endpoint-url", proxy.url]
    try:
        refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "retrying helps" not in refused.stderr, refused.stderr
        assert "AWS_REQUEST_CHECKSUM_CALCULATION=when_required" in refused.stderr, refused.stderr
        passed = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"})
        assert passed.returncode == 0, passed.stderr
    finally:
        proxy.stop()


def test_checksums_are_left_out_when_botocore_is_told_to(moto, s3, tmp_path):
    """`AWS_REQUEST_CHECKSUM_CALCULATION=when_required` (or a profile's
    `request_checksum_calculation`), botocore's way out for a store that refuses checksum headers:
    the direct path then sends none either, as `put_object` would not, and such a store takes the
    records."""
    proxy = Proxy(moto.url).start("--refuse-checksums")
    body, generation, start = _delivery()
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--endpoint-url", proxy.url],
                      env={"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"})
    try:
        assert bridge.post(body).status_code == 200
        assert read_json(s3, bridge.bucket, key_for(generation, start))["generation_id"] == generation
        counters = proxy.counters()
        assert counters["puts"] >= 2 and counters.get("checksummed", 0) == 0
    finally:
        assert bridge.stop() == 0
        proxy.stop()
