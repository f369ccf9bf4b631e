"""Local-directory sink: the embedded default. Same keys as S3, as files under one root.

Writes are atomic (temporary file, fsync, rename) and confined to the root directory. Must not
be used for anything but object bodies.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from .errors import SinkError


class LocalDirectorySink:
    def __init__(self, root: str, prefix: str) -> None:
        self.root = Path(root).resolve()
        self.prefix = prefix
        self.description = f"local directory {root}"

    async def open(self) -> None:
        return None

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise SinkError(f"key {key!r} resolves outside {self.root}", retryable=False)
        return path

    def _write(self, path: Path, body: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise SinkError(f"cannot write {path}: {exc.strerror}", retryable=True) from exc

    async def put(self, key: str, body: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self._path(key), body)

    async def check(self) -> list[str]:
        probe = self._path(f"{self.prefix}/.otel-s3-bridge-check-{uuid.uuid4().hex}.json")
        await asyncio.to_thread(self._write, probe, b"{}")
        probe.unlink()
        return [f"wrote and deleted a probe object under {self.root / self.prefix}"]

    async def aclose(self) -> None:
        return None
