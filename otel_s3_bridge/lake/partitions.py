"""Where the `batch` layout puts things: a record's Hive partition `{prefix}/lake/dt=YYYY-MM-DD/hour=HH`
(its span start, UTC) and a file's key, a digest of the identities of the records it holds, so that
writing the same records again (a replay, a retried upload, a second `compact`) overwrites the same
object. Pure functions of records as stored (JSON types); no pyarrow here, so that the receivers'
hot path can place records without loading it. Must not do I/O or read clocks.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable
from typing import Any, Final

from .. import memo
from ..values import unix_nanos

PARQUET: Final = "parquet"
NDJSON: Final = "ndjson"
SUFFIXES: Final = {PARQUET: ".parquet", NDJSON: ".ndjson.gz"}
HOUR_NANOS: Final = 3600 * 10 ** 9
LAST_NANOS: Final = 253402300799 * 10 ** 9  # 9999-12-31T23:59:59Z: later times would not be dates
CONTENT_TYPES: Final = {PARQUET: "application/vnd.apache.parquet", NDJSON: "application/gzip"}  # never Content-Encoding
# The hour index since 1970 -> (dt, hour), and (prefix, hour index) -> the folder: records come in
# runs of hours, and every record of the batch layout is placed (`memo`: bounded).
_HOURS: Final[dict[int, tuple[str, str]]] = {}
_FOLDERS: Final[dict[tuple[str, int], str]] = {}
REMEMBERED: Final = 4096


def _received_nanos(record: dict[str, Any]) -> int:
    return unix_nanos((record.get("ingest") or {}).get("received_at")) or 0


def _hour_index(record: dict[str, Any]) -> int:
    """The hour since 1970 of the record's span start in UTC; a record without one goes by its receipt."""
    nanos = record.get("start_time_unix_nano")
    if not isinstance(nanos, int) or nanos <= 0:
        nanos = _received_nanos(record)
    return min(nanos, LAST_NANOS) // HOUR_NANOS


def partition(record: dict[str, Any]) -> tuple[str, str]:
    """(dt, hour) of the record's span start in UTC; a record without one goes by its receipt."""
    return _hour(_hour_index(record))


def _hour(index: int) -> tuple[str, str]:
    """(dt, hour) of the `index`-th hour since 1970."""
    found = _HOURS.get(index)
    if found is None:
        moment = datetime.datetime.fromtimestamp(index * 3600, datetime.UTC)
        found = memo.remember(_HOURS, index, (moment.strftime("%Y-%m-%d"), moment.strftime("%H")), REMEMBERED)
    return found


def partition_dir(prefix: str, record: dict[str, Any]) -> str:
    """`{prefix}/lake/dt=YYYY-MM-DD/hour=HH`: the folder of the record's batch files."""
    index = _hour_index(record)
    folder = _FOLDERS.get((prefix, index))
    if folder is None:
        dt, hour = _hour(index)
        folder = memo.remember(_FOLDERS, (prefix, index), f"{prefix}/lake/dt={dt}/hour={hour}", REMEMBERED)
    return folder


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
