"""`decode` and `send-test-trace`: what the bridge makes of a request, without a server (the
records of an export file, and their object keys) and with one (a sample OpenRouter delivery sent,
and the key its record gets).

Must not write to the store.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson

from ..config import BridgeConfig, add_config_arguments
from ..decode.otlp import ParsedRequest, parse_json, parse_protobuf
from ..decode.records import decode
from ..enrich.pricing import PriceBook, price_record, read_price_file
from ..errors import InvalidRequest
from ..lake.keys import object_key
from ..sample import new_generation_id, sample_delivery
from .command import EXIT_FAILED, EXIT_OK, add_command


def register(commands: argparse._SubParsersAction, advanced: bool) -> None:
    decode_command = add_command(
        commands, "decode", "print the records the bridge makes of an export request, as NDJSON (no server needed)",
        "[FILE] ", description="Print the records the bridge makes of an OTLP export request, as NDJSON.")
    asked = decode_command.add_argument_group("what to decode")
    asked.add_argument("file", nargs="?", default="-",
                       help="OTLP/JSON or OTLP/protobuf export request, or NDJSON of them; - for stdin")
    asked.add_argument("--format", choices=("auto", "json", "protobuf"), default="auto",
                       help="input encoding (auto: JSON when it starts with '{', else protobuf)")
    asked.add_argument("--key", action="store_true",
                       help='print {"key": ..., "record": ...} with the object key of each record')
    add_config_arguments(decode_command, "decode", advanced=advanced)
    decode_command.set_defaults(run=run_decode)

    send = add_command(commands, "send-test-trace", "send an OpenRouter-shaped sample delivery", "--endpoint URL ",
                       description="Send an OpenRouter-shaped sample delivery and print the key its record gets.")
    asked = send.add_argument_group("where to send it")
    asked.add_argument("--endpoint", required=True, metavar="URL", help="e.g. http://127.0.0.1:4318/v1/traces")
    asked.add_argument("--token", metavar="TOKEN", help="Bearer token to send")
    add_config_arguments(send, "send-test-trace", advanced=advanced)
    send.set_defaults(run=run_send_test_trace)


def run_decode(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
    except OSError as error:
        print(f"cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return EXIT_FAILED
    now = time.time_ns()
    out = sys.stdout.buffer
    try:
        prices = read_price_file(config.prices) if config.prices else PriceBook()
        for where, encoding, parsed in _export_requests(data, args.format):
            decoded = decode(parsed.spans, key_name=None, transport=f"file/{encoding}", received_at_unix_nano=now,
                             non_llm_spans=config.non_llm_spans)
            if parsed.first_problem is not None:
                print(f"{where}: {parsed.rejected_spans} span(s) rejected; first problem: {parsed.first_problem}",
                      file=sys.stderr)
            for warning in parsed.warnings:
                print(f"{where}: {warning}", file=sys.stderr)
            if decoded.dropped_spans:
                print(f"{where}: {decoded.dropped_spans} span(s) without LLM attributes dropped", file=sys.stderr)
            for record in decoded.records:
                price_record(record, prices, now)
                if args.key:
                    key = object_key(config.path_template, record, prefix=config.prefix, fallback_unix_nano=now)
                    out.write(orjson.dumps({"key": key, "record": record}) + b"\n")
                else:
                    out.write(orjson.dumps(record) + b"\n")
    except InvalidRequest as error:
        out.flush()
        print(f"cannot decode {args.file}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `decode … | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _export_requests(data: bytes, encoding: str) -> Iterator[tuple[str, str, ParsedRequest]]:
    """(where, encoding, parsed) for one request, or for each line of NDJSON."""
    if encoding == "protobuf" or (encoding == "auto" and data.lstrip()[:1] not in (b"{", b"")):
        yield "input", "protobuf", parse_protobuf(data)
        return
    try:
        yield "input", "json", parse_json(data)
    except InvalidRequest:
        lines = data.splitlines()
        if sum(1 for line in lines if line.strip()) < 2:
            raise
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield f"line {number}", "json", parse_json(line)
                except InvalidRequest as error:
                    raise InvalidRequest(f"line {number}: {error.message}") from None


def run_send_test_trace(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    now = time.time_ns()
    generation_id = new_generation_id(now // 1_000_000_000)
    body = orjson.dumps(sample_delivery(generation_id, now))
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    request = urllib.request.Request(args.endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        print(f"cannot reach {args.endpoint}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        print(f"{args.endpoint} answered {status}: {answer.decode(errors='replace')}", file=sys.stderr)
        return EXIT_FAILED
    record = decode(parse_json(body).spans, key_name=None, transport="http/json",
                    received_at_unix_nano=now).records[0]
    key = object_key(config.path_template, record, prefix=config.prefix, fallback_unix_nano=now)
    print(f"sent generation {generation_id}; {args.endpoint} answered 200")
    print(f"expected key: {key}")
    if "keyName" in str(config.path_template):
        print("  ({keyName} is the name of the bridge key that accepted the token; shown here as 'anonymous')")
    return EXIT_OK
