"""The same export request sent as OTLP/JSON, OTLP/protobuf over HTTP and OTLP/gRPC lands as the
same records in the bucket: one decode path for every transport."""

from __future__ import annotations

import pathlib

import grpc
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from conftest import CAPTURES, TOKENS, S3Bridge, list_keys, new_bucket, read_json
from otlp_builders import to_protobuf

CONVENTIONS = pathlib.Path(__file__).parent / "data" / "conventions"
REQUESTS = sorted(CONVENTIONS.glob("*.request.json")) + [CAPTURES / "codex-error-span.json"]
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def parity_bridge(moto, s3, tmp_path_factory):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path_factory.mktemp("parity") / "bridge.log",
                      ["--ack", "upload", "--non-llm-spans", "keep"])
    yield bridge
    assert bridge.stop() == 0


def _take_records(s3, bucket: str) -> dict[str, dict]:
    """Every object in the bucket by key, then an empty bucket for the next transport."""
    records = {}
    for key in list_keys(s3, bucket):
        records[key] = read_json(s3, bucket, key)
        s3.delete_object(Bucket=bucket, Key=key)
    for record in records.values():
        assert record["ingest"].pop("received_at")
        record["ingest"].pop("transport")
    return records


@pytest.mark.parametrize("path", REQUESTS, ids=lambda path: path.name)
def test_json_protobuf_and_grpc_store_identical_records(parity_bridge, s3, path):
    document = orjson.loads(path.read_bytes())
    protobuf = to_protobuf(document)
    bucket = parity_bridge.bucket
    _take_records(s3, bucket)

    assert parity_bridge.post(orjson.dumps(document)).status_code == 200
    over_json = _take_records(s3, bucket)
    response = parity_bridge.post(protobuf, headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 200
    over_protobuf = _take_records(s3, bucket)
    with grpc.insecure_channel(parity_bridge.grpc_target) as channel:
        channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString)(
            protobuf, metadata=[("authorization", f"Bearer {TOKENS['openrouter']}")], timeout=15)
    over_grpc = _take_records(s3, bucket)

    assert over_json  # every request here holds at least one record
    assert over_json == over_protobuf == over_grpc
