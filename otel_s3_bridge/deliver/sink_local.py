"""Local-directory sink: the embedded default. Same keys as S3, as files under one root.

Writes are atomic and durable (temporary file, fsync, rename, directory fsync: `durable`) and
confined to the root directory; a key's own bucket (per-key routing) is a subdirectory of the
root. Failures are classified here: what no retry can fix (a name too long, a permission
denied) is permanent, the rest retryable. Must not be used for anything but object bodies.
"""

from __future__ import annotations

import asyncio
import errno
import uuid
from pathlib import Path

from ..durable import write_atomically
from ..errors import SinkError

PERMANENT_ERRNOS = {errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.EILSEQ, errno.ELOOP,
                    errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST}


class LocalDirectorySink:
    def __init__(self, root: str, prefix: str) -> None:
        self.root = Path(root).resolve()
        self.prefix = prefix
        self.description = f"local directory {root}"

    async def open(self) -> None:
        return None

    def _path(self, key: str, bucket: str | None) -> Path:
        base = self.root / bucket if bucket else self.root
        path = (base / key).resolve()
        if self.root not in path.parents:
            raise SinkError(f"key {key[:80]!r} resolves outside {self.root}", retryable=False)
        return path

    def _write(self, key: str, body: bytes, bucket: str | None) -> None:
        path = self._path(key, bucket)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, body)

    async def put(self, key: str, body: bytes, content_type: str, *, bucket: str | None = None,
                  controls: bytes = b"") -> None:
        try:
            await asyncio.to_thread(self._write, key, body, bucket)
        except OSError as exc:
            raise SinkError(f"cannot write {key[:80]!r} under {self.root}: {exc.strerror or exc}",
                            retryable=exc.errno not in PERMANENT_ERRNOS) from exc
        except (ValueError, UnicodeError) as exc:  # e.g. a character no file name may hold
            raise SinkError(f"cannot write {key[:80]!r} under {self.root}: {exc}", retryable=False) from exc

    async def check(self) -> list[str]:
        probe = f"{self.prefix}/.otel-s3-bridge-check-{uuid.uuid4().hex}.json"
        await self.put(probe, b"{}", "application/json")
        self._path(probe, None).unlink()
        return [f"wrote and deleted a probe object under {self.root / self.prefix}"]

    async def aclose(self) -> None:
        return None
