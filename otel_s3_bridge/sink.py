"""The object sink seam: one small protocol and the factory that picks S3 or a local directory.

Only `sink_s3` imports aiobotocore; nothing outside the sink modules knows how objects are stored.
"""

from __future__ import annotations

from typing import Protocol

from .config import BridgeConfig


class ObjectSink(Protocol):
    """Where encoded objects go. `put` raises `SinkError` with its retryability decided."""

    description: str

    async def open(self) -> None: ...

    async def put(self, key: str, body: bytes, content_type: str, *, bucket: str | None = None) -> None:
        """Store one object; `bucket` is a key's own bucket (per-key routing), None for the default."""
        ...

    async def check(self) -> list[str]:
        """Write and delete a probe object; return what was verified, raise SinkError with a diagnosis."""
        ...

    async def aclose(self) -> None: ...


def build_sink(config: BridgeConfig) -> ObjectSink:
    if config.uses_s3:
        from .sink_s3 import S3Sink

        return S3Sink(config)
    from .sink_local import LocalDirectorySink

    return LocalDirectorySink(config.output_dir, config.prefix)
