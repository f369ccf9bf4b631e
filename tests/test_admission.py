"""Admission by need: honest exports sent side by side are all accepted, at default settings, with
the bridge's process tree well under a gigabyte.

Each export over 128 KiB used to reserve the whole `--max-decoded-bytes` ceiling (32 MiB) of
`--max-inflight-bytes` (128 MiB) before it was decoded, so four fitted at once: 8 concurrent
exports of 100 OpenInference spans (149 KB each) got 57 answers of 64 503. An OTel Collector
fanning in many apps, or a burst of OpenRouter deliveries, meets exactly that. The codes are
counted here, not timed; the worst cases of issue 8 stay bounded (tests/test_memory_limits.py).
"""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import orjson
import pytest
import requests

from bench import attacks
from conftest import TOKENS, BridgeProcess, S3Bridge, eventually, new_bucket
from otel_s3_bridge.decode.prepare import ExportContext, prepare_export
from otel_s3_bridge.decode.split import split_export
from otel_s3_bridge.lake.keys import compile_template
from test_memory_limits import HealthProbe
from otlp_builders import request, span, to_protobuf

GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROMPT = ("Summarise the quarterly figures for the board, region by region, in plain words. " * 13)[:1000]
GIB_MB = 1024.0


def openinference_export(spans: int) -> bytes:
    """`spans` OpenInference LLM spans of about 1.5 KB each (a 1 KB prompt), each its own trace."""
    return to_protobuf(request(*(span(uuid.uuid4().hex, uuid.uuid4().hex[:16], "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
        "llm.token_count.prompt": 250, "llm.token_count.completion": 40, "llm.token_count.total": 290,
        "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": PROMPT,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Revenue rose in every region but one.",
        "session.id": "session-1", "user.id": "customer-7"}) for _ in range(spans))))


@pytest.fixture
def bridge(moto, s3, tmp_path):
    process = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", [])
    yield process
    process.stop()


def _post_all(bridge: S3Bridge, bodies: list[bytes], concurrency: int) -> Counter:
    def post(body: bytes) -> int:
        return requests.post(bridge.url, data=body, timeout=120,
                             headers=bridge.headers(content_type="application/x-protobuf")).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        return Counter(pool.map(post, bodies))


@pytest.mark.parametrize("concurrency, exports", [(8, 64), (16, 64), (64, 128)])
def test_concurrent_exports_of_149_kb_are_all_accepted(bridge, concurrency, exports):
    body = openinference_export(100)
    assert 140_000 < len(body) < 160_000
    codes = _post_all(bridge, [body] * exports, concurrency)
    assert codes == Counter({200: exports}), codes
    assert sum(bridge.memory_mb("VmHWM").values()) < GIB_MB


def test_sixteen_concurrent_exports_of_900_kb_are_all_accepted(bridge):
    body = openinference_export(600)
    assert 850_000 < len(body) < 950_000
    codes = _post_all(bridge, [body] * 16, 16)
    assert codes == Counter({200: 16}), codes
    assert sum(bridge.memory_mb("VmHWM").values()) < GIB_MB


def test_sixteen_concurrent_grpc_exports_are_all_accepted(bridge):
    body = openinference_export(100)
    metadata = (("authorization", f"Bearer {TOKENS['openrouter']}"),)
    with grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}") as channel:
        export = channel.unary_unary(GRPC_EXPORT)

        def call(_: int) -> str:
            try:
                export(body, metadata=metadata, timeout=120)
                return "OK"
            except grpc.RpcError as error:
                return error.code().name

        with ThreadPoolExecutor(16) as pool:
            codes = Counter(pool.map(call, range(32)))
    assert codes == Counter({"OK": 32}), codes
    assert sum(bridge.memory_mb("VmHWM").values()) < GIB_MB


# --- every valid export within the limits is accepted ---------------------------------------------

SINGLE_EXPORT_MB = 300.0  # issue 8's bound for any one process of the tree, whatever one export holds


@pytest.fixture
def local_bridge(tmp_path):
    process = BridgeProcess(["--output-dir", str(tmp_path / "out"), "--spool-dir", str(tmp_path / "spool")],
                            tmp_path / "bridge.log")
    yield process
    process.stop()


def _stored(directory) -> int:
    return sum(1 for path in directory.rglob("*.json") if path.is_file())


def test_a_20_mib_json_export_of_small_spans_is_accepted_in_chunks(local_bridge, tmp_path):
    """Its records exceed --max-decoded-bytes: it got 413 (and SDK exporters drop a batch on 413)."""
    body = attacks.small_spans_json()
    spans = len(orjson.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"])
    assert len(body) <= 20 * 1024 * 1024 and spans > 18_000
    with HealthProbe(local_bridge) as probe:
        response = requests.post(local_bridge.url, data=body, headers={"Content-Type": "application/json"},
                                 timeout=300)
        answered = probe.answers
    assert response.status_code == 200, response.content[:300]
    assert answered >= 10, f"/healthz answered {answered} times while the export was stored"
    assert max(local_bridge.memory_mb("VmHWM").values()) < SINGLE_EXPORT_MB, local_bridge.memory_mb("VmHWM")
    eventually(lambda: _stored(tmp_path / "out") == spans, 120, lambda: f"{_stored(tmp_path / 'out')} of {spans}")


def test_a_4_mib_grpc_message_of_small_spans_is_accepted(bridge):
    body = attacks.many_spans_protobuf(44_000)
    assert 3 * 1024 * 1024 < len(body) <= 4 * 1024 * 1024
    with grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}",
                               options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        response = channel.unary_unary(GRPC_EXPORT)(body, metadata=(("authorization", f"Bearer {TOKENS['sdk']}"),),
                                                    timeout=300)
    assert response == b""  # an ExportTraceServiceResponse without partial_success: all accepted
    assert max(bridge.memory_mb("VmHWM").values()) < SINGLE_EXPORT_MB, bridge.memory_mb("VmHWM")


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_chunks_hold_whole_traces_and_decode_to_the_records_of_the_whole(encoding):
    """Splitting changes where records are decoded, never what they are: a trace's spans (an
    OpenInference chain and its LLM child) stay together, resources and scopes go with their spans."""
    start = 1_790_606_294_318_000_000
    traces = []
    for n in range(30):
        trace = f"{n + 1:032x}"
        traces += [span(trace, f"{n:08x}00000001", "chain", {"openinference.span.kind": "CHAIN",
                                                              "input.value": f"question {n}"}, start=start),
                   span(trace, f"{n:08x}00000002", "llm", {"openinference.span.kind": "LLM", "llm.model_name": "m",
                                                           "llm.token_count.prompt": n}, parent=f"{n:08x}00000001",
                        start=start)]
    document = request(*traces[:30], resource={"service.name": "a"})
    document["resourceSpans"] += request(*traces[30:], resource={"service.name": "b"})["resourceSpans"]
    body = orjson.dumps(document) if encoding == "json" else to_protobuf(document)
    context = ExportContext(encoding=encoding, coding="", key_name="k", transport="t", received_at_unix_nano=start,
                            non_llm_spans="keep", template=compile_template("{prefix}/{date}"), prefix="p",
                            max_request_bytes=1 << 30, max_resource_bytes=16384, max_output_bytes=1 << 30)
    chunks = split_export(body, encoding, "", 1 << 30, max_spans=7)
    assert len(chunks) == 10  # 3 traces of 2 spans a chunk: a 4th would make 8 spans, over 7
    whole = sorted(prepare_export(body, context).objects)
    assert sorted(obj for chunk in chunks for obj in prepare_export(chunk, context).objects) == whole
    assert len(whole) == 30


def test_an_export_with_more_records_than_expected_is_taken_in_chunks(moto, s3, tmp_path):
    """Small enough to be decoded whole (its size times protobuf's usual expansion), yet of spans so
    small that their records exceed --max-decoded-bytes: taken in chunks rather than refused."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--max-decoded-bytes", str(8 << 20)])
    try:
        body = attacks.many_spans_protobuf(10_000)
        assert len(body) * 3 < 8 << 20  # expected to fit whole
        response = bridge.post(body, "sdk", headers={"Content-Type": "application/x-protobuf"}, timeout=300)
        assert response.status_code == 200, response.content[:300]
        assert response.content == b""  # nothing rejected
    finally:
        bridge.stop()
