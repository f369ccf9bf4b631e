"""Decode alone, in-process: OTLP/JSON (orjson) and OTLP/protobuf to spans to records, against the
naive baseline of protobuf's `json_format` for the same JSON. Prints JSON with spans/s and ratios."""

from __future__ import annotations

import json
import time

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.payloads import batch_template, openrouter_delivery, to_json, to_protobuf
from otel_s3_bridge.decode.records import decode
from otel_s3_bridge.decode.otlp import parse_json, parse_protobuf

START = 1790000000000000000


def _hex_to_base64_json(document: dict) -> bytes:
    """What a naive receiver must do before json_format can read OTLP/JSON's hex ids."""
    return json.dumps(json.loads(to_protobuf_json(document))).encode()


def to_protobuf_json(document: dict) -> str:
    return json_format.MessageToJson(ExportTraceServiceRequest.FromString(to_protobuf(document)))


def _rate(function, spans: int, seconds: float = 2.0) -> float:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function()
        count += 1
    return count * spans / (time.perf_counter() - started)


def measure(name: str, document: dict, spans: int) -> dict:
    body, protobuf = to_json(document), to_protobuf(document)
    naive_body = _hex_to_base64_json(document)

    def records(parsed) -> None:
        decode(parsed.spans, key_name="k", transport="t", received_at_unix_nano=START)

    results = {
        "json_parse": _rate(lambda: parse_json(body), spans),
        "json_format_parse": _rate(lambda: json_format.Parse(naive_body, ExportTraceServiceRequest(),
                                                             ignore_unknown_fields=True), spans),
        "protobuf_parse": _rate(lambda: parse_protobuf(protobuf), spans),
        "json_to_records": _rate(lambda: records(parse_json(body)), spans),
        "json_format_to_records": _rate(lambda: records(parse_protobuf(json_format.Parse(
            naive_body, ExportTraceServiceRequest(), ignore_unknown_fields=True).SerializeToString())), spans),
        "protobuf_to_records": _rate(lambda: records(parse_protobuf(protobuf)), spans),
    }
    results["parse_ratio"] = results["json_parse"] / results["json_format_parse"]
    results["records_ratio"] = results["json_to_records"] / results["json_format_to_records"]
    return {"payload": name, "spans": spans, "json_bytes": len(body), **results}


def main() -> None:
    print(json.dumps([
        measure("OpenRouter delivery (3 spans, ~10 KB prompt+completion)",
                openrouter_delivery("gen-1790000000-abcdefghijabcdefghij", START), 3),
        measure("GenAI batch of 100 spans", batch_template(100, START), 100),
    ]))


if __name__ == "__main__":
    main()
