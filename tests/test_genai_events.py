"""GenAI event records (OTLP logs) joined to their LLM span, whichever arrives first, through the
running bridge: raw OTLP/JSON posts (as an app's exporter sends them), objects read back from S3.

The guarantee under test: an acknowledged half is kept (also across a `kill -9`), the completed
record lands under the record's own key, and a stale body queued before the completion never
overwrites it, whatever order the uploads run in.
"""

from __future__ import annotations

import base64
import fcntl
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import requests
from conftest import TOKENS, S3Bridge, eventually, list_keys, new_bucket, read_json
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from otlp_builders import any_value, request, span
from test_durability import Proxy

QUESTION = "What is the capital of France?"
ANSWER = "Paris."


def ids() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex[:16]


def call_span(trace_id: str, span_id: str, start: int) -> dict:
    """A span as opentelemetry-instrumentation-openai-v2 sends it: model and usage, no content."""
    return span(trace_id, span_id, "chat gpt-4o-mini", {
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 22,
        "gen_ai.usage.output_tokens": 7}, start=start)


def log_record(trace_id: str, span_id: str, event: str, body, at: int, *, in_attribute: bool = False) -> dict:
    record = {"timeUnixNano": str(at), "traceId": trace_id, "spanId": span_id, "body": any_value(body),
              "attributes": [{"key": "gen_ai.system", "value": {"stringValue": "openai"}}]}
    if in_attribute:  # before LogRecord.event_name, the name was the `event.name` attribute
        record["attributes"].append({"key": "event.name", "value": {"stringValue": event}})
    else:
        record["eventName"] = event
    return record


def logs_request(*records: dict) -> dict:
    return {"resourceLogs": [{"resource": {"attributes": []},
                              "scopeLogs": [{"scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                                             "logRecords": list(records)}]}]}


def message_events(trace_id: str, span_id: str, start: int) -> list[dict]:
    return [log_record(trace_id, span_id, "gen_ai.system.message", {"content": "You are terse."}, start + 1),
            log_record(trace_id, span_id, "gen_ai.user.message", {"content": QUESTION}, start + 2,
                       in_attribute=True),
            log_record(trace_id, span_id, "gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                                            "message": {"role": "assistant", "content": ANSWER}},
                       start + 3)]


def post_logs(bridge: S3Bridge, document: dict, key: str = "sdk") -> requests.Response:
    return requests.post(f"http://127.0.0.1:{bridge.http_port}/v1/logs", data=orjson.dumps(document),
                         headers=bridge.headers(key), timeout=30)


def post_spans(bridge: S3Bridge, *spans: dict, key: str = "sdk") -> requests.Response:
    return bridge.post(orjson.dumps(request(*spans)), key=key)


def only_record(s3, bucket: str, trace_id: str, condition=lambda record: True, wait: float = 30) -> dict:
    found: list[dict] = []

    def ready() -> bool:
        found[:] = [r for k in list_keys(s3, bucket) if (r := read_json(s3, bucket, k))["otel_trace_id"] == trace_id]
        return len(found) == 1 and condition(found[0])

    eventually(ready, wait, lambda: f"records of {trace_id}: {found}")
    return found[0]


def completed(record: dict) -> bool:
    return record["prompt"] is not None and record["completion"] is not None


@pytest.fixture(scope="module")
def events_bridge(moto, s3, tmp_path_factory):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path_factory.mktemp("events") / "bridge.log")
    yield bridge
    assert bridge.stop() == 0


def test_events_first_then_span_store_one_completed_record(events_bridge, s3):
    trace_id, span_id = ids()
    start = time.time_ns()
    response = post_logs(events_bridge, logs_request(*message_events(trace_id, span_id, start)))
    assert response.status_code == 200 and response.json() == {}
    assert post_spans(events_bridge, call_span(trace_id, span_id, start)).status_code == 200
    record = only_record(s3, events_bridge.bucket, trace_id, completed)
    assert record["prompt"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": QUESTION}]
    assert record["completion"]["text"] == ANSWER and record["finish_reason"] == "stop"
    assert (record["model"], record["input_tokens"], record["output_tokens"]) == ("gpt-4o-mini-2024-07-18", 22, 7)
    assert record["events"] == []  # every event went into prompt and completion


def test_span_first_then_events_in_two_exports_complete_the_stored_object(events_bridge, s3):
    trace_id, span_id = ids()
    start = time.time_ns()
    assert post_spans(events_bridge, call_span(trace_id, span_id, start)).status_code == 200
    events_bridge.wait_until_uploaded()
    first = only_record(s3, events_bridge.bucket, trace_id)
    assert first["prompt"] is None and first["completion"] is None
    key = next(k for k in list_keys(s3, events_bridge.bucket) if trace_id in k or
               read_json(s3, events_bridge.bucket, k)["otel_trace_id"] == trace_id)
    system, user, choice = message_events(trace_id, span_id, start)
    assert post_logs(events_bridge, logs_request(system, user)).status_code == 200
    assert post_logs(events_bridge, logs_request(choice, user)).status_code == 200  # `user` again: a retry
    record = only_record(s3, events_bridge.bucket, trace_id, completed)
    assert read_json(s3, events_bridge.bucket, key) == record  # the same object, completed
    assert [m["content"] for m in record["prompt"]] == ["You are terse.", QUESTION]  # no duplicate


def test_operation_details_event_over_protobuf(events_bridge, s3):
    """The newer shape: one `gen_ai.client.inference.operation.details` event whose attributes
    hold the messages (structured values), sent as OTLP/protobuf."""
    trace_id, span_id = ids()
    start = time.time_ns()
    details = {"timeUnixNano": str(start + 5), "eventName": "gen_ai.client.inference.operation.details",
               "traceId": trace_id, "spanId": span_id,
               "attributes": [{"key": key, "value": any_value(value)} for key, value in {
                   "gen_ai.request.model": "gpt-4o-mini",
                   "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}],
                   "gen_ai.output.messages": [{"role": "assistant", "finish_reason": "stop",
                                               "parts": [{"type": "text", "content": ANSWER}]}]}.items()]}
    document = logs_request(details)
    for item in document["resourceLogs"][0]["scopeLogs"][0]["logRecords"]:
        item["traceId"] = base64.b64encode(bytes.fromhex(item["traceId"])).decode()
        item["spanId"] = base64.b64encode(bytes.fromhex(item["spanId"])).decode()
    body = json_format.ParseDict(document, ExportLogsServiceRequest()).SerializeToString()
    response = requests.post(f"http://127.0.0.1:{events_bridge.http_port}/v1/logs", data=body, timeout=30,
                             headers=events_bridge.headers("sdk", "application/x-protobuf"))
    assert response.status_code == 200
    assert not ExportLogsServiceResponse.FromString(response.content).HasField("partial_success")
    assert post_spans(events_bridge, call_span(trace_id, span_id, start)).status_code == 200
    record = only_record(s3, events_bridge.bucket, trace_id, completed)
    assert record["prompt"] == [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
    assert record["completion"]["text"] == ANSWER


def test_other_log_records_are_counted_and_not_stored(events_bridge, s3):
    trace_id, span_id = ids()
    plain = {"timeUnixNano": str(time.time_ns()), "body": {"stringValue": "GET /checkout 200"},
             "traceId": trace_id, "spanId": span_id}
    no_span = log_record("", "", "gen_ai.user.message", {"content": "hi"}, time.time_ns())
    response = post_logs(events_bridge, logs_request(plain, no_span))
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "2" and "not GenAI events" in partial["errorMessage"]
    unreadable = post_logs(events_bridge, {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "xyz"}]}]}]})
    assert unreadable.status_code == 200 and unreadable.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert post_logs(events_bridge, {"resourceLogs": "nope"}).status_code == 400


def test_a_key_cannot_complete_another_keys_record(events_bridge, s3):
    trace_id, span_id = ids()
    start = time.time_ns()
    assert post_spans(events_bridge, call_span(trace_id, span_id, start), key="sdk").status_code == 200
    assert post_logs(events_bridge, logs_request(*message_events(trace_id, span_id, start)),
                     key="openrouter").status_code == 200
    events_bridge.wait_until_uploaded()
    assert only_record(s3, events_bridge.bucket, trace_id)["prompt"] is None


def test_grpc_logs_service(events_bridge, s3):
    import grpc

    trace_id, span_id = ids()
    start = time.time_ns()
    document = logs_request(*message_events(trace_id, span_id, start))
    for item in document["resourceLogs"][0]["scopeLogs"][0]["logRecords"]:
        item["traceId"] = base64.b64encode(bytes.fromhex(item["traceId"])).decode()
        item["spanId"] = base64.b64encode(bytes.fromhex(item["spanId"])).decode()
    message = json_format.ParseDict(document, ExportLogsServiceRequest())
    with grpc.insecure_channel(events_bridge.grpc_target) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                                     request_serializer=ExportLogsServiceRequest.SerializeToString,
                                     response_deserializer=ExportLogsServiceResponse.FromString)
        with pytest.raises(grpc.RpcError) as refused:
            export(message, metadata=[("authorization", "Bearer wrong-token-3b9d1e")], timeout=15)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        export(message, metadata=[("authorization", f"Bearer {TOKENS['sdk']}")], timeout=15)
    assert post_spans(events_bridge, call_span(trace_id, span_id, start)).status_code == 200
    assert only_record(s3, events_bridge.bucket, trace_id, completed)["completion"]["text"] == ANSWER


def test_langfuse_path_and_basic_credentials(events_bridge, s3):
    trace_id, span_id = ids()
    url = f"http://127.0.0.1:{events_bridge.http_port}/api/public/otel/v1/traces"
    body = orjson.dumps(request(call_span(trace_id, span_id, time.time_ns())))

    def basic(user: str, password: str) -> dict:
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}

    assert requests.post(url, data=body, headers=basic("openrouter", TOKENS["sdk"]), timeout=30).status_code == 401
    assert requests.post(url, data=body, headers=basic("sdk", "wrong-token-3b9d1e"), timeout=30).status_code == 401
    bad = requests.post(url, data=body, headers={"Authorization": "Basic %%%", "Content-Type": "application/json"},
                        timeout=30)
    assert bad.status_code == 401 and "base64" in bad.json()["message"]
    assert requests.post(url, data=body, headers=basic("sdk", TOKENS["sdk"]), timeout=30).status_code == 200
    assert only_record(s3, events_bridge.bucket, trace_id)["ingest"]["key_name"] == "sdk"


def test_completion_queued_behind_a_stale_body_wins_and_halves_survive_kill(moto, s3, tmp_path):
    """S3 unreachable: the span's record (no content) and then its completion wait in the spool,
    one behind the other; when S3 comes back the completed body is what the object holds. And the
    events half of another call, acknowledged before a `kill -9`, completes its span after restart."""
    bucket = new_bucket(s3)
    proxy = Proxy(moto.url)  # its port is reserved; nothing listens there yet
    spool = tmp_path / "spool"
    args = ["--endpoint-url", proxy.url, "--spool-dir", str(spool), "--upload-retry-max-seconds", "1",
            "--upload-concurrency", "4"]
    bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log", args)
    try:
        trace_id, span_id = ids()
        start = time.time_ns()
        assert post_spans(bridge, call_span(trace_id, span_id, start)).status_code == 200
        assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code == 200
        later_trace, later_span = ids()
        assert post_logs(bridge, logs_request(*message_events(later_trace, later_span, start))).status_code == 200
        os.kill(bridge.process.pid, signal.SIGKILL)
        bridge.process.wait(10)
        proxy.start()
        bridge = S3Bridge(moto, bucket, tmp_path / "bridge-2.log", args)
        assert post_spans(bridge, call_span(later_trace, later_span, start)).status_code == 200
        bridge.wait_until_uploaded()
        for trace in (trace_id, later_trace):
            record = only_record(s3, bucket, trace)
            assert completed(record), record
    finally:
        bridge.stop()
        proxy.stop()


def test_a_retried_stale_body_never_overwrites_the_completed_record(moto, s3, tmp_path):
    """Half of the PUTs fail (503): a record's first body, retried with backoff, would often land
    after its completed body. Each call's span and its events are posted back to back."""
    bucket = new_bucket(s3)
    proxy = Proxy(moto.url).start("--fail-rate", "0.5", "--kinds", "503", "--seed", "11")
    bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log",
                      ["--endpoint-url", proxy.url, "--upload-retry-max-seconds", "1", "--upload-concurrency", "8"])
    try:
        calls = [ids() for _ in range(20)]
        start = time.time_ns()
        for trace_id, span_id in calls:
            assert post_spans(bridge, call_span(trace_id, span_id, start)).status_code == 200
            assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code == 200
        bridge.wait_until_uploaded()
        records = {r["otel_trace_id"]: r for k in list_keys(s3, bucket) if (r := read_json(s3, bucket, k))}
        assert len(records) == len(calls)
        assert [trace_id for trace_id, _ in calls if not completed(records[trace_id])] == []
        assert proxy.counters()["faults"] > 0
    finally:
        bridge.stop()
        proxy.stop()


def test_events_whose_span_never_comes_expire_and_free_the_store(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--join-window-seconds", "1"])
    try:
        trace_id, span_id = ids()
        start = time.time_ns()
        assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code == 200
        assert bridge.readiness()["join_bytes"] > 0
        eventually(lambda: "GenAI events of 1 span(s) expired without their span" in bridge.log, 30)
        eventually(lambda: bridge.readiness()["join_bytes"] == 0, 30)
        assert list((tmp_path / "spool" / "join").iterdir()) == []
        assert post_spans(bridge, call_span(trace_id, span_id, start)).status_code == 200
        bridge.wait_until_uploaded()
        assert only_record(s3, bridge.bucket, trace_id)["prompt"] is None  # its events are gone
    finally:
        assert bridge.stop() == 0


def test_expiry_never_waits_for_the_join_stores_lock(moto, s3, tmp_path):
    """Expiry held the store's cross-worker `flock` for its whole scan (about 1.2 s at 100,000
    links), blocking every worker's exports meanwhile. It now needs no lock at all: with the lock
    held by someone else the whole time, expired halves still go."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--join-window-seconds", "1"])
    join = tmp_path / "spool" / "join"
    try:
        trace_id, span_id = ids()
        assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, time.time_ns()))).status_code == 200
        holder = os.open(join, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(holder, fcntl.LOCK_EX)  # another worker, say, holds it for as long as this test
            eventually(lambda: bridge.readiness()["join_bytes"] == 0 and not list(join.iterdir()), 30,
                       lambda: bridge.log)
        finally:
            os.close(holder)
    finally:
        assert bridge.stop() == 0


def test_a_full_join_store_asks_log_exporters_to_retry(moto, s3, tmp_path):
    """Events of spans that never come (a flood of them, say) fill `--join-max-bytes`: further log
    exports are told to retry (503 + Retry-After), and span exports are still stored."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--join-max-bytes", str(1024 * 1024)])
    try:
        statuses = []
        for _ in range(4):
            trace_id, span_id = ids()
            big = log_record(trace_id, span_id, "gen_ai.user.message", {"content": "x" * 400_000}, time.time_ns())
            statuses.append(post_logs(bridge, logs_request(big)))
        assert [r.status_code for r in statuses] == [200, 200, 200, 503]
        assert "Retry-After" in statuses[-1].headers and "--join-max-bytes" in statuses[-1].json()["message"]
        trace_id, span_id = ids()
        assert post_spans(bridge, call_span(trace_id, span_id, time.time_ns())).status_code == 200
        bridge.wait_until_uploaded()
        assert only_record(s3, bridge.bucket, trace_id)["model"] == "gpt-4o-mini-2024-07-18"
    finally:
        assert bridge.stop() == 0


def _send_both_halves_at_once(bridge: S3Bridge, calls: list[tuple[str, str]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    start = time.time_ns()

    def send(job):
        (trace_id, span_id), half = job
        if half == "span":
            return post_spans(bridge, call_span(trace_id, span_id, start)).status_code
        return post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code

    with ThreadPoolExecutor(8) as pool:
        jobs = [(call, half) for call in calls for half in ("span", "events")]
        assert set(pool.map(send, jobs)) == {200}


def test_span_and_events_sent_at_the_same_moment_store_the_completed_record(events_bridge, s3):
    """An app's span and log processors export on their own threads: the two halves of one call
    often arrive together. Whichever the bridge takes first, the object ends up completed."""
    calls = [ids() for _ in range(40)]
    _send_both_halves_at_once(events_bridge, calls)
    events_bridge.wait_until_uploaded()
    for trace_id, _ in calls:
        assert completed(only_record(s3, events_bridge.bucket, trace_id)), trace_id


def test_halves_received_by_different_workers_complete_the_record(moto, s3, tmp_path):
    """`--workers 2`: a call's span and its events often reach different processes, each with its
    own spool and uploaders. The object still ends up completed (every upload of a record that
    awaits events puts what the shared join store holds for it at that moment)."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--workers", "2"])
    try:
        calls = [ids() for _ in range(60)]
        _send_both_halves_at_once(bridge, calls)
        for trace_id, _ in calls:
            only_record(s3, bridge.bucket, trace_id, completed)
    finally:
        assert bridge.stop() == 0  # drains: every upload either worker was going to make is made
    assert "drain deadline reached" not in bridge.log
    for trace_id, _ in calls:  # and none of them put a first body back over a completed one
        assert completed(only_record(s3, bridge.bucket, trace_id)), trace_id


def test_a_join_store_that_cannot_be_written_never_makes_clients_retry_forever(moto, s3, tmp_path):
    """A failure a retry cannot fix (here `--join-dir` is a file): spans are still stored (200),
    event logs are refused for good (400), neither is answered 503 over and over."""
    in_the_way = tmp_path / "not-a-directory"
    in_the_way.write_text("a file")
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--join-dir", str(in_the_way)])
    try:
        trace_id, span_id = ids()
        start = time.time_ns()
        assert post_spans(bridge, call_span(trace_id, span_id, start)).status_code == 200
        refused = post_logs(bridge, logs_request(*message_events(trace_id, span_id, start)))
        assert refused.status_code == 400 and "cannot be kept" in refused.json()["message"]
        bridge.wait_until_uploaded()
        assert only_record(s3, bridge.bucket, trace_id)["model"] == "gpt-4o-mini-2024-07-18"
        assert "cannot write the join store" in bridge.log
    finally:
        assert bridge.stop() == 0


def test_an_older_body_never_overwrites_a_completed_object_after_restarts(moto, s3, tmp_path):
    """A record without content keeps failing (S3 refuses bodies without the prompt), the bridge
    is killed, and on restart (the stale body replayed, failing, waiting out a growing backoff) its
    events complete it: the completed body is stored, then the bridge is killed again with the
    stale body still spooled. A third start, S3 healthy, must not put the stale body over the
    completed object: an acknowledged prompt would be lost."""
    bucket = new_bucket(s3)
    spool = tmp_path / "spool"
    proxy = Proxy(moto.url).start("--fail-bodies-without", QUESTION)
    args = ["--endpoint-url", proxy.url, "--spool-dir", str(spool), "--upload-retry-max-seconds", "30"]
    trace_id, span_id = ids()
    start = time.time_ns()

    def failures() -> int:  # of the call's object
        return sum(count for path, count in proxy.counters().get("failed_bodies", {}).items() if trace_id in path)

    bridge = S3Bridge(moto, bucket, tmp_path / "bridge-1.log", args)
    try:
        assert post_spans(bridge, call_span(trace_id, span_id, start)).status_code == 200
        eventually(lambda: failures() >= 1)
        os.kill(bridge.process.pid, signal.SIGKILL)
        bridge.process.wait(10)
        bridge = S3Bridge(moto, bucket, tmp_path / "bridge-2.log", args)  # the stale body replayed, failing
        before = failures()
        # its backoff is now seconds long: five jittered retries take up to ~13 s of sleeping alone
        eventually(lambda: failures() >= before + 5, timeout=90)
        assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code == 200
        only_record(s3, bucket, trace_id, completed)  # the completed body is stored
        os.kill(bridge.process.pid, signal.SIGKILL)
        bridge.process.wait(10)
        proxy.stop()
        proxy.start()  # S3 healthy
        bridge = S3Bridge(moto, bucket, tmp_path / "bridge-3.log", args)
        bridge.wait_until_uploaded()
        assert completed(only_record(s3, bucket, trace_id))
    finally:
        bridge.stop()
        proxy.stop()


def test_spool_retry_of_an_older_body_never_overwrites_the_completed_object(moto, s3, tmp_path):
    """A record without content is refused for good (quarantined); its events complete it and the
    completed body is stored. `spool retry` beside the running bridge sends the old body back:
    it is superseded, never put over the completed object."""
    bucket = new_bucket(s3)
    spool = tmp_path / "spool"
    proxy = Proxy(moto.url).start("--fail-bodies-without", QUESTION, "--bodies-refused")
    bridge = S3Bridge(moto, bucket, tmp_path / "bridge.log", ["--endpoint-url", proxy.url, "--spool-dir", str(spool)])
    try:
        trace_id, span_id = ids()
        start = time.time_ns()
        assert post_spans(bridge, call_span(trace_id, span_id, start)).status_code == 200
        eventually(lambda: bridge.readiness()["quarantined_total"] == 1)
        assert post_logs(bridge, logs_request(*message_events(trace_id, span_id, start))).status_code == 200
        only_record(s3, bucket, trace_id, completed)
        proxy.stop()
        proxy.start()  # S3 takes any body now
        retried = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "spool", "retry", "--spool-dir", str(spool)],
                                 capture_output=True, text=True, timeout=60)
        assert retried.returncode == 0, retried.stderr
        eventually(lambda: not list((spool / "quarantine").glob("*.seg")))
        eventually(lambda: "queued for upload" in bridge.log, 30, lambda: bridge.log)  # adopted
        bridge.wait_until_uploaded()
        assert completed(only_record(s3, bucket, trace_id))
        assert proxy.counters()["puts"] == 0  # the old body was not even tried
    finally:
        bridge.stop()
        proxy.stop()
