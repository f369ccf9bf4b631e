"""Command line: `serve`, `check`, `health`, `report`, `query`, `compact`, `spool`, `decode` and
`send-test-trace`.
Turns config errors and sink diagnoses into one plain message and an exit code; never prints a
traceback for a user error or a token.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from . import __version__, logs
from .app import Bridge
from .config import BridgeConfig, add_config_arguments, load_config
from .decode.records import decode
from .errors import ConfigError, InvalidRequest, SinkError
from .lake.keys import object_key
from .decode.otlp import ParsedRequest, parse_json, parse_protobuf
from .enrich.pricing import PriceBook, price_record, read_price_file
from .sample import new_generation_id, sample_delivery
from .deliver.sink import build_sink
from .deliver.spool_commands import adopt_orphan_spools, retry_quarantined, stats
from .supervisor import supervise, worker_index

log = logging.getLogger("otel_s3_bridge")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-s3-bridge", description=(
        "Receive OTLP traces (HTTP JSON/protobuf and gRPC) and store LLM trace records in S3."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the bridge (default: loopback, local directory sink)")
    add_config_arguments(serve)
    check = commands.add_parser("check", help="write and delete a probe object with the configured settings")
    add_config_arguments(check)

    health = commands.add_parser(
        "health", help="ask the bridge running here with this configuration whether it is alive (exit 0 or 1; "
        "for a container HEALTHCHECK)")
    health.add_argument("--ready", action="store_true",
                        help="ask /readyz instead (not ready: the spool is full, or the bridge is stopping)")
    add_config_arguments(health)

    for name, text in (("report", "spend, tokens, errors and latency of the stored records, grouped (--by)"),
                       ("query", "run SQL over the stored records (a view named `records`)")):
        reader = commands.add_parser(name, help=text)
        if name == "query":
            reader.add_argument("sql", metavar="SQL", help='e.g. "SELECT model, sum(cost) FROM records GROUP BY 1"')
        else:
            reader.add_argument("--by", default="model", help="group by some of model, provider, customer, session, "
                                "key, day, hour, comma-separated (default: model)")
            reader.add_argument("--html", metavar="FILE", help="also write a self-contained page of charts to FILE")
        reader.add_argument("--since", default="7d", help="the last N days or hours, e.g. 7d, 12h (default 7d)")
        reader.add_argument("--from", dest="from_date", metavar="YYYY-MM-DD",
                            help="first day (UTC), instead of --since")
        reader.add_argument("--to", dest="to_date", metavar="YYYY-MM-DD",
                            help="last day (UTC), included (default: today)")
        reader.add_argument("--format", dest="output_format", choices=("table", "csv", "json"), default="table")
        add_config_arguments(reader)

    compact = commands.add_parser(
        "compact", help="rewrite a day of trace-layout objects as the batch layout's Parquet files (idempotent)")
    compact.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the day (UTC) to compact")
    compact.add_argument("--delete-source", action="store_true",
                         help="delete the day's objects once every Parquet file written has been read back and checked")
    add_config_arguments(compact)

    send = commands.add_parser("send-test-trace", help="send an OpenRouter-shaped sample delivery")
    send.add_argument("--endpoint", required=True, metavar="URL", help="e.g. http://127.0.0.1:4318/v1/traces")
    send.add_argument("--token", metavar="TOKEN", help="Bearer token to send")
    send.add_argument("--prefix", help="the bridge's --prefix, to print the expected key")
    send.add_argument("--path-template", dest="path_template", metavar="TEMPLATE",
                      help="the bridge's --path-template, to print the expected key")
    spool = commands.add_parser("spool", help="inspect the spool, or retry what is quarantined")
    spool_commands = spool.add_subparsers(dest="spool_command", metavar="ACTION", required=True)
    for action, text in (("status", "what is waiting for upload and what is quarantined"),
                         ("retry", "move quarantined records back into the spool")):
        add_config_arguments(spool_commands.add_parser(action, help=text))

    decode_command = commands.add_parser(
        "decode", help="print the records the bridge makes of an export request, as NDJSON (no server needed)")
    decode_command.add_argument("file", nargs="?", default="-",
                                help="OTLP/JSON or OTLP/protobuf export request, or NDJSON of them; - for stdin")
    decode_command.add_argument("--format", choices=("auto", "json", "protobuf"), default="auto",
                                help="input encoding (auto: JSON when it starts with '{', else protobuf)")
    decode_command.add_argument("--key", action="store_true",
                                help='print {"key": ..., "record": ...} with the object key of each record')
    decode_command.add_argument("--prefix", help="as for serve, for --key")
    decode_command.add_argument("--path-template", dest="path_template", metavar="TEMPLATE",
                                help="as for serve, for --key")
    decode_command.add_argument("--non-llm-spans", dest="non_llm_spans", choices=("keep", "drop"),
                                help="as for serve")
    return parser


def _setup_logging(config: BridgeConfig) -> None:
    index = worker_index()
    logs.setup(config.log_level, f" worker-{index}" if index is not None else "",
               secrets=[token.token for token in config.tokens], log_format=config.log_format,
               fields={"worker": index} if index is not None else None)


def _load(args: argparse.Namespace) -> BridgeConfig | None:
    # send-test-trace's --token is the client's token, not a bridge key.
    flags = {name: value for name, value in vars(args).items() if not (args.command == "send-test-trace"
                                                                       and name == "token")}
    try:
        return load_config(flags)
    except ConfigError as error:
        print("otel-s3-bridge: invalid configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def _ready_message(config: BridgeConfig) -> str:
    scheme = "https" if config.tls else "http"
    listening = f"OTLP/HTTP on {scheme}://{config.host}:{config.http_port}/v1/traces"
    if config.grpc_port:
        listening += f", OTLP/gRPC{' over TLS' if config.tls else ''} on {config.host}:{config.grpc_port}"
    if config.tls_client_ca_file:
        listening += " (client certificates required)"
    if config.metrics_port:
        listening += f", metrics on http://{config.metrics_address}:{config.metrics_port}/metrics"
    delivery = (f"acknowledging once fsynced in the spool {config.spool_dir}" if config.ack == "spool"
                else "acknowledging once uploaded")
    names = [token.name for token in config.tokens]
    auth = (f"token auth (Bearer) with key(s) {', '.join(names) or '(none yet)'}"
            + (f" and the token file {config.token_file}" if config.token_file else "")
            if names or config.token_file else "no auth (loopback only)")
    where = config.destination
    if not config.uses_s3:
        where += " (no --bucket set; objects get exactly the keys they would get in S3)"
    layouts = []
    if config.writes_objects:
        layouts.append(f"keys {str(config.path_template).replace('{prefix}', config.prefix)}/{{traceId}}-{{timestamp}}"
                       ".json")
    if config.writes_batches:
        layouts.append(f"{config.batch_format} files {config.prefix}/lake/dt=YYYY-MM-DD/hour=HH/ (at most "
                       f"{config.batch_max_records:,} records or {config.batch_max_age_seconds}s each)")
    return f"otel-s3-bridge {__version__} ready: {listening}; {auth}; {delivery}; writing to {where}, " \
           + " and ".join(layouts)


async def _serve(config: BridgeConfig, *, share_ports: bool = False) -> int:
    # Records are trees of dicts and lists without reference cycles: reference counting frees
    # them. The cyclic collector's full passes over every spooled entry's bookkeeping cost more
    # CPU than anything else under load (profiled with py-spy), so they run far less often.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    stop = asyncio.Event()
    stopping_since = [0.0]

    def on_signal() -> None:
        if stop.is_set() and worker_index() is not None and time.monotonic() - stopping_since[0] < 2:
            return  # a worker's copy of the same stop: the supervisor's forward, and a signal to its cgroup
        if stop.is_set():  # a second signal: leave now; everything acknowledged is in the spool
            log.warning("second signal: exiting at once; the spool is replayed at the next start")
            logging.shutdown()
            os._exit(EXIT_FAILED)
        stopping_since[0] = time.monotonic()
        stop.set()

    # Installed before start-up, so that a SIGTERM arriving while the bridge starts stops it cleanly.
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(logs.quiet_exception_handler())
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    bridge = Bridge(config, share_ports=share_ports)
    try:
        await bridge.start()
    except SinkError as error:
        log.error("refusing to start: the check of %s failed: %s", config.destination, error.message)
        return EXIT_FAILED
    except OSError as error:
        log.error("refusing to start: %s", error)
        return EXIT_FAILED
    loop = type(asyncio.get_running_loop()).__module__.split(".", 1)[0]
    log.info("%s; event loop: %s", _ready_message(config), "uvloop" if loop == "uvloop" else "asyncio")
    supervisor = asyncio.create_task(_follow_supervisor(stop)) if worker_index() is not None else None
    await stop.wait()
    if supervisor is not None:
        supervisor.cancel()
    log.info("stopping: no new exports, finishing in-flight ones")
    await bridge.stop(drain_seconds=config.drain_seconds)
    log.info("stopped")
    return EXIT_OK


async def _follow_supervisor(stop: asyncio.Event) -> None:
    """A worker (in a session of its own) stops, draining, once its supervisor is gone (a
    `kill -9`, an OOM kill): no worker is left behind serving on its own."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("the supervisor (pid %d) is gone: stopping this worker", parent)
    stop.set()


async def _check(config: BridgeConfig) -> int:
    sink = build_sink(config)
    await sink.open()
    try:
        verified = await sink.check()
    except SinkError as error:
        print(f"check failed for {config.destination}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await sink.aclose()
    print(f"check passed for {config.destination}:")
    for line in verified:
        print(f"  - {line}")
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


def _decode(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
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


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
    raise AssertionError("unreachable")


def _age(unix_nano: int | None) -> str:
    if unix_nano is None:
        return ""
    seconds = max(0, int((time.time_ns() - unix_nano) / 1e9))
    return f", oldest {seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s ago"


def _spool(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    base = Path(config.spool_dir)
    # With --workers N every worker has its own spool below the base directory.
    roots = [root for root in (base, *sorted(base.glob("worker-*"))) if (root / "segments").is_dir()] or [base]
    for root in roots:
        if args.spool_command == "retry":
            moved = retry_quarantined(str(root))
            print(f"moved {moved} quarantined record(s) back into {root / 'segments'}; a running bridge uploads "
                  "them within seconds, a stopped one at its next start")
        else:
            _print_spool_status(root, config.spool_max_bytes)
    return EXIT_OK


def _print_spool_status(root: Path, max_bytes: int) -> None:
    waiting, quarantined = stats(root / "segments"), stats(root / "quarantine")
    print(f"spool {root.resolve()}")
    print(f"  waiting for upload: {waiting.entries} record(s), {_size(waiting.bytes)}{_age(waiting.oldest_unix_nano)}")
    print(f"  quarantined:        {quarantined.entries} record(s), {_size(quarantined.bytes)}"
          f"{_age(quarantined.oldest_unix_nano)}")
    print(f"  budget:             {_size(waiting.bytes + quarantined.bytes)} of {_size(max_bytes)}")
    reasons = root / "quarantine" / "reasons.log"
    if quarantined.entries and reasons.exists():
        print("  quarantine causes:")
        for line in reasons.read_text().splitlines()[-10:]:
            print(f"    {line}")
    for damaged in waiting.damaged_files + quarantined.damaged_files:
        print(f"  damaged (the readable part is uploaded): {damaged}")


def _health(config: BridgeConfig, ready: bool) -> int:
    """GET /healthz (`ready`: /readyz) on the metrics port (plain HTTP), else on the OTLP/HTTP port.
    HTTPS under TLS is not verified: this is the bridge's own loopback answer, and its certificate
    names the public host."""
    on_metrics_port = bool(config.metrics_port)
    host = config.metrics_address if on_metrics_port else config.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    context = None
    if on_metrics_port:
        url = f"http://{host}:{config.metrics_port}/{'readyz' if ready else 'healthz'}"
    else:
        url = f"{'https' if config.tls else 'http'}://{host}:{config.http_port}/{'readyz' if ready else 'healthz'}"
        if config.tls:
            import ssl

            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            healthy = response.status == 200
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read(2000).decode(errors='replace')}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{url}: {'ok' if healthy else 'not ok'}")
    return EXIT_OK if healthy else EXIT_FAILED


def _read(args: argparse.Namespace, config: BridgeConfig) -> int:
    """`report` and `query`: read the records of the days asked for, run the SQL, print the answer.
    (pyarrow and DuckDB are imported here only: `serve` never loads them.)"""
    import duckdb

    from .lake.read import Window, read_records
    from .lake.report import REPORT_COLUMNS, as_csv, as_json, as_table, parse_by, parse_since, report_sql, run

    now = datetime.datetime.now(datetime.UTC)
    try:
        by = parse_by(args.by) if args.command == "report" else None
        last = datetime.date.fromisoformat(args.to_date) if args.to_date else now.date()
        first = datetime.date.fromisoformat(args.from_date) if args.from_date else parse_since(args.since, now)
    except ValueError as error:
        print(f"otel-s3-bridge {args.command}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if first > last:
        print(f"otel-s3-bridge {args.command}: --from {first} is after --to {last}", file=sys.stderr)
        return EXIT_CONFIG
    progress = (lambda line: print(f"  {line}", file=sys.stderr)) if sys.stderr.isatty() else (lambda line: None)
    try:
        table, layout = read_records(config, Window(first, last), progress,
                                     columns=REPORT_COLUMNS if by is not None else None)
    except OSError as error:
        print(f"cannot read {config.destination}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{table.num_rows} record(s) from {first} to {last} ({layout} layout, {config.destination})",
          file=sys.stderr)
    try:
        columns, rows = run(table, report_sql(by) if by is not None else args.sql)
    except duckdb.Error as error:
        print(f"otel-s3-bridge {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "html", None):
        from .lake.report_html import PAGE_QUERIES, render

        answers = {name: run(table, sql)[1] for name, sql in PAGE_QUERIES.items()}
        page = render(answers, title="LLM calls: spend, tokens, latency, errors",
                      subtitle=f"{first} to {last} (UTC) · {config.destination}")
        try:
            with open(args.html, "w", encoding="utf-8") as file:
                file.write(page)
        except OSError as error:
            print(f"cannot write {args.html}: {error.strerror}", file=sys.stderr)
            return EXIT_FAILED
        print(f"wrote {args.html}", file=sys.stderr)
    if args.output_format == "json":
        print(as_json(columns, rows, by))
    elif args.output_format == "csv":
        sys.stdout.write(as_csv(columns, rows))
    else:
        sys.stdout.write(as_table(columns, rows))
    return EXIT_OK


def _compact(args: argparse.Namespace, config: BridgeConfig) -> int:
    from .lake.compact import CompactionFailed, compact_day

    try:
        day = datetime.date.fromisoformat(args.date)
    except ValueError:
        print(f"otel-s3-bridge compact: --date takes YYYY-MM-DD; got {args.date!r}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        done = compact_day(config, day, delete_source=args.delete_source,
                           progress=lambda line: print(f"  {line}", file=sys.stderr))
    except (OSError, CompactionFailed) as error:
        print(f"compact failed for {config.destination}, {day} (nothing was deleted): {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{day}: {done.objects} object(s), {done.records} record(s) -> {len(done.files)} Parquet file(s)"
          + (f" ({done.in_lake} object(s) already in the bridge's batch files)" if done.in_lake else "")
          + (f"; {done.deleted} object(s) deleted" if args.delete_source else ""))
    for key in done.files:
        print(f"  {key}")
    return EXIT_OK


def _send_test_trace(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
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


def _run(config: BridgeConfig, coroutine: Any) -> Any:
    """Run `serve` on uvloop's event loop when `--event-loop` asks for it (or, with `auto`, when
    uvloop is installed: `pip install 'otel-s3-bridge[uvloop]'`), else on asyncio's."""
    if config.event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            uvloop = None
        if uvloop is not None:
            return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        args = _parser().parse_args(["serve", *(argv or sys.argv[1:])])
    if args.command == "send-test-trace":
        return _send_test_trace(args)
    if args.command == "decode":
        return _decode(args)
    if args.command == "spool":
        return _spool(args)
    config = _load(args)
    if config is None:
        return EXIT_CONFIG
    if args.command == "health":
        return _health(config, args.ready)
    if args.command in ("report", "query"):
        return _read(args, config)
    if args.command == "compact":
        return _compact(args, config)
    _setup_logging(config)
    if args.command == "check":
        return asyncio.run(_check(config))
    index = worker_index()
    if config.workers > 1 and index is None:
        return supervise(config, argv if argv is not None else sys.argv[1:])
    if index is not None:
        config = config.for_worker(index)
    elif config.ack == "spool":
        moved = adopt_orphan_spools(str(Path(config.spool_dir)), config.spool_dir)
        if moved:
            log.info("moved %d spool file(s) left by former --workers processes into %s", moved, config.spool_dir)
    try:
        return _run(config, _serve(config, share_ports=index is not None))
    except KeyboardInterrupt:
        return EXIT_OK
