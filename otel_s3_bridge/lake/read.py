"""Reading the records back, for `query` and `report`: from a `Store`: a bucket (pyarrow's S3
filesystem, with the standard AWS credential chain, `--endpoint-url` and `--region`) or the local
directory sink, in either layout, as one Arrow table of `schema.SCHEMA` that DuckDB queries in place.

`batch` files (`{prefix}/lake/dt=…/hour=…/`) are read only for the days asked for; `trace` objects
(one JSON record each) are listed by day when the path template is `{prefix}/{date}` (the default)
and under the whole prefix otherwise. A day that has `batch` files is read from them alone, its
`trace` objects are not (a bridge writing both layouts, or `compact` without `--delete-source`,
stores every record in each). Of a call stored more than once (a resent export, a record completed
later by its GenAI events) only the newest version is kept (`schema.newest_versions_sql`). Progress
goes to `progress`. Must not write anything.
"""

from __future__ import annotations

import datetime
import gzip
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from . import partitions, schema

DEFAULT_TEMPLATE = "{prefix}/{date}"
READERS = 16  # trace objects fetched at once
READ_CHUNK = 2000  # paths handed to the readers at a time (bounds what waits in memory)


@dataclass(frozen=True)
class Window:
    """Days `first` to `last`, both included (UTC)."""

    first: datetime.date
    last: datetime.date

    def days(self) -> list[datetime.date]:
        return [self.first + datetime.timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def mask(self, timestamps: pa.ChunkedArray) -> pa.ChunkedArray:
        """True for timestamps within the days (null: false)."""
        start = datetime.datetime.combine(self.first, datetime.time(), datetime.UTC)
        end = datetime.datetime.combine(self.last + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
        inside = pc.and_(pc.greater_equal(timestamps, pa.scalar(start, schema.UTC_MS)),
                         pc.less(timestamps, pa.scalar(end, schema.UTC_MS)))
        return pc.fill_null(inside, False)


@dataclass(frozen=True)
class Store:
    """Where the records lie (an S3 bucket and how to reach it, else the local directory sink's
    root) and the prefix and path template they were written with."""

    prefix: str
    path_template: str = DEFAULT_TEMPLATE
    bucket: str | None = None
    local_root: str = "."
    region: str | None = None
    endpoint_url: str | None = None
    virtual_addressing: bool = False
    timeout_seconds: float = 30

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """The store and the root path in it that keys are relative to."""
        if self.bucket is None:
            return pafs.LocalFileSystem(), os.path.abspath(self.local_root)
        options = {"region": self.region or "us-east-1", "force_virtual_addressing": self.virtual_addressing,
                   "connect_timeout": self.timeout_seconds, "request_timeout": self.timeout_seconds}
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            options.update(endpoint_override=parts.netloc + parts.path, scheme=parts.scheme)
        return pafs.S3FileSystem(**options), self.bucket


def _files(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return []
    return [info for info in infos if info.type == pafs.FileType.File]


def _batch_files(fs: pafs.FileSystem, lake_dir: str, window: Window) -> list[str]:
    paths = []
    for day in window.days():
        paths += [info.path for info in _files(fs, f"{lake_dir}/dt={day.isoformat()}")
                  if info.path.endswith(tuple(partitions.SUFFIXES.values()))]
    return sorted(paths)


def trace_objects(fs: pafs.FileSystem, prefix_dir: str, template: str, window: Window) -> list[str]:
    if template == DEFAULT_TEMPLATE:
        listed = [info for day in window.days() for info in _files(fs, f"{prefix_dir}/{day.isoformat()}")]
    else:
        listed = [info for info in _files(fs, prefix_dir) if "/lake/dt=" not in info.path]
    # The bridge's own probe objects (`check`) start with a dot.
    return sorted(info.path for info in listed
                  if info.path.endswith(".json") and not info.base_name.startswith("."))


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path, compression=None) as stream:  # .gz: the caller inflates
        return stream.read()


def trace_records(fs: pafs.FileSystem, paths: list[str],
                  progress: Callable[[str], None]) -> Iterator[tuple[str, dict]]:
    """(path, record) of each trace-layout object that holds a JSON record; others are told and left.
    Objects are fetched `READERS` at a time (one GET each: latency, not bandwidth, bounds S3)."""
    with ThreadPoolExecutor(READERS) as pool:
        for start in range(0, len(paths), READ_CHUNK):
            chunk = paths[start:start + READ_CHUNK]
            for path, data in zip(chunk, pool.map(lambda path: read_bytes(fs, path), chunk)):
                try:
                    yield path, orjson.loads(data)
                except orjson.JSONDecodeError:
                    progress(f"left alone {path}: not a JSON record")
            progress(f"read {start + len(chunk)} of {len(paths)} objects")


def read_records(store: Store, window: Window, progress: Callable[[str], None] = lambda line: None,
                 columns: list[str] | None = None) -> tuple[pa.Table, str]:
    """The records whose span started in `window` (only `columns`, when given: Parquet files are
    then read for those alone), and which layouts they were read from. Each day is read from its
    `batch` files when it has any, else from its `trace` objects."""
    fs, root = store.filesystem()
    prefix_dir = f"{root}/{store.prefix}"
    batch_files = _batch_files(fs, f"{prefix_dir}/lake", window)
    batch_days = {datetime.date.fromisoformat(path.split("/dt=", 1)[1][:10]) for path in batch_files}
    wanted = (None if columns is None else
              sorted(set(columns) | {"timestamp", *schema.VERSION_COLUMNS}, key=schema.SCHEMA.names.index))
    tables = []
    parquet = [path for path in batch_files if path.endswith(partitions.SUFFIXES[partitions.PARQUET])]
    if parquet:
        progress(f"reading {len(parquet)} Parquet files")
        # One dataset: its files are read in parallel, and only the columns asked for.
        tables.append(ds.dataset(parquet, schema=schema.SCHEMA, format="parquet", filesystem=fs).to_table(
            columns=wanted))
    ndjson = [path for path in batch_files if path not in parquet]
    for number, path in enumerate(ndjson, start=1):
        lines = gzip.decompress(read_bytes(fs, path)).splitlines()
        tables.append(schema.table([orjson.loads(line) for line in lines if line], wanted))
        if number % 100 == 0 or number == len(ndjson):
            progress(f"read {number} of {len(ndjson)} NDJSON files")
    trace_days = [day for day in window.days() if day not in batch_days]
    records = []
    if trace_days:
        paths = trace_objects(fs, prefix_dir, store.path_template, Window(trace_days[0], trace_days[-1]))
        records = [record for _, record in trace_records(fs, paths, progress)
                   if datetime.date.fromisoformat(partitions.partition(record)[0]) not in batch_days]
    if records or not tables:
        tables.append(schema.table(records, wanted))
    layouts = " and ".join(name for name, used in (("batch", batch_files), ("trace", records)) if used) or "no"
    table = pa.concat_tables(tables)
    return newest_versions(table.filter(window.mask(table.column("timestamp")))), layouts


def newest_versions(table: pa.Table) -> pa.Table:
    """One row per call: the newest of its versions (`schema.newest_versions_sql`), in DuckDB."""
    if table.num_rows < 2:
        return table
    import duckdb

    connection = duckdb.connect()
    try:
        connection.register("stored", table)
        kept = connection.sql(schema.newest_versions_sql("stored", table.column_names)).to_arrow_table()
    finally:
        connection.close()
    return kept.cast(table.schema)
