"""`otel-s3-bridge compact --date YYYY-MM-DD [--delete-source]`: a day of `trace`-layout objects
(one JSON record each, OpenRouter's layout) rewritten as the `batch` layout's Parquet files, one
per hour of the day, so that a bucket kept in OpenRouter's layout still reads fast.

Idempotent and safe to run again as objects keep arriving: a run reads the day's objects and the
files earlier runs wrote (`compact-<digest>.parquet`), writes every call once, its newest version
(`schema.NEWEST_FIRST`), sorted by identity (so the same records always make the same files under the
same keys), and deletes an earlier file only once its records are in the new ones. Objects whose
version of a call the bridge's own batch files hold already, or a newer one (`--layout batch` or
`both`), are left out: they are in the lake already. Every file is read
back and checked (row count and identities) before anything is deleted; `--delete-source` deletes
the day's objects only once every file of that day checked out. A local file is written beside its
key and renamed into place. Must not touch other days.
"""

from __future__ import annotations

import datetime
import gzip
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import partitions, schema
from .read import Store, Window, newest_versions, read_bytes, trace_objects, trace_records

LABEL = "compact-"  # the files compact writes, apart from those of the bridge's batch layout
IDENTITY_COLUMNS = ["trace_id", "otel_trace_id", "span_id"]


@dataclass(frozen=True)
class Compacted:
    objects: int
    records: int
    files: list[str]
    deleted: int
    in_lake: int  # objects whose records were in the bridge's own batch files already


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


def _verify(fs: pafs.FileSystem, path: str, expected: list[str]) -> None:
    written = _identities(pq.read_table(path, filesystem=fs, schema=schema.SCHEMA, columns=IDENTITY_COLUMNS))
    if written != expected:
        raise CompactionFailed(f"{path} holds {len(written)} rows, not the {len(expected)} records written to it")


def _identities(table: pa.Table) -> list[str]:
    """`partitions.identity` of each row."""
    return [f"{trace}/{otel}/{span}" for trace, otel, span in
            zip(*(table.column(name).to_pylist() for name in IDENTITY_COLUMNS))]


def _day_files(fs: pafs.FileSystem, folder: str) -> tuple[list[str], list[str]]:
    """(files earlier runs of compact wrote, files the bridge's batch layout wrote) in a day's folder."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    except FileNotFoundError:
        return [], []
    names = sorted(info.path for info in infos
                   if info.type == pafs.FileType.File and info.path.endswith(tuple(partitions.SUFFIXES.values())))
    ours = [path for path in names if path.rsplit("/", 1)[1].startswith(LABEL)]
    return ours, [path for path in names if path not in ours]


def _version(completed_ms: int | None, received_ms: int | None) -> tuple[bool, int, int]:
    """How new a version of a call is: completed last by its GenAI events, else received last
    (`schema.NEWEST_FIRST`)."""
    return completed_ms is not None, completed_ms or 0, received_ms or 0


def _lake_versions(tables: list[pa.Table]) -> dict[tuple[str, str], tuple[bool, int, int]]:
    """(trace_id, span_id) -> the newest version of the call that the bridge's batch files hold."""
    newest: dict[tuple[str, str], tuple[bool, int, int]] = {}
    for table in tables:
        columns = [table.column(name) for name in schema.IDENTITY]
        columns += [pc.cast(table.column(name), pa.int64()) for name in ("ingest_completed_at", "ingest_received_at")]
        for trace, span, completed, received in zip(*(column.to_pylist() for column in columns)):
            version = _version(completed, received)
            if version > newest.get((trace, span), (False, -1, -1)):
                newest[(trace, span)] = version
    return newest


def compact_day(store: Store, day: datetime.date, *, delete_source: bool = False,
                progress: Callable[[str], None] = lambda line: None) -> Compacted:
    fs, root = store.filesystem()
    earlier, written_by_bridge = _day_files(fs, f"{root}/{store.prefix}/lake/dt={day.isoformat()}")
    in_lake = _lake_versions([_read_file(fs, path, list(schema.VERSION_COLUMNS)) for path in written_by_bridge])
    paths = trace_objects(fs, f"{root}/{store.prefix}", store.path_template, Window(day, day))
    records = []
    sources = []
    skipped = 0
    for path, record in trace_records(fs, paths, progress):
        if partitions.partition(record)[0] != day.isoformat():
            continue  # another day's record (a path template without {date})
        sources.append(path)
        ingest = record.get("ingest") if isinstance(record.get("ingest"), dict) else {}
        version = _version(schema.epoch_ms(ingest.get("completed_at")), schema.epoch_ms(ingest.get("received_at")))
        if version <= in_lake.get((record.get("trace_id"), record.get("span_id")), (False, -1, -1)):
            skipped += 1  # the bridge's batch files hold this version of the call, or a newer one
        else:
            records.append(record)
    # Every version this run and earlier ones found; of each call the newest is written, once.
    rows = newest_versions(pa.concat_tables([schema.table(records)] + [_read_file(fs, path) for path in earlier]))
    identities = _identities(rows)
    order = sorted(range(len(identities)), key=identities.__getitem__)
    rows = rows.take(pa.array(order, pa.int64()))
    identities = [identities[index] for index in order]
    hours = [partitions.partition({"start_time_unix_nano": nanos})[1]
             for nanos in rows.column("start_time_unix_nano").to_pylist()]
    files = []
    for hour in sorted(set(hours)):
        chosen = [index for index, value in enumerate(hours) if value == hour]
        group, group_ids = rows.take(pa.array(chosen, pa.int64())), [identities[index] for index in chosen]
        folder = f"{store.prefix}/lake/dt={day.isoformat()}/hour={hour}"
        key = partitions.file_key(folder, group_ids, partitions.PARQUET, label=LABEL)
        path = f"{root}/{key}"
        _write(fs, path, schema.encode_tables([group]))
        _verify(fs, path, group_ids)
        files.append(key)
        progress(f"wrote and checked {key} ({group.num_rows} records)")
    for path in earlier:
        if path not in {f"{root}/{key}" for key in files}:
            fs.delete_file(path)  # its records are in the files just checked
    deleted = 0
    if delete_source:
        for path in sources:
            fs.delete_file(path)
            deleted += 1
    return Compacted(len(sources), len(identities), files, deleted, skipped)


def _read_file(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    if path.endswith(partitions.SUFFIXES[partitions.PARQUET]):
        return pq.read_table(path, filesystem=fs, schema=schema.SCHEMA, columns=columns)
    lines = gzip.decompress(read_bytes(fs, path)).splitlines()
    return schema.table([orjson.loads(line) for line in lines if line], columns)
