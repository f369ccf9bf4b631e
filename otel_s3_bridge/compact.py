"""`otel-s3-bridge compact --date YYYY-MM-DD [--delete-source]`: a day of `trace`-layout objects
(one JSON record each, OpenRouter's layout) rewritten as the `batch` layout's Parquet files, one
per hour of the day, so that a bucket kept in OpenRouter's layout still reads fast.

Idempotent: records are sorted by identity before they are written, so the same objects always make
the same files under the same keys (`lake_keys.file_key`), and a second run overwrites them. Every file
is read back and checked (row count and the identities of its records) before anything else
happens; `--delete-source` deletes a day's objects only once every file of that day checked out.
A local file is written beside its key and renamed into place. Must not touch other days.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import lake, lake_keys
from .config import BridgeConfig
from .lake_read import Window, filesystem, trace_objects, trace_records


@dataclass(frozen=True)
class Compacted:
    objects: int
    records: int
    files: list[str]
    deleted: int


class CompactionFailed(Exception):
    """A written file did not read back as written: nothing was deleted."""


def _write(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        staged = path + ".partial"
        with fs.open_output_stream(staged, compression=None) as stream:
            stream.write(data)
        fs.move(staged, path)
        return
    with fs.open_output_stream(path, compression=None) as stream:  # multipart above 5 MiB parts
        stream.write(data)


def _verify(fs: pafs.FileSystem, path: str, records: list[dict]) -> None:
    table = pq.read_table(path, filesystem=fs, schema=lake.SCHEMA, columns=["trace_id", "otel_trace_id", "span_id"])
    written = [lake_keys.identity(row) for row in table.to_pylist()]
    if written != [lake_keys.identity(record) for record in records]:
        raise CompactionFailed(f"{path} holds {len(written)} rows, not the {len(records)} records written to it")


def compact_day(config: BridgeConfig, day: datetime.date, *, delete_source: bool = False,
                progress: Callable[[str], None] = lambda line: None) -> Compacted:
    fs, root = filesystem(config)
    paths = trace_objects(fs, f"{root}/{config.prefix}", str(config.path_template), Window(day, day))
    records: dict[str, dict] = {}
    sources = []
    for path, record in trace_records(fs, paths, progress):
        if lake_keys.partition(record)[0] != day.isoformat():
            continue  # another day's record (a path template without {date})
        records[lake_keys.identity(record)] = record  # the same call stored twice is one row
        sources.append(path)
    ordered = [records[identity] for identity in sorted(records)]
    files = []
    for (_, _), group in sorted(lake_keys.by_partition(ordered).items()):
        key = lake_keys.file_key(lake_keys.partition_dir(config.prefix, group[0]), map(lake_keys.identity, group),
                                 lake_keys.PARQUET)
        path = f"{root}/{key}"
        _write(fs, path, lake.encode(group, lake_keys.PARQUET))
        _verify(fs, path, group)
        files.append(key)
        progress(f"wrote and checked {key} ({len(group)} records)")
    deleted = 0
    if delete_source:
        for path in sources:
            fs.delete_file(path)
            deleted += 1
    return Compacted(len(sources), len(ordered), files, deleted)
