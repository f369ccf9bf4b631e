"""Prometheus metrics (`/metrics` on `--metrics-port`) against what the test sent: spans and requests
by transport and answer, records by convention, LLM usage by model, uploads and the spool; summed
over `--workers N` in one scrape; the model label capped so that senders cannot blow up the series.

Every expected number is what the test itself sent (its own spans, tokens and costs), read back
from a real scrape of the real bridge, parsed with prometheus-client's own parser."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import uuid

import grpc
import orjson
import promql_parser
import pytest
import requests
from conftest import (ROOT, TOKENS, BridgeProcess, Proxy, S3Bridge, eventually, free_port, list_keys, new_bucket,
                      stored_keys)
from otlp_builders import request, span, to_protobuf
from prometheus_client.parser import text_string_to_metric_families

from otel_s3_bridge.supervisor import START_GRACE_SECONDS

PROTOBUF = "application/x-protobuf"


def _value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def _gen_ai_span(model: str, input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0,
                 status_code: int = 1) -> dict:
    trace_id = uuid.uuid4().hex
    body = span(trace_id, trace_id[:16], f"chat {model}", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.usage.cache_read.input_tokens": cached, "gen_ai.usage.reasoning.output_tokens": reasoning})
    body["status"] = {"code": status_code}
    return body


def _openinference_span(model: str, cost: float) -> dict:
    trace_id = uuid.uuid4().hex
    return span(trace_id, trace_id[:16], "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": model, "llm.provider": "anthropic",
        "llm.token_count.prompt": 7, "llm.token_count.completion": 3, "llm.cost.total": cost})


def _plain_span() -> dict:
    trace_id = uuid.uuid4().hex
    return span(trace_id, trace_id[:16], "GET /health", {"http.method": "GET"})


def _grpc_export(bridge: BridgeProcess, body: bytes, token: str | None) -> grpc.StatusCode:
    with grpc.insecure_channel(bridge.grpc_target) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            export(body, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_metrics_count_what_was_sent(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log")
    try:
        headers = bridge.headers()
        # http/json: two gen_ai calls (one failed) and a trace without an LLM call (dropped).
        json_export = request(_gen_ai_span("gpt-4o", 100, 20, cached=40, reasoning=5),
                              _gen_ai_span("gpt-4o", 50, 0, status_code=2), _plain_span())
        assert requests.post(bridge.url, json=json_export, headers=headers, timeout=30).status_code == 200
        # http/protobuf, at OpenRouter's other accepted URL `/`: an OpenInference call with a cost.
        protobuf_export = to_protobuf(request(_openinference_span("claude-sonnet-4", 0.0125)))
        response = requests.post(bridge.url.replace("/v1/traces", "/"), data=protobuf_export,
                                 headers={**headers, "Content-Type": PROTOBUF}, timeout=30)
        assert response.status_code == 200
        # grpc: one call accepted, one without a token refused.
        grpc_export = to_protobuf(request(_gen_ai_span("gpt-4o", 10, 2)))
        assert _grpc_export(bridge, grpc_export, TOKENS["sdk"]) == grpc.StatusCode.OK
        assert _grpc_export(bridge, grpc_export, None) == grpc.StatusCode.UNAUTHENTICATED
        # refused over HTTP: a wrong token (401) and a body that is not JSON (400).
        assert requests.post(bridge.url, data=b"{}", headers={**headers, "Authorization": "Bearer nope"},
                             timeout=30).status_code == 401
        assert requests.post(bridge.url, data=b"{not json", headers=headers, timeout=30).status_code == 400

        eventually(lambda: len(list_keys(s3, bridge.bucket)) == 4, message=lambda: "4 records were not uploaded")
        bridge.wait_until_uploaded()
        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_spool_entries") == 0)
        scrape = bridge.metrics()
        expected = [
            ("otel_s3_bridge_spans_received_total", {"transport": "http/json"}, 3),
            ("otel_s3_bridge_spans_received_total", {"transport": "http/protobuf"}, 1),
            ("otel_s3_bridge_spans_received_total", {"transport": "grpc"}, 1),
            ("otel_s3_bridge_spans_rejected_total", {"reason": "non_llm"}, 1),
            ("otel_s3_bridge_requests_total", {"transport": "http/json", "signal": "traces", "code": "200"}, 1),
            ("otel_s3_bridge_requests_total", {"transport": "http/json", "signal": "traces", "code": "401"}, 1),
            ("otel_s3_bridge_requests_total", {"transport": "http/json", "signal": "traces", "code": "400"}, 1),
            ("otel_s3_bridge_requests_total", {"transport": "http/protobuf", "signal": "traces", "code": "200"}, 1),
            ("otel_s3_bridge_requests_total", {"transport": "grpc", "signal": "traces", "code": "OK"}, 1),
            ("otel_s3_bridge_requests_total", {"transport": "grpc", "signal": "traces",
                                               "code": "UNAUTHENTICATED"}, 1),
            ("otel_s3_bridge_records_total", {"source": "gen_ai"}, 3),
            ("otel_s3_bridge_records_total", {"source": "openinference"}, 1),
            ("otel_s3_bridge_objects_uploaded_total", {}, 4),
            ("otel_s3_bridge_upload_duration_seconds_count", {}, 4),
            ("otel_s3_bridge_llm_calls_total", {"model": "gpt-4o", "provider": "openai", "status": "ok"}, 2),
            ("otel_s3_bridge_llm_calls_total", {"model": "gpt-4o", "provider": "openai", "status": "error"}, 1),
            ("otel_s3_bridge_llm_calls_total", {"model": "claude-sonnet-4", "provider": "anthropic",
                                                "status": "ok"}, 1),
            ("otel_s3_bridge_llm_tokens_total", {"model": "gpt-4o", "provider": "openai", "kind": "input"}, 160),
            ("otel_s3_bridge_llm_tokens_total", {"model": "gpt-4o", "provider": "openai", "kind": "output"}, 22),
            ("otel_s3_bridge_llm_tokens_total", {"model": "gpt-4o", "provider": "openai", "kind": "cached"}, 40),
            ("otel_s3_bridge_llm_tokens_total", {"model": "gpt-4o", "provider": "openai", "kind": "reasoning"}, 5),
            ("otel_s3_bridge_llm_tokens_total", {"model": "claude-sonnet-4", "provider": "anthropic",
                                                 "kind": "input"}, 7),
            ("otel_s3_bridge_llm_cost_usd_total", {"model": "claude-sonnet-4", "provider": "anthropic",
                                                   "source": "reported"}, 0.0125),
            ("otel_s3_bridge_spool_entries", {}, 0),
            ("otel_s3_bridge_quarantined_entries", {}, 0),
        ]
        for name, labels, value in expected:
            assert _value(scrape, name, **labels) == value, (name, labels, _value(scrape, name, **labels))
        # The gpt-4o calls report no cost: estimated at OpenAI's published $2.50 input, $1.25 cached
        # input and $10 output per million tokens (reasoning tokens are output tokens).
        estimated = ((60 * 2.5 + 40 * 1.25 + 20 * 10) + 50 * 2.5 + (10 * 2.5 + 2 * 10)) / 1e6
        assert _value(scrape, "otel_s3_bridge_llm_cost_usd_total", model="gpt-4o", provider="openai",
                      source="estimated") == pytest.approx(estimated)
        assert _value(scrape, "otel_s3_bridge_upload_failures_total", retryable="true") == 0
        assert _value(scrape, "otel_s3_bridge_last_upload_success_timestamp_seconds") > 0
        assert _value(scrape, "otel_s3_bridge_spool_max_bytes") == 1024 ** 3
        exposition = requests.get(f"http://127.0.0.1:{bridge.metrics_port}/metrics", timeout=10).text
        assert dashboard_problems(exposition) == []
        # The probes are on the metrics port too, and `health` asks them there.
        ready = requests.get(f"http://127.0.0.1:{bridge.metrics_port}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        for probe in ([], ["--ready"]):
            health = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "health", *probe, "--metrics-port",
                                     str(bridge.metrics_port)], capture_output=True, text=True, timeout=30)
            assert health.returncode == 0 and f":{bridge.metrics_port}/" in health.stdout
    finally:
        assert bridge.stop() == 0


def dashboard_problems(exposition: str) -> list[str]:
    """What in deploy/grafana/otel-s3-bridge.json does not fit the series a real bridge exposes: a
    query PromQL cannot parse, a metric it does not export, a grouping label its series lack."""
    families = list(text_string_to_metric_families(exposition))
    names = {family.name + ("_total" if family.type == "counter" else "") for family in families} | \
        {sample.name for family in families for sample in family.samples}
    labels = {sample.name: set(sample.labels) for family in families for sample in family.samples}
    for family in families:  # a labelled family without samples yet: its labels from the HELP'd metric
        labels.setdefault(family.name + ("_total" if family.type == "counter" else ""), None)
    dashboard = orjson.loads((ROOT / "deploy" / "grafana" / "otel-s3-bridge.json").read_bytes())
    problems = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            try:
                promql_parser.parse(expr.replace("$__rate_interval", "1m").replace("$__range", "1h"))
            except ValueError as error:
                problems.append(f"{panel['title']}: {error}")
            for metric in re.findall(r"\b(otel_s3_bridge_[a-z_]+)", expr):
                if metric not in names:
                    problems.append(f"{panel['title']}: no series {metric}")
                grouping = set(re.findall(r"by \(([^)]*)\)", expr)[0].replace(" ", "").split(",")) - {"le"} \
                    if "by (" in expr else set()
                if labels.get(metric) is not None and not grouping <= labels[metric]:
                    problems.append(f"{panel['title']}: {metric} has no label(s) {grouping - labels[metric]}")
    return problems


def test_spool_gauges_and_upload_failures_while_the_store_is_down(moto, s3, tmp_path):
    """Every PUT fails (503 SlowDown): entries wait in the spool, their age grows, failures are
    counted as retryable; once the store answers, the spool empties and the gauges say so."""
    proxy = Proxy(moto.url).start("--fail-rate", "1.0", "--kinds", "503")
    bucket = new_bucket(s3)
    bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log", ["--endpoint-url", proxy.url,
                                                                "--upload-retry-max-seconds", "1"])
    try:
        export = request(_gen_ai_span("gpt-4o", 1, 1), _gen_ai_span("gpt-4o", 1, 1))
        assert requests.post(bridge.url, json=export, headers=bridge.headers(), timeout=30).status_code == 200
        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_upload_failures_total", retryable="true") >= 2)
        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_spool_oldest_age_seconds") >= 1.0)
        scrape = bridge.metrics()
        assert _value(scrape, "otel_s3_bridge_spool_entries") == 2
        assert _value(scrape, "otel_s3_bridge_spool_bytes") > 0
        assert _value(scrape, "otel_s3_bridge_objects_uploaded_total") == 0
        assert _value(scrape, "otel_s3_bridge_last_upload_success_timestamp_seconds") == 0

        proxy.stop()
        proxy.start()  # the same port, no faults now
        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_objects_uploaded_total") == 2, 60)
        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_spool_entries") == 0)
        assert _value(bridge.metrics(), "otel_s3_bridge_spool_oldest_age_seconds") == 0
        assert len(stored_keys(s3, bucket)) == 2
    finally:
        assert bridge.stop() == 0
        proxy.stop()


def test_model_label_is_capped(moto, s3, tmp_path):
    """A sender making up a model name per call gets 500 series; the rest count as `other`."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload"])
    try:
        spans = [_gen_ai_span(f"made-up-model-{number}", 1, 1) for number in range(520)]
        response = requests.post(bridge.url, json=request(*spans), headers=bridge.headers(), timeout=60)
        assert response.status_code == 200
        scrape = bridge.metrics()
        models = {dict(labels)["model"] for name, labels in scrape if name == "otel_s3_bridge_llm_calls_total"}
        assert len(models) == 501 and "other" in models
        assert _value(scrape, "otel_s3_bridge_llm_calls_total", model="other", provider="other", status="ok") == 20
        assert sum(value for (name, _), value in scrape.items() if name == "otel_s3_bridge_llm_calls_total") == 520
        assert _value(scrape, "otel_s3_bridge_records_total", source="gen_ai") == 520
    finally:
        assert bridge.stop() == 0


def _worker_pids(bridge: BridgeProcess) -> dict[int, int]:
    """index -> pid of each `--workers` process: the supervisor's children, by their environment."""
    workers = {}
    for pid in bridge.tree():
        try:
            parent = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent != bridge.process.pid:
            continue
        for entry in environ:
            if entry.startswith(b"OTEL_S3_BRIDGE_WORKER_INDEX="):
                workers[int(entry.split(b"=", 1)[1])] = pid
    return workers


def _age_seconds(pid: int) -> float:
    started_ticks = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def test_one_scrape_sums_every_worker(moto, s3, tmp_path):
    """With --workers 2 each export lands on either worker (SO_REUSEPORT); worker 0's endpoint
    reports the sum; a worker killed and restarted keeps its counts, and its gauges are not
    counted twice."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--workers", "2"])
    try:
        exports = 40
        for _ in range(exports):  # a new connection each: the kernel spreads them over the workers
            with requests.Session() as session:
                response = session.post(bridge.url, json=request(_gen_ai_span("gpt-4o", 3, 1)),
                                        headers=bridge.headers(), timeout=30)
                assert response.status_code == 200
        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_objects_uploaded_total") == exports)
        assert len(list((tmp_path / "spool" / "metrics").glob("counter_*.db"))) >= 2, "both workers count"

        def check(scrape: dict) -> None:
            assert _value(scrape, "otel_s3_bridge_spans_received_total", transport="http/json") == exports
            assert _value(scrape, "otel_s3_bridge_llm_tokens_total", model="gpt-4o", provider="openai",
                          kind="input") == 3 * exports
            assert _value(scrape, "otel_s3_bridge_objects_uploaded_total") == exports
            assert _value(scrape, "otel_s3_bridge_spool_max_bytes") == 2 * 1024 ** 3  # one spool each

        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_spool_max_bytes") == 2 * 1024 ** 3)
        check(bridge.metrics())
        killed = _worker_pids(bridge)[1]
        # A worker that dies sooner counts as failing to start, and the supervisor stops them all.
        eventually(lambda: _age_seconds(killed) > START_GRACE_SECONDS, 2 * START_GRACE_SECONDS, interval=0.2)
        os.kill(killed, signal.SIGKILL)
        eventually(lambda: _worker_pids(bridge).get(1, killed) != killed, 30)
        eventually(lambda: "worker-1 otel_s3_bridge: otel-s3-bridge" in bridge.log.split("starting it again")[-1])
        eventually(lambda: _value(bridge.metrics(), "otel_s3_bridge_spool_max_bytes") == 2 * 1024 ** 3)
        check(bridge.metrics())
    finally:
        assert bridge.stop() == 0


def test_metrics_port_zero_disables_it_and_a_taken_port_refuses_start(tmp_path):
    taken = free_port()
    bridge = BridgeProcess(["--metrics-port", "0", "--spool-dir", str(tmp_path / "a")], tmp_path / "a.log",
                           cwd=tmp_path)
    try:
        assert "metrics on" not in bridge.log
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", taken))
            holder.listen()
            result = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "serve", "--http-port", str(free_port()),
                                     "--grpc-port", "0", "--metrics-port", str(taken), "--spool-dir",
                                     str(tmp_path / "b")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 1
        assert "refusing to start" in result.stderr and str(taken) in result.stderr
    finally:
        assert bridge.stop() == 0
