"""The object sink seam: one small protocol and the factory that picks S3 or a local directory.

Only `sink_s3` imports aiobotocore; nothing outside the sink modules knows how objects are stored.
"""

from __future__ import annotations

import time
from typing import Protocol

from .. import metrics
from ..config import BridgeConfig
from ..errors import SinkError


class ObjectSink(Protocol):
    """Where encoded objects go. `put` raises `SinkError` with its retryability decided."""

    description: str

    async def open(self) -> None: ...

    async def put(self, key: str, body: bytes, content_type: str, *, bucket: str | None = None,
                  controls: bytes = b"") -> None:
        """Store one object; `bucket` is a key's own bucket (per-key routing), None for the default;
        `controls` its encoded ObjectControls (encryption, storage class, tags), b"": the sink's own."""
        ...

    async def check(self) -> list[str]:
        """Write and delete a probe object; return what was verified, raise SinkError with a diagnosis."""
        ...

    async def aclose(self) -> None: ...


class MeteredSink:
    """The sink it wraps, with every `put` timed and counted in the metrics."""

    def __init__(self, sink: ObjectSink) -> None:
        self._sink = sink
        self.description = sink.description
        self.open, self.check, self.aclose = sink.open, sink.check, sink.aclose

    async def put(self, key: str, body: bytes, content_type: str, *, bucket: str | None = None,
                  controls: bytes = b"") -> None:
        started = time.perf_counter()
        try:
            await self._sink.put(key, body, content_type, bucket=bucket, controls=controls)
        except SinkError as error:
            metrics.observe_put(time.perf_counter() - started, error.retryable)
            raise
        except Exception:
            metrics.observe_put(time.perf_counter() - started, True)
            raise
        metrics.observe_put(time.perf_counter() - started, None)


def build_sink(config: BridgeConfig) -> ObjectSink:
    if config.uses_s3:
        from .sink_s3 import S3Sink

        return S3Sink(config)
    from .sink_local import LocalDirectorySink

    return LocalDirectorySink(config.output_dir, config.prefix)
