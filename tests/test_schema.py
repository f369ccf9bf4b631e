"""`proto/otel_s3_bridge/v1/trace_record.proto` is the record schema: every emitted record parses
against it, and its field list and the decoder's cannot drift apart."""

from __future__ import annotations

import importlib.resources
import importlib.util

import orjson
import pytest
from google.protobuf import json_format
from grpc_tools import protoc

from conftest import ROOT, capture_lines
from otel_s3_bridge.decode.records import decode
from otel_s3_bridge.decode.otlp import parse_json
from otel_s3_bridge.lake.record import RECORD_FIELDS
from otlp_builders import request, span


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema")
    include = importlib.resources.files("grpc_tools") / "_proto"
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}",
                        "otel_s3_bridge/v1/trace_record.proto"]) == 0
    # Loaded by path: the generated package name clashes with the bridge's own package.
    spec = importlib.util.spec_from_file_location("trace_record_pb2", out / "otel_s3_bridge/v1/trace_record_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records() -> list[dict]:
    lines = capture_lines("claude-code.ndjson")[:2] + capture_lines("codex.ndjson")[:1]
    lines.append((ROOT / "tests/data/openrouter-captures/codex-error-span.json").read_bytes())
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    root = span(trace, "0000000000000001", "GET /", {"http.route": "/"})
    lines.append(orjson.dumps(request(root, span(trace, "0000000000000002", "chat", {
        "gen_ai.request.model": "m", "gen_ai.input.messages": '[{"role":"user","parts":[]}]'}, parent="0000000000000001"))))
    records = []
    for line in lines:
        records += decode(parse_json(line).spans, key_name=None, transport="http/json",
                          received_at_unix_nano=1795000000000000000).records
    return records


def test_field_lists_match(schema):
    assert tuple(f.name for f in schema.TraceRecord.DESCRIPTOR.fields) == RECORD_FIELDS
    record = _records()[0]
    assert set(record["observations"][0]) == {f.name for f in schema.Observation.DESCRIPTOR.fields}
    assert set(record["ingest"]) == {f.name for f in schema.Ingest.DESCRIPTOR.fields}
    assert set(record["completion"]) == {f.name for f in schema.Completion.DESCRIPTOR.fields}
    assert set(record["scope"]) == {f.name for f in schema.Scope.DESCRIPTOR.fields}


def test_every_field_has_a_comment():
    text = (ROOT / "proto/otel_s3_bridge/v1/trace_record.proto").read_text()
    body = text[text.index("message TraceRecord {"):text.index("message Completion")]
    lines = body.splitlines()
    for number, line in enumerate(lines):
        if line.strip().endswith(";") and "=" in line:
            assert lines[number - 1].strip().startswith("//"), f"no comment above: {line.strip()}"


@pytest.mark.parametrize("record", _records(), ids=lambda record: record["trace_id"])
def test_emitted_records_parse_against_the_schema(schema, record):
    message = json_format.Parse(orjson.dumps(record), schema.TraceRecord(), ignore_unknown_fields=False)
    assert message.schema == "otel-s3-bridge.trace.v1"
    assert message.trace_id == record["trace_id"]
