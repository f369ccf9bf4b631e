"""The error table (docs/architecture.md §4) over OTLP/HTTP, against the real bridge and S3 server:
status code, `google.rpc.Status` body in the request's encoding, Retry-After when a retry helps."""

from __future__ import annotations

import gzip
import socket
import uuid

import boto3
import orjson
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from conftest import (TOKENS, MotoServer, S3Bridge, attribute, capture_lines, key_for, list_keys, read_json,
                      root_span)
from otlp_builders import request, span, to_protobuf

PROTOBUF = "application/x-protobuf"


def _status(response: requests.Response) -> status_pb2.Status:
    if response.headers["Content-Type"].startswith(PROTOBUF):
        return status_pb2.Status.FromString(response.content)
    body = response.json()
    return status_pb2.Status(code=body["code"], message=body["message"])


def _llm_span(**overrides) -> dict:
    trace_id = overrides.pop("trace_id", uuid.uuid4().hex)
    return span(trace_id, trace_id[:16], "chat gpt-4o-mini",
                {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 10}, **overrides)


# --- 200 with partial_success --------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["application/json", PROTOBUF])
def test_undecodable_spans_are_rejected_and_the_rest_stored(bridge, s3, content_type):
    good = _llm_span()
    bad = _llm_span(trace_id="abcd" * 8)
    bad_body = request(good, bad)
    if content_type == PROTOBUF:
        bad["spanId"] = "00" * 8  # all-zero ids are invalid (OTLP)
        body = to_protobuf(bad_body)
    else:
        bad["spanId"] = "12345"  # wrong length
        body = orjson.dumps(bad_body)
    response = bridge.post(body, headers={"Content-Type": content_type})
    assert response.status_code == 200
    if content_type == PROTOBUF:
        partial = ExportTraceServiceResponse.FromString(response.content).partial_success
        rejected, message = partial.rejected_spans, partial.error_message
    else:
        partial = response.json()["partialSuccess"]
        rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
    assert rejected == 1
    assert "spanId" in message
    stored = [key for key in list_keys(s3, bridge.bucket) if good["traceId"] in key]
    assert len(stored) == 1
    assert read_json(s3, bridge.bucket, stored[0])["model"] == "gpt-4o-mini"


def test_protobuf_success_answers_protobuf(bridge, s3):
    delivery = orjson.loads(capture_lines("pi.ndjson")[5])
    response = bridge.post(to_protobuf(delivery), headers={"Content-Type": PROTOBUF})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    root = root_span(delivery)
    record = read_json(s3, bridge.bucket, key_for(attribute(root, "gen_ai.response.id"),
                                                  int(root["startTimeUnixNano"])))
    assert record["ingest"]["transport"] == "http/protobuf"
    assert record["cost"] == attribute(root, "gen_ai.usage.total_cost")


# --- 401 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [
    None,
    "Bearer not-a-configured-token",
    f"Basic {TOKENS['openrouter']}",
    "Bearer ",
    TOKENS["openrouter"],
])
def test_unauthenticated(bridge, authorization):
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = requests.post(bridge.url, data=capture_lines("pi.ndjson")[0], headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert _status(response).code == 16  # UNAUTHENTICATED
    assert TOKENS["openrouter"] not in response.text and "not-a-configured-token" not in response.text


def test_unauthenticated_protobuf_request_gets_protobuf_status(bridge):
    response = requests.post(bridge.url, data=b"", headers={"Content-Type": PROTOBUF}, timeout=10)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == PROTOBUF
    assert status_pb2.Status.FromString(response.content).code == 16


def test_scheme_is_case_insensitive_and_each_key_is_named(bridge, s3):
    for scheme, key in (("bearer", "openrouter"), ("BEARER", "sdk")):
        llm = _llm_span()
        response = requests.post(bridge.url, data=orjson.dumps(request(llm)), timeout=10, headers={
            "Authorization": f"{scheme} {TOKENS[key]}", "Content-Type": "application/json"})
        assert response.status_code == 200
        [stored] = [k for k in list_keys(s3, bridge.bucket) if llm["traceId"] in k]
        assert read_json(s3, bridge.bucket, stored)["ingest"]["key_name"] == key


# --- 400 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body,content_type,coding", [
    (b"{not json", "application/json", None),
    (b"[1, 2]", "application/json", None),
    (b'{"resourceSpans": {"oops": 1}}', "application/json", None),
    (b"\xff\xff\xff\xff not protobuf", PROTOBUF, None),
    (b"definitely not gzip", "application/json", "gzip"),
    (gzip.compress(b'{"resourceSpans": []}')[:-12], "application/json", "gzip"),
    (b"{}", "application/json", "br"),
])
def test_bad_request(bridge, body, content_type, coding):
    headers = {"Content-Type": content_type}
    if coding:
        headers["Content-Encoding"] = coding
    response = bridge.post(body, headers=headers)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == content_type
    status = _status(response)
    assert status.code == 3 and status.message  # INVALID_ARGUMENT, with a reason
    assert "Retry-After" not in response.headers


# --- 413 -----------------------------------------------------------------------------------------

def test_body_over_limit(bridge):
    response = bridge.post(b" " * (3 * 1024 * 1024))
    assert response.status_code == 413
    assert _status(response).code == 8  # RESOURCE_EXHAUSTED
    assert "Retry-After" not in response.headers


def test_chunked_body_over_limit(bridge):
    chunks = (b" " * 65536 for _ in range(48))  # 3 MiB without Content-Length
    response = requests.post(bridge.url, data=chunks, headers=bridge.headers(), timeout=30)
    assert response.status_code == 413


def test_decompressed_body_over_limit(bridge):
    bomb = gzip.compress(b'{"resourceSpans": []}' + b" " * (8 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    response = bridge.post(bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed" in _status(response).message


# --- 415 / 405 -----------------------------------------------------------------------------------

def test_unsupported_content_type(bridge):
    response = bridge.post(b"<xml/>", headers={"Content-Type": "application/xml"})
    assert response.status_code == 415
    assert response.headers["Content-Type"] == "application/json"
    assert "application/xml" in _status(response).message


def test_json_content_type_with_charset_is_accepted(bridge):
    response = bridge.post(b"{}", headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_method_not_allowed(bridge):
    response = requests.get(bridge.url, headers=bridge.headers(), timeout=10)
    assert response.status_code == 405
    assert _status(response).message


# --- 503 + Retry-After, and the retry then succeeds -----------------------------------------------

@pytest.fixture
def outage(tmp_path):
    """A bridge acknowledging after upload whose S3 server goes away after start-up."""
    server = MotoServer()
    bucket = "outage-bucket"
    boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(Bucket=bucket)
    bridge = S3Bridge(server, bucket, tmp_path / "bridge.log", ["--ack", "upload"])
    server.stop()
    yield server, bridge
    assert bridge.stop() == 0


@pytest.mark.parametrize("content_type", ["application/json", PROTOBUF])
def test_s3_unreachable_answers_503_with_retry_after_and_a_retry_succeeds(outage, content_type):
    server, bridge = outage
    line = capture_lines("codex.ndjson")[0]
    body = line if content_type == "application/json" else to_protobuf(orjson.loads(line))
    response = bridge.post(body, headers={"Content-Type": content_type})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Content-Type"] == content_type
    if content_type == PROTOBUF:
        status = status_pb2.Status.FromString(response.content)
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry) and retry.retry_delay.seconds > 0
    else:
        status = response.json()
        assert status["details"][0]["@type"].endswith("google.rpc.RetryInfo")
    assert status.code == 14 if content_type == PROTOBUF else status["code"] == 14  # UNAVAILABLE
    assert "unreachable" in bridge.log

    revived = MotoServer(port=server.port)
    try:
        client = boto3.client("s3", endpoint_url=revived.url, region_name="us-east-1")
        client.create_bucket(Bucket=bridge.bucket)
        assert bridge.post(body, headers={"Content-Type": content_type}).status_code == 200
        root = root_span(orjson.loads(line))
        assert list_keys(client, bridge.bucket) == [
            key_for(attribute(root, "gen_ai.response.id"), int(root["startTimeUnixNano"]))]
    finally:
        revived.stop()


def test_auth_is_checked_before_the_body_is_read(bridge):
    """Headers announce 1 MiB but no body follows: the 401 must come without waiting for it."""
    with socket.create_connection(("127.0.0.1", bridge.http_port), timeout=5) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer wrong\r\nContent-Length: 1048576\r\n\r\n{")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401")
