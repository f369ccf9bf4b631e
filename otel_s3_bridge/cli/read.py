"""`report`, `query` and `compact`: the stored records read back (either layout, from the bucket
or the local directory), answered as a table, CSV, JSON or an HTML page, or rewritten as Parquet.

pyarrow and DuckDB are imported when a command runs, never by `serve`. Must not write to the
store but for `compact`.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from typing import TYPE_CHECKING

from ..config import BridgeConfig, add_config_arguments
from .command import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, add_command

if TYPE_CHECKING:
    from ..lake.read import Store


def register(commands: argparse._SubParsersAction, advanced: bool) -> None:
    for name, text in (("report", "spend, tokens, errors and latency of the stored records, grouped (--by)"),
                       ("query", "run SQL over the stored records (a view named `records`)")):
        reader = add_command(commands, name, text, "SQL " if name == "query" else "")
        asked = reader.add_argument_group("what to answer")
        if name == "query":
            asked.add_argument("sql", metavar="SQL", help='e.g. "SELECT model, sum(cost) FROM records GROUP BY 1"')
        else:
            asked.add_argument("--by", default="model", metavar="COLUMNS",
                               help="group by some of model, provider, customer, session, key, day, hour, "
                                    "comma-separated (default: model)")
            asked.add_argument("--html", metavar="FILE", help="also write a self-contained page of charts to FILE")
        asked.add_argument("--since", default="7d", metavar="AGE",
                           help="the last N days or hours, e.g. 7d, 12h (default 7d)")
        asked.add_argument("--from", dest="from_date", metavar="YYYY-MM-DD", help="first day (UTC), instead of --since")
        asked.add_argument("--to", dest="to_date", metavar="YYYY-MM-DD",
                           help="last day (UTC), included (default: today)")
        asked.add_argument("--format", dest="output_format", choices=("table", "csv", "json"), default="table",
                           metavar="table|csv|json", help="how to print the answer (default: table)")
        add_config_arguments(reader, name, advanced=advanced)
        reader.set_defaults(run=run_read)

    compact = add_command(
        commands, "compact", "rewrite a day of trace-layout objects as the batch layout's Parquet files (idempotent)",
        "--date YYYY-MM-DD ", description="Rewrite a day of trace-layout objects as the batch layout's Parquet "
        "files, one per hour. Safe to run again.")
    asked = compact.add_argument_group("what to compact")
    asked.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the day (UTC) to compact")
    asked.add_argument("--delete-source", action="store_true",
                       help="delete the day's objects once every Parquet file written has been read back and checked")
    add_config_arguments(compact, "compact", advanced=advanced)
    compact.set_defaults(run=run_compact)


def store_of(config: BridgeConfig) -> Store:
    """Where `config` says the records lie, for the lake's readers."""
    from ..lake.read import Store

    return Store(prefix=config.prefix, path_template=str(config.path_template), bucket=config.bucket,
                 local_root=config.output_dir, region=config.region, endpoint_url=config.endpoint_url,
                 virtual_addressing=config.addressing_style == "virtual", timeout_seconds=config.s3_timeout_seconds)


def run_read(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    """`report` and `query`: read the records of the days asked for, run the SQL, print the answer."""
    import duckdb

    from ..lake.read import Window, read_records
    from ..lake.report import REPORT_COLUMNS, as_csv, as_json, as_table, parse_by, parse_since, report_sql, run

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
        table, layout = read_records(store_of(config), Window(first, last), progress,
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
        from ..lake.report_html import PAGE_QUERIES, render

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


def run_compact(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    from ..lake.compact import CompactionFailed, compact_day

    try:
        day = datetime.date.fromisoformat(args.date)
    except ValueError:
        print(f"otel-s3-bridge compact: --date takes YYYY-MM-DD; got {args.date!r}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        done = compact_day(store_of(config), day, delete_source=args.delete_source,
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
