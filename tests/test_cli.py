"""The command line as a user runs it: `serve` on the embedded default, `check`, start-up refusals,
configuration errors and `send-test-trace`, each a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import orjson
import pytest
import requests

from conftest import (CAPTURES, TOKENS, BridgeProcess, S3Bridge, capture_lines, free_port, key_for, list_keys,
                      new_bucket, read_json)
from otlp_builders import to_protobuf

CONVENTIONS = CAPTURES.parent / "conventions"


def run_cli(*args: str, cwd=None, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_s3_bridge", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


# --- the embedded default: no bucket, no config file ----------------------------------------------

def test_serve_without_configuration_writes_the_s3_layout_to_a_local_directory(tmp_path):
    bridge = BridgeProcess([], tmp_path / "bridge.log", cwd=tmp_path)
    try:
        assert "local directory ./otel-s3-data" in bridge.log
        assert f"http://127.0.0.1:{bridge.http_port}/v1/traces" in bridge.log
        line = capture_lines("pi.ndjson")[0]
        response = requests.post(bridge.url, data=line, headers={"Content-Type": "application/json"}, timeout=10)
        assert response.status_code == 200
    finally:
        assert bridge.stop() == 0
    path = tmp_path / "otel-s3-data" / key_for("gen-1790606294-sdYHTGXUVyDKWCLqX5Op", 1790606294318000000)
    record = orjson.loads(path.read_bytes())
    assert record["generation_id"] == "gen-1790606294-sdYHTGXUVyDKWCLqX5Op"
    assert record["ingest"]["key_name"] is None
    objects = [p for p in (tmp_path / "otel-s3-data" / "openrouter-traces").rglob("*") if p.is_file()]
    assert objects == [path]
    assert list((tmp_path / "otel-s3-data" / "spool" / "segments").iterdir()) == []  # drained at stop


def test_default_configuration_is_loopback_4318_4317():
    from otel_s3_bridge.config import load_config

    config = load_config({}, env={})
    assert (config.host, config.http_port, config.grpc_port) == ("127.0.0.1", 4318, 4317)
    assert not config.uses_s3 and config.output_dir == "./otel-s3-data"
    assert str(config.path_template) == "{prefix}/{date}" and config.prefix == "openrouter-traces"


def test_grpc_port_zero_disables_grpc(tmp_path):
    bridge = BridgeProcess([], tmp_path / "bridge.log", cwd=tmp_path, grpc=False)
    try:
        assert "OTLP/gRPC" not in bridge.log
    finally:
        assert bridge.stop() == 0


def test_settings_from_environment_and_config_file(moto, s3, tmp_path):
    bucket = new_bucket(s3)
    config_file = tmp_path / "bridge.toml"
    config_file.write_text(f'bucket = "{bucket}"\nendpoint_url = "{moto.url}"\nprefix = "from-file"\n'
                           f'path_template = "{{prefix}}/{{keyName}}/{{year}}/{{month}}/{{day}}/{{hour}}"\n'
                           '[tokens]\nfilekey = "tok-from-file-1234"\n')
    port = free_port()
    env = {"OTEL_S3_BRIDGE_PREFIX": "from-env", "OTEL_S3_BRIDGE_HTTP_PORT": str(port),
           "OTEL_S3_BRIDGE_GRPC_PORT": "0", "OTEL_S3_BRIDGE_CONFIG": str(config_file)}
    log = tmp_path / "bridge.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "otel_s3_bridge", "serve"], stdout=handle,
                                   stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while "ready" not in log.read_text() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        response = requests.post(f"http://127.0.0.1:{port}/v1/traces", data=capture_lines("codex.ndjson")[1],
                                 headers={"Authorization": "Bearer tok-from-file-1234",
                                          "Content-Type": "application/json"}, timeout=10)
        assert response.status_code == 200, log.read_text()
    finally:
        process.terminate()
        assert process.wait(20) == 0
    [key] = list_keys(s3, bucket)
    assert re.fullmatch(r"from-env/filekey/2026/09/28/\d\d/gen-1790606059-t5wtYWOLe4iC5c17HLyQ-1790606059\.json", key)
    assert "tok-from-file-1234" not in log.read_text()


# --- check ----------------------------------------------------------------------------------------

def test_check_against_a_good_bucket(moto, s3):
    bucket = new_bucket(s3)
    result = run_cli("check", "--bucket", bucket, "--endpoint-url", moto.url)
    assert result.returncode == 0, result.stderr
    assert f"check passed for s3://{bucket}" in result.stdout
    assert "s3:PutObject" in result.stdout and "s3:DeleteObject" in result.stdout
    assert list_keys(s3, bucket) == []  # the probe object was deleted


def test_check_against_a_missing_bucket(moto):
    result = run_cli("check", "--bucket", "no-such-bucket-here", "--endpoint-url", moto.url)
    assert result.returncode == 1
    assert "bucket 'no-such-bucket-here' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_against_an_unreachable_endpoint():
    result = run_cli("check", "--bucket", "some-bucket", "--endpoint-url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "endpoint unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_of_the_local_directory(tmp_path):
    result = run_cli("check", "--output-dir", str(tmp_path / "data"))
    assert result.returncode == 0 and "local directory" in result.stdout


def test_serve_refuses_to_start_when_the_check_fails(moto, tmp_path):
    result = run_cli("serve", "--bucket", "no-such-bucket-here", "--endpoint-url", moto.url,
                     "--http-port", str(free_port()), "--grpc-port", "0", "--spool-dir", str(tmp_path / "spool"))
    assert result.returncode == 1
    assert "refusing to start" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


# --- configuration errors -------------------------------------------------------------------------

def test_every_bad_field_is_named_in_one_message():
    result = run_cli("serve", "--http-port", "abc", "--path-template", "{prefix}/{nope}", "--region", "",
                     "--endpoint-url", "ftp://x", "--token", "broken", "--s3-addressing-style", "sideways",
                     env={"OTEL_S3_BRIDGE_GRPC_PORT": "99999"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for expected in ("--http-port", "OTEL_S3_BRIDGE_GRPC_PORT", "--path-template", "{nope}", "--endpoint-url",
                     "--token", "--s3-addressing-style"):
        assert expected in result.stderr


def test_refuses_to_listen_beyond_loopback_without_tokens():
    result = run_cli("serve", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


def test_token_values_are_never_printed():
    result = run_cli("serve", "--host", "0.0.0.0", "--token", "a=secret-one", "--token", "a=secret-two",
                     "--http-port", "0")
    assert result.returncode == 2
    assert "repeats the name" in result.stderr
    assert "secret-one" not in result.stderr and "secret-two" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    bridge = BridgeProcess([], tmp_path / "first.log", cwd=tmp_path)
    try:
        result = run_cli("serve", "--http-port", str(bridge.http_port), "--grpc-port", "0",
                         "--spool-dir", str(tmp_path / "second-spool"), cwd=tmp_path)
        assert result.returncode == 1
        assert "refusing to start" in result.stderr and "address already in use" in result.stderr
        assert "Traceback" not in result.stderr
        shared = run_cli("serve", "--http-port", str(free_port()), "--grpc-port", "0", cwd=tmp_path)
        assert shared.returncode == 1
        assert "is in use by another otel-s3-bridge" in shared.stderr
    finally:
        bridge.stop()


# --- send-test-trace ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefixed_bridge(moto, s3, tmp_path_factory):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path_factory.mktemp("sent") / "bridge.log",
                      ["--prefix", "llm", "--path-template", "{prefix}/{apiKeyName}/{date}"])
    yield bridge
    assert bridge.stop() == 0


def test_send_test_trace_lands_on_the_printed_key(prefixed_bridge, s3):
    result = run_cli("send-test-trace", "--endpoint", prefixed_bridge.url, "--token", TOKENS["openrouter"],
                     "--prefix", "llm", "--path-template", "{prefix}/{apiKeyName}/{date}")
    assert result.returncode == 0, result.stderr
    key = re.search(r"expected key: (\S+)", result.stdout).group(1)
    assert key.startswith("llm/send-test-trace/")
    record = read_json(s3, prefixed_bridge.bucket, key)
    assert record["span_name"] == "Test Generation"
    assert record["name"] == "Test Trace - OpenRouter Observability"
    assert record["model"] == "openai/gpt-4-turbo" and record["cost"] == 0.0006
    assert record["completion"]["text"] == "Hello, otel-s3-bridge!"


def test_send_test_trace_reports_a_rejection(prefixed_bridge):
    result = run_cli("send-test-trace", "--endpoint", prefixed_bridge.url, "--token", "wrong")
    assert result.returncode == 1
    assert "401" in result.stderr


# --- --non-llm-spans ------------------------------------------------------------------------------

def test_non_llm_spans_drop_reports_them_as_rejected(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--non-llm-spans", "drop"])
    try:
        response = bridge.post((CONVENTIONS / "otlp.request.json").read_bytes())
        assert response.status_code == 200
        partial = response.json()["partialSuccess"]
        assert partial["rejectedSpans"] == "2" and "--non-llm-spans drop" in partial["errorMessage"]
        assert bridge.post((CONVENTIONS / "gen_ai.request.json").read_bytes()).json() == {}
        bridge.wait_until_uploaded()
        assert len(list_keys(s3, bridge.bucket)) == 1
    finally:
        assert bridge.stop() == 0


# --- decode ---------------------------------------------------------------------------------------

def test_decode_prints_records_as_ndjson():
    result = run_cli("decode", str(CAPTURES / "pi.ndjson"))
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [r["generation_id"] for r in records][:2] == ["gen-1790606294-sdYHTGXUVyDKWCLqX5Op",
                                                          "gen-1790606298-6JSFeW7zs6W0v5Pu8ZJE"]
    assert len(records) == 8 and {r["ingest"]["transport"] for r in records} == {"file/json"}


def test_decode_with_keys_from_stdin_and_a_template(tmp_path):
    data = (CONVENTIONS / "vercel_ai.request.json").read_bytes()
    result = subprocess.run([sys.executable, "-m", "otel_s3_bridge", "decode", "-", "--key", "--path-template",
                             "{prefix}/{year}/{month}"], input=data, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["key"] for line in lines] == [
        "openrouter-traces/2026/09/abcdef0123456789abcdef0123456789-1790000000-0202020202020202.json",
        "openrouter-traces/2026/09/fedcba9876543210fedcba9876543210-1790000005-0303030303030303.json"]
    assert lines[0]["record"]["source"] == "vercel_ai"


def test_decode_protobuf_matches_json(tmp_path):
    request = orjson.loads((CONVENTIONS / "openinference.request.json").read_bytes())
    path = tmp_path / "request.binpb"
    path.write_bytes(to_protobuf(request))
    from_protobuf = orjson.loads(run_cli("decode", str(path)).stdout)
    from_json = orjson.loads(run_cli("decode", str(CONVENTIONS / "openinference.request.json")).stdout)
    assert from_protobuf["ingest"].pop("transport") == "file/protobuf"
    assert from_json["ingest"].pop("transport") == "file/json"
    from_protobuf["ingest"].pop("received_at"), from_json["ingest"].pop("received_at")
    assert from_protobuf == from_json


@pytest.mark.parametrize("content,reason", [
    (b'{"resourceSpans": 3}', "must be an array"),
    (b"\x0a\xff\xff garbage", "not a protobuf"),
    (b'{"resourceSpans": []}\n{"resourceSpans": [}\n', "line 2"),
])
def test_decode_bad_input_exits_1_with_the_reason(tmp_path, content, reason):
    path = tmp_path / "bad"
    path.write_bytes(content)
    result = run_cli("decode", str(path))
    assert result.returncode == 1
    assert reason in result.stderr and "Traceback" not in result.stderr


def test_decode_reports_rejected_spans(tmp_path):
    path = tmp_path / "partly-bad.json"
    path.write_bytes(b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abc","spanId":"0102030405060708"}]}]}]}')
    result = run_cli("decode", str(path))
    assert result.returncode == 0 and result.stdout == ""
    assert "1 span(s) rejected" in result.stderr and "traceId" in result.stderr


def test_json_logs_are_one_object_per_line_without_tokens(moto, s3, tmp_path):
    bridge = S3Bridge(moto, new_bucket(s3), tmp_path / "bridge.log", ["--log-format", "json", "--workers", "2"])
    try:
        assert bridge.post(capture_lines("codex.ndjson")[1]).status_code == 200
        wrong = bridge.post(b"{}", headers={"Authorization": f"Bearer {TOKENS['sdk']}x"})
        assert wrong.status_code == 401
        bridge.wait_until_uploaded()
    finally:
        assert bridge.stop() == 0
    lines = [line for line in bridge.log.splitlines() if line.strip()]
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]) for entry in entries)
    ready = [entry for entry in entries if " ready: " in entry["message"]]
    assert sorted(entry["worker"] for entry in ready) == [0, 1] and ready[0]["level"] == "info"
    assert any(entry["logger"] == "otel_s3_bridge.supervisor" for entry in entries)
    for token in TOKENS.values():
        assert token not in bridge.log


# --- each command shows and reads its own flags ---------------------------------------------------

WHERE = {"--bucket", "--endpoint-url", "--region", "--output-dir", "--prefix", "--path-template",
         "--s3-addressing-style", "--s3-timeout-seconds"}
COMMON = {"--help", "--config", "--help-all"}
OWN_FLAGS = {  # written from the list of what each command is for, not from the code
    ("report",): COMMON | WHERE | {"--by", "--html", "--since", "--from", "--to", "--format"},
    ("query",): COMMON | WHERE | {"--since", "--from", "--to", "--format"},
    ("compact",): COMMON | WHERE | {"--date", "--delete-source"},
    ("check",): COMMON | WHERE | {"--token", "--token-file", "--key-prefix", "--key-bucket", "--s3-put-path",
                                  "--s3-multipart-bytes", "--log-level", "--log-format",
                                  # each key's policy (issue 22): check validates it with the keys
                                  "--keys", "--content", "--redact-pattern", "--redact-phone-region", "--identities",
                                  "--pseudonym-key-file", "--sample",
                                  "--max-spans-per-second", "--max-bytes-per-second",
                                  "--s3-sse", "--s3-sse-kms-key-id", "--s3-storage-class", "--s3-tags"},
    ("health",): COMMON | {"--ready", "--host", "--http-port", "--metrics-port", "--metrics-host",
                           "--tls-cert-file"},
    ("spool", "status"): {"--help", "--config", "--spool-dir", "--spool-max-bytes"},
    ("spool", "retry"): {"--help", "--config", "--spool-dir", "--spool-max-bytes"},
    ("decode",): {"--help", "--config", "--format", "--key", "--prefix", "--path-template", "--prices",
                  "--non-llm-spans"},
    ("send-test-trace",): {"--help", "--config", "--endpoint", "--token", "--prefix", "--path-template"},
}
SERVE_ONLY = {"--tls-key-file", "--tls-client-ca-file", "--spool-dir", "--http-port", "--grpc-port", "--workers",
              "--max-inflight-bytes", "--join-window-seconds", "--layout", "--ack", "--drain-seconds"}


def _flags_in(help_text: str) -> set[str]:
    return set(re.findall(r"^\s+(?:-h, )?(--[a-z][a-z0-9-]*)", help_text, re.M))


@pytest.mark.parametrize("command", sorted(OWN_FLAGS), ids=" ".join)
def test_each_command_lists_only_its_own_flags_on_one_screen(command):
    """`query --help` listed about sixty flags only `serve` uses around the three that matter."""
    every = run_cli(*command, "--help-all", env={"COLUMNS": "100"}).stdout
    assert _flags_in(every) == OWN_FLAGS[command], every
    short = run_cli(*command, "--help", env={"COLUMNS": "100"}).stdout
    assert len(short.splitlines()) <= 50 and max(map(len, short.splitlines())) <= 100, short


def test_serve_groups_its_flags_under_headings_and_keeps_the_advanced_ones_for_help_all():
    short = run_cli("serve", "--help", env={"COLUMNS": "100"}).stdout
    assert len(short.splitlines()) <= 55, short
    headings = re.findall(r"^(\S[^:\n]*):$", short, re.M)
    assert {"where it listens", "where records are stored", "TLS"} <= set(headings), headings
    assert "--token" in short and "--tls-cert-file" in short and "--max-inflight-bytes" not in short
    every = run_cli("serve", "--help-all", env={"COLUMNS": "100"}).stdout
    assert SERVE_ONLY | {"--max-decoded-bytes", "--header-timeout-seconds", "--decode-processes"} <= _flags_in(every)


def test_a_flag_of_another_command_is_refused():
    result = run_cli("query", "SELECT 1", "--tls-cert-file", "cert.pem")
    assert result.returncode == 2 and "unrecognized arguments: --tls-cert-file" in result.stderr


def test_reading_commands_ignore_what_only_serve_uses_in_the_environment_and_the_file(tmp_path):
    """A container's environment (or a shared config file) carries serve's settings; `report` reads
    what it needs. Before, every command validated everything: a TLS file `report` never opens, a
    public --host without a token, refused the report."""
    config = tmp_path / "bridge.toml"
    config.write_text('tls_cert_file = "/nonexistent/cert.pem"\nspool_max_bytes = 1\n')
    env = {"OTEL_S3_BRIDGE_HOST": "0.0.0.0", "OTEL_S3_BRIDGE_CONFIG": str(config),
           "OTEL_S3_BRIDGE_OUTPUT_DIR": str(tmp_path / "out")}
    report = run_cli("report", "--format", "json", cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr
    assert orjson.loads(report.stdout) == [] or "0 record(s)" in report.stderr
    serve = run_cli("serve", cwd=tmp_path, env=env)
    assert serve.returncode == 2
    assert all(flag in serve.stderr for flag in ("--host", "--tls-cert-file", "spool_max_bytes")), serve.stderr
