"""OpenTelemetry SDK exporters (OTLP/HTTP protobuf and OTLP/gRPC, gzip) with `gen_ai.*` spans, and
the error table over gRPC, against the real bridge and S3 server."""

from __future__ import annotations

import uuid

import boto3
import grpc
import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import CAPTURES, TOKENS, MotoServer, S3Bridge, list_keys, new_bucket, read_json
from otlp_builders import request, span, to_protobuf

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
INPUT_MESSAGES = [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
OUTPUT_MESSAGES = [{"role": "assistant", "finish_reason": "stop",
                    "parts": [{"type": "text", "content": "Sunny, 21 degrees."}]}]


def genai_spans(conversation: str) -> list:
    """An agent span with a chat span (GenAI semantic conventions) and a tool span under it."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.genai")
    with tracer.start_as_current_span("invoke_agent weather"):
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as chat:
            chat.set_attributes({
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.response.id": f"chatcmpl-{conversation}",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 42,
                "gen_ai.usage.cache_read.input_tokens": 100,
                "gen_ai.response.finish_reasons": ("stop",),
                "gen_ai.response.time_to_first_chunk": 0.25,
                "gen_ai.conversation.id": conversation,
                "user.id": "customer-9",
                "gen_ai.input.messages": orjson.dumps(INPUT_MESSAGES).decode(),
                "gen_ai.output.messages": orjson.dumps(OUTPUT_MESSAGES).decode(),
                "gen_ai.request.temperature": 0.2,
            })
        with tracer.start_as_current_span("execute_tool get_weather") as tool:
            tool.set_attribute("gen_ai.tool.name", "get_weather")
    provider.shutdown()
    return list(memory.get_finished_spans())


def _assert_genai_record(s3, bucket: str, spans: list, conversation: str, transport: str, key_name: str) -> None:
    chat = next(s for s in spans if s.name.startswith("chat"))
    trace_id = format(chat.context.trace_id, "032x")
    span_id = format(chat.context.span_id, "016x")
    [key] = [k for k in list_keys(s3, bucket) if trace_id in k]
    assert key.endswith(f"/{trace_id}-{chat.start_time // 1_000_000_000}-{span_id}.json")
    record = read_json(s3, bucket, key)
    assert record["source"] == "gen_ai"
    assert record["trace_id"] == record["otel_trace_id"] == trace_id
    assert record["span_id"] == span_id
    assert record["generation_id"] == f"chatcmpl-{conversation}"
    assert record["model"] == "gpt-4o-mini-2024-07-18" and record["requested_model"] == "gpt-4o-mini"
    assert record["provider"] == "openai" and record["model_author"] == "openai"
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (120, 42, 162)
    assert record["cached_tokens"] == 100
    assert record["reasoning_tokens"] is None
    # No cost sent: estimated from gpt-4o-mini's published $0.15 / $0.075 cached / $0.60 per million tokens.
    assert record["cost_source"] == "estimated"
    assert record["cost"] == pytest.approx((20 * 0.15 + 100 * 0.075 + 42 * 0.60) / 1e6)
    assert record["session_id"] == conversation and record["customer_id"] == "customer-9"
    assert record["finish_reason"] == "stop"
    assert record["time_to_first_token_ms"] == 250.0
    assert record["prompt"] == INPUT_MESSAGES
    assert record["completion"] == {"text": "Sunny, 21 degrees.", "reasoning": None, "tool_calls": None}
    assert record["attributes"] == {"gen_ai.operation.name": "chat", "gen_ai.request.temperature": 0.2}
    assert sorted(o["name"] for o in record["observations"]) == ["execute_tool get_weather", "invoke_agent weather"]
    assert record["resource"]["service.name"] == "weather-agent"
    assert record["scope"]["name"] == "tests.genai"
    assert record["ingest"] == {**record["ingest"], "transport": transport, "key_name": key_name}


def test_sdk_http_protobuf_exporter_with_gzip(bridge, s3):
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    spans = genai_spans(conversation)
    exporter = HttpExporter(endpoint=bridge.url, headers={"Authorization": f"Bearer {TOKENS['sdk']}"},
                            compression=Compression.Gzip)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    _assert_genai_record(s3, bridge.bucket, spans, conversation, "http/protobuf", "sdk")


def test_sdk_grpc_exporter_with_gzip(bridge, s3):
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    spans = genai_spans(conversation)
    exporter = GrpcExporter(endpoint=bridge.grpc_target, insecure=True, compression=grpc.Compression.Gzip,
                            headers=(("authorization", f"Bearer {TOKENS['sdk']}"),))
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    _assert_genai_record(s3, bridge.bucket, spans, conversation, "grpc", "sdk")


def test_sdk_exporter_with_a_wrong_token_fails_and_stores_nothing(bridge, s3):
    spans = genai_spans("conv-rejected")
    exporter = HttpExporter(endpoint=bridge.url, headers={"Authorization": "Bearer wrong"})
    assert exporter.export(spans) == SpanExportResult.FAILURE
    assert not [k for k in list_keys(s3, bridge.bucket) if format(spans[0].context.trace_id, "032x") in k]


# --- the error table over gRPC ---------------------------------------------------------------------

def _export(target: str, body: bytes, token: str | None = TOKENS["openrouter"], compression=None):
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None,
                                   response_deserializer=ExportTraceServiceResponse.FromString)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        return call(body, metadata=metadata, timeout=15, compression=compression)


def _code(error: pytest.ExceptionInfo) -> grpc.StatusCode:
    return error.value.code()


def test_grpc_openrouter_delivery_and_connection_test(bridge, s3):
    line = (CAPTURES / "codex.ndjson").read_bytes().splitlines()[4]
    response = _export(bridge.grpc_target, to_protobuf(orjson.loads(line)), compression=grpc.Compression.Gzip)
    assert not response.HasField("partial_success")
    assert [k for k in list_keys(s3, bridge.bucket) if "gen-1790606073-GeYNgn87vrb7FfSIeqxb" in k]
    before = list_keys(s3, bridge.bucket)
    _export(bridge.grpc_target, to_protobuf(orjson.loads((CAPTURES / "connection-test.json").read_bytes())))
    _export(bridge.grpc_target, b"")  # an empty request
    assert list_keys(s3, bridge.bucket) == before


@pytest.mark.parametrize("token", [None, "wrong-token-3b9d1e"])
def test_grpc_unauthenticated(bridge, token):
    with pytest.raises(grpc.RpcError) as error:
        _export(bridge.grpc_target, b"", token=token)
    assert _code(error) == grpc.StatusCode.UNAUTHENTICATED
    assert "wrong-token-3b9d1e" not in error.value.details()


def test_grpc_invalid_argument(bridge):
    with pytest.raises(grpc.RpcError) as error:
        _export(bridge.grpc_target, b"\xff\xff\xff\xff garbage")
    assert _code(error) == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_message_over_limit(bridge):
    with pytest.raises(grpc.RpcError) as error:
        _export(bridge.grpc_target, b"\x0a" + b"\xff" * (3 * 1024 * 1024))
    assert _code(error) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not any(key == "grpc-status-details-bin" for key, _ in error.value.trailing_metadata() or ())


def test_grpc_partial_success(bridge, s3):
    trace_id = uuid.uuid4().hex
    good = span(trace_id, trace_id[:16], "chat", {"gen_ai.request.model": "gpt-4o"})
    bad = span(trace_id, "00" * 8, "chat", {"gen_ai.request.model": "gpt-4o"})
    response = _export(bridge.grpc_target, to_protobuf(request(good, bad)))
    assert response.partial_success.rejected_spans == 1
    assert "spanId" in response.partial_success.error_message
    assert [k for k in list_keys(s3, bridge.bucket) if trace_id in k]


def test_grpc_unavailable_with_retry_info_when_s3_is_down_in_ack_upload_mode(tmp_path):
    server = MotoServer()
    boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(Bucket="down")
    bridge = S3Bridge(server, "down", tmp_path / "bridge.log", ["--ack", "upload"])
    server.stop()
    try:
        line = (CAPTURES / "pi.ndjson").read_bytes().splitlines()[0]
        with pytest.raises(grpc.RpcError) as error:
            _export(bridge.grpc_target, to_protobuf(orjson.loads(line)))
        assert _code(error) == grpc.StatusCode.UNAVAILABLE
        details = dict(error.value.trailing_metadata())["grpc-status-details-bin"]
        retry = error_details_pb2.RetryInfo()
        assert status_pb2.Status.FromString(details).details[0].Unpack(retry)
        assert retry.retry_delay.seconds > 0
    finally:
        assert bridge.stop() == 0


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_both_event_loops_serve_http_and_grpc(moto, s3, tmp_path, loop):
    """`--event-loop uvloop` (`auto` where uvloop is installed) and `asyncio`: both receivers and
    the upload."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--event-loop", loop, "--ack", "upload"])
    try:
        assert f"event loop: {loop}" in bridge.log
        for transport, exporter in (
                ("http/protobuf", HttpExporter(endpoint=bridge.url, headers={"Authorization": f"Bearer {TOKENS['sdk']}"},
                                               compression=Compression.Gzip)),
                ("grpc", GrpcExporter(endpoint=bridge.grpc_target, insecure=True, compression=grpc.Compression.Gzip,
                                      headers=(("authorization", f"Bearer {TOKENS['sdk']}"),)))):
            conversation = f"conv-{uuid.uuid4().hex[:8]}"
            spans = genai_spans(conversation)
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            _assert_genai_record(s3, bridge.bucket, spans, conversation, transport, "sdk")
    finally:
        assert bridge.stop() == 0
