"""Governance per key, through the running bridge and the S3 server: each key's policy from the
TOML config (`[keys.NAME]`), content dropped, hashed or redacted everywhere it occurs, identities
turned into pseudonyms or dropped, calls sampled by trace id, rate limits that refuse a whole
export (429 / RESOURCE_EXHAUSTED with a retry time) without slowing another key, and each key's
object controls.

What a policy removes is looked for in every place the bridge writes: the objects in the bucket
(Parquet read back, not scanned compressed), the spool's segment files, the join store, the
bridge's log and its metrics.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import pathlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import orjson
import pyarrow.parquet as pq
import pytest
import requests
from conftest import TOKENS, S3Bridge, eventually, list_keys, new_bucket
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from otlp_builders import request, span, to_protobuf
from test_genai_events import call_span, log_record, logs_request, post_logs

MARKER = "zebra-marker-7d41"  # in every message of every governed call; never anywhere after `drop`
KEPT_MARKER = "kept-marker-19c3"  # the same calls from a key that keeps content: proof the places are looked at
CUSTOMER, KEPT_CUSTOMER = "alice@example.com", "bob@example.com"
SESSION = "session-42-q"
SECRET = b"pseudonym-secret-for-tests-0123456789"


def key_id(secret: bytes) -> str:
    return "k" + hashlib.sha256(b"otel-s3-bridge pseudonym key id\0" + secret).hexdigest()[:8]


def expected_pseudonym(value: str, secret: bytes = SECRET) -> str:
    return f"{key_id(secret)}:{hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]}"


def ids() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex[:16]


def openinference_call(trace_id: str, span_id: str, start: int) -> dict:
    return span(trace_id, span_id, "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
        "llm.token_count.prompt": 12, "llm.token_count.completion": 3,
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": f"My card is 4111 1111 1111 1111 {MARKER}",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": f"Noted {MARKER}",
        "input.value": orjson.dumps({"messages": [{"role": "user", "content": MARKER}]}).decode(),
        "output.value": f"Noted {MARKER}", "user.id": CUSTOMER, "session.id": SESSION}, start=start)


def genai_call(trace_id: str, span_id: str, start: int, *, status_error: bool = False, marker: str = MARKER,
               customer: str = CUSTOMER, session: str = SESSION) -> dict:
    built = span(trace_id, span_id, "chat gpt-4o-mini", {
        "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 22, "gen_ai.usage.output_tokens": 7, "user.id": customer,
        "gen_ai.conversation.id": session,
        "gen_ai.input.messages": orjson.dumps([{"role": "user", "parts": [
            {"type": "text", "content": f"What is the capital of France? {marker}"}]}]).decode(),
        "gen_ai.output.messages": orjson.dumps([{"role": "assistant", "finish_reason": "stop", "parts": [
            {"type": "text", "content": f"Paris. {marker}"}]}]).decode()}, start=start)
    built["events"] = [{"timeUnixNano": str(start + 1), "name": "gen_ai.user.message",
                        "attributes": [{"key": "content", "value": {"stringValue": f"again {marker}"}}]}]
    if status_error:
        built["status"] = {"code": 2, "message": "upstream failed"}
    return built


def bucket_text(s3, bucket: str) -> str:
    """Everything the bucket holds, decoded: JSON objects as they are, lake files read back."""
    texts = []
    for key in list_keys(s3, bucket):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if key.endswith(".parquet"):
            texts.append(orjson.dumps(pq.read_table(io.BytesIO(body)).to_pylist(), default=str).decode())
        elif key.endswith(".gz"):
            texts.append(gzip.decompress(body).decode())
        else:
            texts.append(body.decode())
    return "\n".join(texts)


def files_text(directory: pathlib.Path) -> bytes:
    return b"\n".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def trace_records(s3, bucket: str) -> list[dict]:
    return [orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            for key in list_keys(s3, bucket) if key.endswith(".json")]


def write_config(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return str(path)


def secret_file(tmp_path: pathlib.Path, secret: bytes = SECRET) -> str:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(secret + b"\n")
    return str(path)


@pytest.mark.parametrize("content, identities", [("drop", "hmac"), ("hash", "drop")])
def test_content_and_identity_policies_leave_nothing_they_remove_in_bucket_spool_join_store_log_or_metrics(
        moto, s3, tmp_path, content, identities):
    config = write_config(tmp_path, f"""
[keys.sdk]
content = "{content}"
identities = "{identities}"
""")
    spool, join = tmp_path / "spool", tmp_path / "join"
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--config", config, "--pseudonym-key-file", secret_file(tmp_path), "--layout", "both",
                       "--batch-max-age-seconds", "3600", "--spool-dir", str(spool), "--join-dir", str(join)])
    try:
        start = 1_790_000_000_000_000_000
        (oi_trace, oi_span), (ga_trace, ga_span), (late_trace, late_span) = ids(), ids(), ids()
        # The GenAI event logs of a call come first: they wait in the join store for its span.
        events = [log_record(late_trace, late_span, "gen_ai.user.message", {"content": f"hello {MARKER}"}, start + 1),
                  log_record(late_trace, late_span, "gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": {
                      "role": "assistant", "content": f"hi {MARKER}"}}, start + 2)]
        assert post_logs(bridge, logs_request(*events)).status_code == 200
        late = call_span(late_trace, late_span, start)
        late["attributes"].append({"key": "user.id", "value": {"stringValue": CUSTOMER}})
        for body in (request(openinference_call(oi_trace, oi_span, start)),
                     request(genai_call(ga_trace, ga_span, start)), request(late)):
            assert bridge.post(orjson.dumps(body), key="sdk").status_code == 200
        # The same call from a key without a policy keeps everything, in the same places.
        kept_trace, kept_span = ids()
        kept = genai_call(kept_trace, kept_span, start, marker=KEPT_MARKER, customer=KEPT_CUSTOMER,
                          session="kept-session")
        assert bridge.post(orjson.dumps(request(kept)), key="openrouter").status_code == 200
        eventually(lambda: len([k for k in list_keys(s3, bridge.bucket) if k.endswith(".json")]) == 4)

        # Still in the spool (the lake files wait) and in the join store: looked at there first.
        spooled, joined = files_text(spool), files_text(join)
        assert oi_trace.encode() in spooled and late_trace.encode() in joined
        assert KEPT_MARKER.encode() in spooled and KEPT_CUSTOMER.encode() in spooled
        for secret in (MARKER, CUSTOMER, SESSION):
            assert secret.encode() not in spooled and secret.encode() not in joined

        records = {record["otel_trace_id"]: record for record in trace_records(s3, bridge.bucket)}
        for trace_id in (oi_trace, ga_trace, late_trace):
            record = records[trace_id]
            text = orjson.dumps(record).decode()
            assert MARKER not in text and CUSTOMER not in text and SESSION not in text, record
            assert record["content_policy"] == content and record["model"] and record["input_tokens"]
            if content == "drop":
                assert record["prompt"] is None and record["completion"] is None
            elif trace_id != late_trace:  # (the late call's content comes from its events)
                assert "sha256:" in orjson.dumps(record["prompt"]).decode() and record["output_tokens"]
            assert record["customer_id"] == (expected_pseudonym(CUSTOMER) if identities == "hmac" else None)
        assert records[oi_trace]["session_id"] == records[ga_trace]["session_id"] == (
            expected_pseudonym(SESSION) if identities == "hmac" else None)
        assert records[kept_trace]["content_policy"] == "keep"
        assert records[kept_trace]["customer_id"] == KEPT_CUSTOMER and records[kept_trace]["prompt"]
        metrics = requests.get(f"http://127.0.0.1:{bridge.metrics_port}/metrics", timeout=10).text
    finally:
        assert bridge.stop() == 0
    lake = bucket_text(s3, bridge.bucket)
    assert ".parquet" in "".join(list_keys(s3, bridge.bucket)) and oi_trace in lake and KEPT_MARKER in lake
    assert MARKER not in lake and CUSTOMER not in lake and SESSION not in lake
    assert MARKER not in bridge.log and CUSTOMER not in bridge.log and SECRET.decode() not in bridge.log
    assert MARKER not in metrics and CUSTOMER not in metrics


def sha256_text(text: str) -> str:
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}:{len(text)}"


def test_hash_replaces_each_text_by_its_digest_and_length_so_equal_prompts_compare_equal(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--ack", "upload", "--content", "hash"])  # the default policy, from its flag
    try:
        start = 1_790_000_000_000_000_000
        (first, first_span), (second, second_span) = ids(), ids()
        for trace_id, span_id in ((first, first_span), (second, second_span)):
            body = orjson.dumps(request(genai_call(trace_id, span_id, start)))
            assert bridge.post(body, key="sdk").status_code == 200
        records = {record["otel_trace_id"]: record for record in trace_records(s3, bridge.bucket)}
    finally:
        assert bridge.stop() == 0
    question, answer = f"What is the capital of France? {MARKER}", f"Paris. {MARKER}"
    for record in records.values():
        assert record["content_policy"] == "hash"
        assert record["prompt"] == [{"role": "user", "parts": [{"type": "text", "content": sha256_text(question)}]}]
        assert record["completion"]["text"] == sha256_text(answer)
        assert [event["attributes"]["content"] for event in record["events"]] == [sha256_text(f"again {MARKER}")]
        assert (record["model"], record["input_tokens"], record["output_tokens"]) == ("gpt-4o-mini", 22, 7)
        assert record["customer_id"] == CUSTOMER  # identities are another setting
        assert MARKER not in orjson.dumps(record).decode()
    assert records[first]["prompt"] == records[second]["prompt"]


def test_sampling_keeps_whole_traces_by_trace_id_and_every_errored_call_and_counts_the_rest(moto, s3, tmp_path):
    config = write_config(tmp_path, '[keys.sdk]\nsample = 0.3\n')
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload", "--config", config])
    try:
        start = 1_790_000_000_000_000_000
        calls = [ids() for _ in range(120)]
        errored = [ids() for _ in range(10)]
        spans = [genai_call(t, s, start) for t, s in calls] + [genai_call(t, s, start, status_error=True)
                                                               for t, s in errored]
        # a second span of each of the first 20 traces, in another export: the same decision
        later = [genai_call(t, uuid.uuid4().hex[:16], start + 10 ** 10) for t, _ in calls[:20]]
        unpoliced = [ids() for _ in range(5)]
        answer = bridge.post(to_protobuf(request(*spans)), key="sdk",
                             headers={"Content-Type": "application/x-protobuf"})
        assert answer.status_code == 200
        assert bridge.post(orjson.dumps(request(*later)), key="sdk").status_code == 200
        assert bridge.post(orjson.dumps(request(*[genai_call(t, s, start) for t, s in unpoliced])),
                           key="openrouter").status_code == 200  # a key without a policy: all stored
        stored = [record["otel_trace_id"] for record in trace_records(s3, bridge.bucket)]
        metrics = bridge.metrics()
    finally:
        assert bridge.stop() == 0
    # OpenTelemetry's consistent sampling: the trace id's low 56 bits against the share.
    kept = {t for t, _ in calls if int(t[-14:], 16) < 0.3 * 2 ** 56}
    assert 15 < len(kept) < 60  # the ids are random: the share holds roughly
    expected = sorted([t for t, _ in calls if t in kept] + [t for t, _ in errored]
                      + [t for t, _ in calls[:20] if t in kept] + [t for t, _ in unpoliced])
    assert sorted(stored) == expected
    sampled_out = (len(calls) - len(kept)) + sum(1 for t, _ in calls[:20] if t not in kept)
    assert metrics[("otel_s3_bridge_calls_sampled_out_total", (("key", "sdk"),))] == sampled_out


def test_a_key_over_its_rates_is_refused_whole_with_a_retry_time_and_another_key_is_not(moto, s3, tmp_path):
    config = write_config(tmp_path, "[keys.openrouter]\nmax_spans_per_second = 20\n")
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload", "--config", config])
    try:
        start = 1_790_000_000_000_000_000
        answers: dict[str, list[tuple[requests.Response, list[str]]]] = {"openrouter": [], "sdk": []}

        def send(key: str) -> None:
            traces = [ids() for _ in range(10)]
            body = orjson.dumps(request(*[genai_call(t, s, start) for t, s in traces]))
            answers[key].append((bridge.post(body, key=key), [t for t, _ in traces]))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, ["openrouter", "sdk"] * 20))
        stored = {record["otel_trace_id"] for record in trace_records(s3, bridge.bucket)}
        limited = [(answer, traces) for answer, traces in answers["openrouter"] if answer.status_code == 429]
        assert limited and all(answer.status_code == 200 for answer, _ in answers["sdk"])
        assert {answer.status_code for answer, _ in answers["openrouter"]} == {200, 429}
        for answer, traces in limited:
            assert int(answer.headers["Retry-After"]) >= 1
            status = status_pb2.Status.FromString(answer.content) if answer.headers["Content-Type"].endswith(
                "protobuf") else orjson.loads(answer.content)
            assert "max_spans_per_second" in (status.message if hasattr(status, "message") else status["message"])
            assert not stored & set(traces)  # nothing of a refused export is stored
        for answer, traces in answers["openrouter"] + answers["sdk"]:
            if answer.status_code == 200:
                assert set(traces) <= stored

        # gRPC: RESOURCE_EXHAUSTED with RetryInfo, for the limited key only.
        channel = grpc.insecure_channel(bridge.grpc_target)
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        message = trace_service_pb2.ExportTraceServiceRequest.FromString(
            to_protobuf(request(*[genai_call(*ids(), start) for _ in range(30)])))
        refusals = []

        def export(key: str) -> grpc.StatusCode:
            try:
                stub.Export(message, metadata=[("authorization", f"Bearer {TOKENS[key]}")], timeout=30)
                return grpc.StatusCode.OK
            except grpc.RpcError as error:
                refusals.append(error)
                return error.code()

        eventually(lambda: export("openrouter") == grpc.StatusCode.OK)  # once its debt is paid
        assert export("openrouter") == grpc.StatusCode.RESOURCE_EXHAUSTED  # 30 spans > 20 a second: in debt
        assert export("sdk") == grpc.StatusCode.OK
        channel.close()
        for error in refusals:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = [status_pb2.Status.FromString(value) for name, value in error.trailing_metadata()
                       if name == "grpc-status-details-bin"]
            info = error_details_pb2.RetryInfo()
            assert details and details[0].details[0].Unpack(info) and info.retry_delay.seconds >= 1
        metrics = bridge.metrics()
    finally:
        assert bridge.stop() == 0
    assert metrics[("otel_s3_bridge_exports_rate_limited_total", (("key", "openrouter"),))] >= len(limited) + 1


def test_key_policies_in_the_config_are_checked_with_the_keys_and_the_old_flags_keep_working(tmp_path):
    from otel_s3_bridge.config.load import load_config
    from otel_s3_bridge.errors import ConfigError
    tokens = ["team-a=tok-team-a-0000000001", "team-b=tok-team-b-0000000002"]
    good = write_config(tmp_path, """
[keys.team-a]
prefix = "traces/team-a"
bucket = "team-a-traces"
content = "drop"
sample = 0.25
max_spans_per_second = 500
max_bytes_per_second = 5_000_000
""")
    config = load_config({"config": good, "tokens": tokens, "key_prefixes": ["team-b=traces/team-b"],
                          "content": "hash"}, env={})
    team_a, team_b = config.policy_of("team-a"), config.policy_of("team-b")
    assert (team_a.prefix, team_a.bucket, team_a.content, team_a.sample, team_a.max_spans_per_second) == (
        "traces/team-a", "team-a-traces", "drop", 0.25, 500)
    assert (team_b.prefix, team_b.bucket, team_b.content, team_b.sample) == ("traces/team-b", None, "hash", 1.0)
    from_env = load_config({"tokens": tokens}, env={"OTEL_S3_BRIDGE_KEYS": '{"team-b": {"identities": "drop"}}'})
    assert from_env.policy_of("team-b").identities == "drop"

    bad = write_config(tmp_path, """
[keys.team-a]
prefix = "traces/other"
content = "shred"
colour = "red"
[keys.nobody]
sample = 2
[keys.team-b]
identities = "hmac"
""")
    with pytest.raises(ConfigError) as raised:
        load_config({"config": bad, "tokens": tokens, "key_prefixes": ["team-a=traces/team-a"]}, env={})
    text = "\n".join(raised.value.problems)
    for expected in ("keys.team-a.content: must be one of keep, drop, hash, redact", "unknown setting 'colour'",
                     "keys.nobody.sample: must be a number from 0 to 1"):
        assert expected in text, text
    with pytest.raises(ConfigError) as raised:
        load_config({"config": write_config(tmp_path, '[keys.nobody]\nsample = 0.5\n[keys.team-a]\nprefix = "x/a"\n'
                                            '[keys.team-b]\nidentities = "hmac"\n'),
                     "tokens": tokens, "key_prefixes": ["team-a=traces/team-a"]}, env={})
    text = "\n".join(raised.value.problems)
    for expected in ("keys: 'nobody' is not the name of a key", "'team-a' has another prefix in keys.team-a",
                     "--pseudonym-key-file: identities = hmac needs a secret"):
        assert expected in text, text
    short = tmp_path / "short.key"
    short.write_bytes(b"too-short")
    with pytest.raises(ConfigError) as raised:
        load_config({"tokens": tokens, "identities": "hmac", "pseudonym_key_file": str(short)}, env={})
    assert "at least 16 bytes" in str(raised.value) and "too-short" not in str(raised.value)
    patterns = load_config({"tokens": tokens}, env={
        "OTEL_S3_BRIDGE_REDACT_PATTERNS": "EMPLOYEE=EMP-\\d{3,6}\nTICKET=[A-Z]{2,4}-[0-9]+",
        "OTEL_S3_BRIDGE_REDACT_PHONE_REGION": "de"})  # one per line: patterns hold commas
    assert patterns.redact_patterns == (("EMPLOYEE", "EMP-\\d{3,6}"), ("TICKET", "[A-Z]{2,4}-[0-9]+"))
    assert patterns.redact_phone_region == "DE"
    for entry, expected in (("employee=x", "is not LABEL=REGEX"), ("EMAIL=x", "one of the built-in placeholders"),
                            ("AFTER=(?<=a)b", "not an RE2 regular expression"), ("ANY=a*", "matches the empty text")):
        with pytest.raises(ConfigError) as raised:
            load_config({"tokens": tokens, "redact_patterns": [entry]}, env={})
        assert expected in str(raised.value), raised.value
    with pytest.raises(ConfigError) as raised:
        load_config({"tokens": tokens, "redact_phone_region": "XX"}, env={})
    assert "is not a country code" in str(raised.value)
    objects = write_config(tmp_path, """
[keys.team-a]
s3_sse = "rot13"
s3_storage_class = "cold storage"
""")
    with pytest.raises(ConfigError) as raised:
        load_config({"config": objects, "tokens": tokens}, env={})
    text = "\n".join(raised.value.problems)
    for expected in ("keys.team-a.s3_sse: 'rot13' is not one of off, AES256, aws:kms", "keys.team-a.s3_storage_class:"):
        assert expected in text, text
    too_many = write_config(tmp_path, '[keys.team-b]\ns3_tags = "a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9"\n')
    with pytest.raises(ConfigError) as raised:  # 9 of its own and 2 of the flag's: S3 takes 10
        load_config({"config": too_many, "tokens": tokens, "s3_tags": "owner={keyName},z=0"}, env={})
    assert "keys.team-b.s3_tags: with --s3-tags that makes more than 10 tags per object" in str(raised.value)


@pytest.mark.parametrize("put_path", ["direct", "aiobotocore"])
def test_objects_carry_encryption_storage_class_and_tags_signed_on_every_put_path(moto, s3, tmp_path, put_path):
    """Read back from the S3 server: a small object (one PUT) and one over --s3-multipart-bytes (parts)."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--ack", "upload", "--s3-put-path", put_path, "--s3-sse", "AES256",
                       "--s3-storage-class", "STANDARD_IA", "--s3-tags", "team=ml platform, retention=90d",
                       "--s3-multipart-bytes", str(5 * 1024 * 1024)])
    try:
        start = 1_790_000_000_000_000_000
        small, large = ids(), ids()
        assert bridge.post(orjson.dumps(request(genai_call(*small, start)))).status_code == 200
        big = genai_call(*large, start, marker="x" * (6 * 1024 * 1024))
        assert bridge.post(orjson.dumps(request(big))).status_code == 200
    finally:
        assert bridge.stop() == 0
    keys = {key.rsplit("/", 1)[1].split("-")[0]: key for key in list_keys(s3, bridge.bucket)}
    for trace_id in (small[0], large[0]):
        head = s3.head_object(Bucket=bridge.bucket, Key=keys[trace_id])
        assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
        tags = s3.get_object_tagging(Bucket=bridge.bucket, Key=keys[trace_id])["TagSet"]
        assert sorted((tag["Key"], tag["Value"]) for tag in tags) == [("retention", "90d"), ("team", "ml platform")]
    assert head["ContentLength"] > 6 * 1024 * 1024 and "-" in head["ETag"]  # the large one went up in parts


def test_a_rotated_pseudonym_secret_is_read_again_and_named_by_its_key_id(moto, s3, tmp_path):
    key_file = secret_file(tmp_path)
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--ack", "upload", "--identities", "hmac", "--pseudonym-key-file", key_file])
    rotated = b"the-rotated-pseudonym-secret-0002"
    try:
        start = 1_790_000_000_000_000_000

        def customer_of_a_new_call() -> str:
            trace_id, span_id = ids()
            assert bridge.post(orjson.dumps(request(genai_call(trace_id, span_id, start)))).status_code == 200
            return next(record["customer_id"] for record in trace_records(s3, bridge.bucket)
                        if record["otel_trace_id"] == trace_id)

        assert customer_of_a_new_call() == expected_pseudonym(CUSTOMER)
        pathlib.Path(key_file).write_bytes(rotated)
        eventually(lambda: customer_of_a_new_call() == expected_pseudonym(CUSTOMER, rotated), 30)
    finally:
        assert bridge.stop() == 0
    assert key_id(rotated) != key_id(SECRET)
    assert rotated.decode() not in bridge.log and SECRET.decode() not in bridge.log and CUSTOMER not in bridge.log


def test_hash_takes_message_json_nested_deeper_than_python_recurses(moto, s3, tmp_path):
    """An attack on `hash`: a content attribute holding JSON 900 levels deep (and 5,000, which JSON
    parsers refuse) must be stored hashed, not crash the export."""
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--ack", "upload", "--content", "hash"])
    try:
        start = 1_790_000_000_000_000_000
        stored = {}
        for depth in (900, 5000):
            trace_id, span_id = ids()
            call = openinference_call(trace_id, span_id, start)
            call["attributes"] = [a for a in call["attributes"] if a["key"] != "input.value"] + [
                {"key": "input.value", "value": {"stringValue": "[" * depth + f'"{MARKER}"' + "]" * depth}}]
            answer = bridge.post(orjson.dumps(request(call)), key="sdk")
            assert answer.status_code == 200, answer.text
            assert "rejected" not in answer.text, answer.text
            stored[depth] = next(record for record in trace_records(s3, bridge.bucket)
                                 if record["otel_trace_id"] == trace_id)
    finally:
        assert bridge.stop() == 0
    for record in stored.values():
        assert MARKER not in orjson.dumps(record).decode() and record["content_policy"] == "hash"
    assert "could not be decoded" not in bridge.log


# What `redact` must find in each place a call holds messages: one of each kind, and the operator's own.
PII = {"[EMAIL]": "maria.garcia@contoso.com", "[PHONE]": "(617) 253-1000", "[CARD]": "4111 1111 1111 1111",
       "[IBAN]": "DE89 3704 0044 0532 0130 00", "[SSN]": "536-22-8726", "[IP]": "203.0.113.42",
       "[SECRET]": "sk-proj-Tohsgnrb44Ds0EXR_ox-EVybB6X22ErphBWafZa75WVaOVQMQT948pt2h91AoliUe9WNhspikr",
       "[EMPLOYEE]": "EMP-448812"}
WORDS = "please keep these words"
KEPT_EMAIL = "kept.person@example.net"


def pii_text(*placeholders: str) -> str:
    return " ".join(f"{WORDS} {PII[placeholder]}" for placeholder in placeholders or PII) + f" {MARKER}"


def redacted_text(*placeholders: str) -> str:
    return " ".join(f"{WORDS} {placeholder}" for placeholder in placeholders or PII) + f" {MARKER}"


def test_redact_replaces_what_it_detects_by_typed_placeholders_everywhere_and_keeps_the_rest(moto, s3, tmp_path):
    config = write_config(tmp_path, r"""
redact_patterns = ["EMPLOYEE=EMP-\\d{6}"]
[keys.sdk]
content = "redact"
""")
    spool, join = tmp_path / "spool", tmp_path / "join"
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--config", config, "--layout", "both", "--batch-max-age-seconds", "3600",
                       "--spool-dir", str(spool), "--join-dir", str(join)])
    try:
        start = 1_790_000_000_000_000_000
        (ga_trace, ga_span), (oi_trace, oi_span), (late_trace, late_span) = ids(), ids(), ids()
        # GenAI event logs that wait in the join store for their span
        events = [log_record(late_trace, late_span, "gen_ai.user.message", {"content": pii_text("[EMAIL]", "[CARD]")},
                             start + 1),
                  log_record(late_trace, late_span, "gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": {
                      "role": "assistant", "content": pii_text("[PHONE]")}}, start + 2)]
        assert post_logs(bridge, logs_request(*events)).status_code == 200
        genai = span(ga_trace, ga_span, "chat gpt-4o-mini", {
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 22, "gen_ai.usage.output_tokens": 7, "user.id": CUSTOMER,
            "gen_ai.input.messages": orjson.dumps([{"role": "user", "parts": [
                {"type": "text", "content": pii_text()}]}]).decode(),
            "gen_ai.output.messages": orjson.dumps([{"role": "assistant", "finish_reason": "stop", "parts": [
                {"type": "text", "content": pii_text("[IBAN]", "[SSN]")}]}]).decode()}, start=start)
        genai["events"] = [{"timeUnixNano": str(start + 1), "name": "gen_ai.user.message",
                            "attributes": [{"key": "content", "value": {"stringValue": pii_text("[IP]", "[SECRET]")}}]}]
        openinference = span(oi_trace, oi_span, "ChatCompletion", {
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
            "llm.token_count.prompt": 12, "llm.token_count.completion": 3,
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": pii_text("[EMPLOYEE]", "[EMAIL]"),
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": pii_text("[SECRET]"),
            "input.value": orjson.dumps({"messages": [{"role": "user", "content": pii_text("[CARD]")}]}).decode()},
            start=start)
        for body in (request(genai), request(openinference), request(call_span(late_trace, late_span, start))):
            assert bridge.post(orjson.dumps(body), key="sdk").status_code == 200
        kept_trace, kept_span = ids()  # a key without a policy: its values stay, in the same places
        kept = genai_call(kept_trace, kept_span, start, marker=KEPT_EMAIL)
        assert bridge.post(orjson.dumps(request(kept)), key="openrouter").status_code == 200
        # An export over 128 KiB is decoded in a decode process: the policy travels there too.
        large = [genai_call(*ids(), start, marker=pii_text() + " padding" * 100) for _ in range(120)]
        large_body = orjson.dumps(request(*large))
        assert len(large_body) > 128 * 1024 and bridge.post(large_body, key="sdk").status_code == 200
        eventually(lambda: len([k for k in list_keys(s3, bridge.bucket) if k.endswith(".json")]) == 4 + len(large))

        spooled, joined = files_text(spool), files_text(join)
        assert ga_trace.encode() in spooled and late_trace.encode() in joined and MARKER.encode() in joined
        assert KEPT_EMAIL.encode() in spooled  # the unpoliced key's
        records = {record["otel_trace_id"]: record for record in trace_records(s3, bridge.bucket)}
        metrics = requests.get(f"http://127.0.0.1:{bridge.metrics_port}/metrics", timeout=10).text
    finally:
        assert bridge.stop() == 0
    for value in PII.values():
        assert value.encode() not in spooled and value.encode() not in joined and value not in bridge.log, value
        assert value not in metrics, value

    genai_record, oi_record, late_record = records[ga_trace], records[oi_trace], records[late_trace]
    assert genai_record["content_policy"] == "redact"
    assert genai_record["prompt"] == [{"role": "user", "parts": [{"type": "text", "content": redacted_text()}]}]
    assert genai_record["completion"]["text"] == redacted_text("[IBAN]", "[SSN]")
    assert [event["attributes"]["content"] for event in genai_record["events"]] == [redacted_text("[IP]", "[SECRET]")]
    assert (genai_record["model"], genai_record["input_tokens"], genai_record["output_tokens"]) == (
        "gpt-4o-mini", 22, 7)
    assert genai_record["customer_id"] == CUSTOMER
    oi_text = orjson.dumps(oi_record).decode()
    assert redacted_text("[EMPLOYEE]", "[EMAIL]") in oi_text and redacted_text("[SECRET]") in oi_text
    assert redacted_text("[CARD]") in oi_text
    late_text = orjson.dumps(late_record).decode()
    assert redacted_text("[EMAIL]", "[CARD]") in late_text and redacted_text("[PHONE]") in late_text
    for record in (genai_record, oi_record, late_record):
        assert not any(value in orjson.dumps(record).decode() for value in PII.values()), record
    pooled = [record for record in records.values() if "padding" in orjson.dumps(record).decode()]
    assert len(pooled) == 120 and all(record["content_policy"] == "redact" for record in pooled)
    assert all(redacted_text() in orjson.dumps(record).decode() for record in pooled)
    assert KEPT_EMAIL in orjson.dumps(records[kept_trace]).decode()
    lake = bucket_text(s3, bridge.bucket)
    assert ".parquet" in "".join(list_keys(s3, bridge.bucket)) and redacted_text() in lake and KEPT_EMAIL in lake
    assert not any(value in lake for value in PII.values())


@pytest.mark.parametrize("put_path", ["direct", "aiobotocore"])
def test_each_keys_objects_carry_its_own_controls_and_tags_naming_the_key_and_the_instrumentation(
        moto, s3, tmp_path, put_path):
    """Trace objects and lake files: a key's [keys.NAME] controls over the flags', `{keyName}` and
    `{source}` filled in per record; a lake file holds only records its tags are true of."""
    config = write_config(tmp_path, """
[keys.sdk]
s3_storage_class = "ONEZONE_IA"
s3_tags = "team=team-sdk,retention=30d"
""")
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log",
                      ["--config", config, "--layout", "both", "--s3-put-path", put_path,
                       "--s3-sse", "AES256", "--s3-tags", "owner={keyName},source={source},retention=90d",
                       "--batch-max-age-seconds", "3600"])
    try:
        start = 1_790_000_000_000_000_000
        sent = {"sdk": [ids(), ids()], "openrouter": [ids()]}
        for (trace_id, span_id), call in ((sent["sdk"][0], genai_call), (sent["sdk"][1], openinference_call),
                                          (sent["openrouter"][0], genai_call)):
            key = "sdk" if (trace_id, span_id) in sent["sdk"] else "openrouter"
            assert bridge.post(orjson.dumps(request(call(trace_id, span_id, start))), key=key).status_code == 200
        eventually(lambda: len([k for k in list_keys(s3, bridge.bucket) if k.endswith(".json")]) == 3)
        records = {record["otel_trace_id"]: record for record in trace_records(s3, bridge.bucket)}
    finally:
        assert bridge.stop() == 0  # drains the lake files
    keys = {key.rsplit("/", 1)[1].split("-")[0]: key for key in list_keys(s3, bridge.bucket) if key.endswith(".json")}

    def controls(key: str) -> tuple[str, str, dict[str, str]]:
        head = s3.head_object(Bucket=bridge.bucket, Key=key)
        tags = s3.get_object_tagging(Bucket=bridge.bucket, Key=key)["TagSet"]
        return head["ServerSideEncryption"], head.get("StorageClass", "STANDARD"), {t["Key"]: t["Value"] for t in tags}

    def expected(key_name: str, source: str) -> tuple[str, str, dict[str, str]]:
        if key_name == "sdk":
            return "AES256", "ONEZONE_IA", {"owner": "sdk", "source": source, "retention": "30d", "team": "team-sdk"}
        return "AES256", "STANDARD", {"owner": key_name, "source": source, "retention": "90d"}

    sources = {records[trace_id]["source"] for (trace_id, _) in sent["sdk"]}
    assert len(sources) == 2  # one key, two instrumentations
    for key_name, calls in sent.items():
        for trace_id, _ in calls:
            assert controls(keys[trace_id]) == expected(key_name, records[trace_id]["source"])
    lake_files = [key for key in list_keys(s3, bridge.bucket) if key.endswith(".parquet")]
    assert len(lake_files) == 3  # one per (key, source): tags are true of every record in a file
    for key in lake_files:
        rows = pq.read_table(io.BytesIO(s3.get_object(Bucket=bridge.bucket, Key=key)["Body"].read())).to_pylist()
        (key_name, source), = {(row["ingest_key_name"], row["source"]) for row in rows}
        assert controls(key) == expected(key_name, source)


def test_tag_templates_are_filled_with_what_s3_takes_in_a_tag():
    from otel_s3_bridge.lake.object_controls import ObjectControls, parse_tags
    controls = ObjectControls(tags=parse_tags("owner={keyName},source={source},retention=90d"))
    assert controls.templated and not ObjectControls(tags=(("a", "b"),)).templated
    assert controls.render("team&a?", "gen_ai").tags == (("owner", "team_a_"), ("source", "gen_ai"),
                                                         ("retention", "90d"))
    assert controls.render(None, None).tags[:2] == (("owner", "anonymous"), ("source", "unknown"))
    assert dict(controls.render("k" * 300, "x").tags)["owner"] == "k" * 256
    with pytest.raises(ValueError, match="values may hold"):
        parse_tags("owner={keyName}&x")
