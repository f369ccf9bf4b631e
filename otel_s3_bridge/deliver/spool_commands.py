"""The spool's offline commands: `otel-s3-bridge spool status|retry`, and adopting the spools of
processes that no longer run (a larger `--workers` before). They work on the files alone, with
or without a running bridge, and never on a spool another process holds locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import fsync_directory
from .spool_format import SEGMENT_SUFFIX, done_path, read_done, read_entries


@dataclass
class SpoolStats:
    entries: int = 0
    bytes: int = 0
    oldest_unix_nano: int | None = None
    damaged_files: list[str] = field(default_factory=list)


def _files(directory: Path) -> Iterator[Path]:
    return iter(sorted(directory.glob("*" + SEGMENT_SUFFIX))) if directory.is_dir() else iter(())


def stats(directory: Path) -> SpoolStats:
    result = SpoolStats()
    for path in _files(directory):
        data = path.read_bytes()
        entries, _, problem = read_entries(data)
        uploaded = read_done(path)
        entries = [entry for entry in entries if entry.offset not in uploaded]
        result.entries += len(entries)
        result.bytes += len(data)
        for entry in entries:
            if result.oldest_unix_nano is None or entry.enqueued_unix_nano < result.oldest_unix_nano:
                result.oldest_unix_nano = entry.enqueued_unix_nano
        if problem:
            result.damaged_files.append(f"{path.name}: {problem}")
    return result


def retry_quarantined(spool_directory: str) -> int:
    """Move every quarantined entry back into the spool. Returns how many files were moved."""
    root = Path(spool_directory)
    quarantine, segments = root / "quarantine", root / "segments"
    segments.mkdir(parents=True, exist_ok=True)
    moved = 0
    for path in _files(quarantine):
        os.replace(path, segments / f"retry-{path.name}")  # atomic: the bridge adopts whole files only
        moved += 1
    if moved:
        fsync_directory(segments)
        fsync_directory(quarantine)
    return moved


def adopt_orphan_spools(root: str, target: str) -> int:
    """Move the files of spools no process uses (a worker directory left by a larger `--workers`,
    or the single-process spool when workers start) into `target`, so nothing is left behind.
    Returns how many segment files were moved."""
    root_path, target_path = Path(root), Path(target)
    candidates = [root_path, *sorted(root_path.glob("worker-*"))]
    moved = 0
    for candidate in candidates:
        if candidate.resolve() == target_path.resolve() or not (candidate / "segments").is_dir():
            continue
        lock_fd = os.open(candidate / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running process owns it
            for kind in ("segments", "quarantine"):
                (target_path / kind).mkdir(parents=True, exist_ok=True)
                for path in sorted((candidate / kind).glob("*" + SEGMENT_SUFFIX)):
                    destination = target_path / kind / f"adopted-{candidate.name}-{path.name}"
                    if done_path(path).exists():
                        os.replace(done_path(path), done_path(destination))
                    os.replace(path, destination)
                    moved += 1
                fsync_directory(target_path / kind)
            manifests = candidate / "batches"  # batch files in progress: finished by the adopting spool
            if manifests.is_dir() and any(manifests.iterdir()):
                (target_path / "batches").mkdir(parents=True, exist_ok=True)
                for path in sorted(manifests.iterdir()):
                    os.replace(path, target_path / "batches" / path.name)  # named by their files: unique
                fsync_directory(target_path / "batches")
        finally:
            os.close(lock_fd)
    return moved
