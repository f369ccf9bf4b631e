"""`report` and `query`: SQL over the records (`lake.read`) in DuckDB, and the answers as a table
readable at 80 columns, CSV or JSON.

`report_sql` builds the grouped report: the group columns (`--by`), then calls, errors, tokens,
cost (and how much of it is estimated from tokens rather than reported by the sender) and latency
percentiles, most expensive first. `query` runs the user's SQL over a `records`
view. DuckDB queries the Arrow table in place; no extension is loaded and nothing is fetched.
Must not write to the store.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from collections.abc import Sequence
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from . import numbers

GROUPS = {
    "model": "model",
    "provider": "provider",
    "customer": "customer_id",
    "session": "session_id",
    "key": "ingest_key_name",
    "day": "strftime(timestamp AT TIME ZONE 'UTC', '%Y-%m-%d')",
    "hour": "strftime(timestamp AT TIME ZONE 'UTC', '%Y-%m-%d %H:00')",
}
MEASURES = (
    ("calls", "count(*)"),
    ("errors", "count(*) FILTER (WHERE status = 'error')"),
    ("input_tokens", "sum(input_tokens)"),
    ("output_tokens", "sum(output_tokens)"),
    ("total_tokens", "sum(total_tokens)"),
    ("cost", "sum(cost)"),
    ("estimated_cost", "sum(cost) FILTER (WHERE cost_source = 'estimated')"),
    ("latency_p50_ms", "quantile_cont(duration_ms, 0.5)"),
    ("latency_p95_ms", "quantile_cont(duration_ms, 0.95)"),
)
# The columns `report` (and its HTML page) reads: the rest (prompts, completions) is left on disk.
REPORT_COLUMNS = ["timestamp", "model", "provider", "customer_id", "session_id", "ingest_key_name", "status",
                  "input_tokens", "output_tokens", "total_tokens", "cost", "cost_source", "duration_ms"]
SINCE = re.compile(r"^(\d+)([dh])$")
TABLE_WIDTH = 80


def parse_by(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"--by takes a comma-separated list of {', '.join(GROUPS)} (each once); got {text!r}")
    return names


def parse_since(text: str, now: datetime.datetime) -> datetime.date:
    match = SINCE.match(text.strip())
    if not match:
        raise ValueError(f"--since takes a number of days or hours, like 7d or 12h; got {text!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return (now - datetime.timedelta(days=amount) if unit == "d" else now - datetime.timedelta(hours=amount)).date()


def report_sql(by: Sequence[str]) -> str:
    groups = [f"{GROUPS[name]} AS \"{name}\"" for name in by]
    measures = [f"{expression} AS {name}" for name, expression in MEASURES]
    group_by = f" GROUP BY {', '.join(str(n) for n in range(1, len(by) + 1))}" if by else ""
    return (f"SELECT {', '.join(groups + measures)} FROM records{group_by} "
            f"ORDER BY cost DESC NULLS LAST, calls DESC")


def run(table: pa.Table, sql: str) -> tuple[list[str], list[tuple]]:
    connection = duckdb.connect()
    connection.register("records", table)
    result = connection.execute(sql)
    return [column[0] for column in result.description], result.fetchall()


def _cell(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, float):
        return float(f"{value:.12g}")  # the sum's float noise gone, a cost of a few millionths of a dollar kept
    return value


def as_json(columns: list[str], rows: list[tuple], by: Sequence[str] | None = None) -> str:
    document: dict[str, Any] = {"rows": [{c: _cell(v) for c, v in zip(columns, row)} for row in rows]}
    if by is not None:
        document = {"by": list(by), **document}
    return orjson.dumps(document, default=str).decode()


def as_csv(columns: list[str], rows: list[tuple]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(value) for value in row] for row in rows])
    return out.getvalue()


def column_format(column: str, values: list[Any]) -> numbers.Format | None:
    """One format for every number of a column, by what it measures (by its name: `report`'s own
    columns, or a `query`'s aliases ending in _ms, tokens, cost); None for a column of text."""
    if not all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)) for value in values):
        return None
    if column == "cost" or column.endswith("_cost") or column.startswith("cost_"):
        return numbers.money(values)
    if column.endswith("_ms"):
        return numbers.whole(values)
    if column.endswith("tokens"):
        return numbers.tokens(values)
    if all(value is None or isinstance(value, int) for value in values):
        return numbers.whole(values)
    return numbers.decimal(values)


HEADINGS = {"errors": "err", "input_tokens": "in tok", "output_tokens": "out tok", "total_tokens": "tokens",
            "cost": "cost $", "estimated_cost": "est. $", "latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms"}
UNCUT = {"day", "hour"}  # fixed-width values: never cut


def as_table(columns: list[str], rows: list[tuple], width: int = TABLE_WIDTH) -> str:
    """Aligned columns one space apart: numbers right, one format per column (`column_format`),
    text left and cut with an ellipsis, widest first, until the line fits `width`."""
    headings = [HEADINGS.get(column, column) for column in columns]
    formats = [column_format(column, [row[i] for row in rows]) if rows else None
               for i, column in enumerate(columns)]
    numeric = [fmt is not None for fmt in formats]
    cells = [[formats[i](value) if formats[i] else ("-" if value is None else str(value))
              for i, value in enumerate(row)] for row in rows]
    widths = [max([len(headings[i])] + [len(row[i]) for row in cells]) for i in range(len(columns))]
    cuttable = [i for i in range(len(columns)) if not numeric[i] and columns[i] not in UNCUT]
    while sum(widths) + len(widths) - 1 > width and cuttable:
        widest = max(cuttable, key=lambda i: widths[i])
        if widths[widest] <= 6:
            break
        widths[widest] -= 1

    def fit(text: str, i: int) -> str:
        if len(text) > widths[i]:
            text = text[: widths[i] - 1] + "…"
        return text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i])

    lines = [" ".join(fit(heading, i) for i, heading in enumerate(headings)).rstrip()]
    lines.append(" ".join("-" * w for w in widths))
    lines += [" ".join(fit(cell, i) for i, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"
