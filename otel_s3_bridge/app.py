"""The composition root: builds every part from the config and owns start and stop order.

Start: sink check -> gRPC -> HTTP (a failed step stops what already started).
Stop: HTTP and gRPC stop accepting and finish in-flight exports -> sink closes.
The only module that wires concrete classes together; it must not parse payloads.
"""

from __future__ import annotations

from .auth import Authenticator
from .config import BridgeConfig
from .ingest import Ingestor
from .receiver_grpc import GrpcReceiver
from .receiver_http import HttpReceiver
from .sink import build_sink

STOP_GRACE_SECONDS = 10.0


class Bridge:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.sink = build_sink(config)
        authenticator = Authenticator(config.tokens)
        self.ingestor = Ingestor(config, self.sink)
        self.http = HttpReceiver(authenticator, self.ingestor, config.max_request_bytes)
        self.grpc = GrpcReceiver(authenticator, self.ingestor, config.max_request_bytes) if config.grpc_port else None

    async def start(self) -> list[str]:
        """Check the sink, then listen. Returns what the sink check verified; raises SinkError or OSError."""
        await self.sink.open()
        try:
            verified = await self.sink.check()
            if self.grpc is not None:
                await self.grpc.start(self.config.host, self.config.grpc_port)
            await self.http.start(self.config.host, self.config.http_port)
        except BaseException:
            await self.stop()
            raise
        return verified

    async def stop(self) -> None:
        await self.http.stop()
        if self.grpc is not None:
            await self.grpc.stop(STOP_GRACE_SECONDS)
        await self.sink.aclose()
