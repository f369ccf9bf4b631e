"""Where the `batch` layout puts things: a record's Hive partition `{prefix}/lake/dt=YYYY-MM-DD/hour=HH`
(its span start, UTC) and a file's key, a digest of the identities of the records it holds, so that
writing the same records again (a replay, a retried upload, a second `compact`) overwrites the same
object. Pure functions of records as stored (JSON types); no pyarrow here, so that the receivers'
hot path can place records without loading it. Must not do I/O or read clocks.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Iterable
from typing import Any

PARQUET, NDJSON = "parquet", "ndjson"
SUFFIXES = {PARQUET: ".parquet", NDJSON: ".ndjson.gz"}
HOUR_NANOS = 3600 * 10 ** 9
LAST_NANOS = 253402300799 * 10 ** 9  # 9999-12-31T23:59:59Z: later times would not be dates
CONTENT_TYPES = {PARQUET: "application/vnd.apache.parquet", NDJSON: "application/gzip"}  # never Content-Encoding


def _received_nanos(record: dict[str, Any]) -> int:
    received = (record.get("ingest") or {}).get("received_at")
    try:
        moment = datetime.datetime.fromisoformat(received.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1e9)


def partition(record: dict[str, Any]) -> tuple[str, str]:
    """(dt, hour) of the record's span start in UTC; a record without one goes by its receipt."""
    nanos = record.get("start_time_unix_nano")
    if not isinstance(nanos, int) or nanos <= 0:
        nanos = _received_nanos(record)
    return _hour(min(nanos, LAST_NANOS) // HOUR_NANOS)


@functools.lru_cache(maxsize=4096)
def _hour(index: int) -> tuple[str, str]:
    """(dt, hour) of the `index`-th hour since 1970: formatted once, records come in runs of hours."""
    moment = datetime.datetime.fromtimestamp(index * 3600, datetime.UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H")


def partition_dir(prefix: str, record: dict[str, Any]) -> str:
    """`{prefix}/lake/dt=YYYY-MM-DD/hour=HH`: the folder of the record's batch files."""
    dt, hour = partition(record)
    return f"{prefix}/lake/dt={dt}/hour={hour}"


def identity(record: dict[str, Any]) -> str:
    """What makes a record itself: its trace and span (the same LLM call sent again is the same)."""
    return f"{record.get('trace_id')}/{record.get('otel_trace_id')}/{record.get('span_id')}"


def file_key(folder: str, identities: Iterable[str], file_format: str, label: str = "") -> str:
    """`{folder}/{label}{digest}{suffix}`: the digest covers the identities in any order, so the
    same records always get the same key."""
    digest = hashlib.sha256("\n".join(sorted(identities)).encode()).hexdigest()[:32]
    return f"{folder}/{label}{digest}{SUFFIXES[file_format]}"


def by_partition(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by (dt, hour), each group in the order given."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(partition(record), []).append(record)
    return groups
