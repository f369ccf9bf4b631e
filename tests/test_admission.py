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
import pytest
import requests

from conftest import TOKENS, S3Bridge, new_bucket
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
