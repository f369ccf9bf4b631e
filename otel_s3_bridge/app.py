"""The composition root: builds every part from the config and owns start and stop order.

Start: sink check -> spool open and replay -> uploaders -> gRPC -> HTTP. With the spool, a sink
that cannot be reached yet (retryable) does not stop start-up: exports go to the spool and a
background check reports when the sink answers. A permanent failure (bucket missing, access
denied) does. Stop: refuse new exports -> HTTP and gRPC finish in-flight exports -> uploaders
drain the spool until the deadline -> the rest stays on disk -> sink closes.
The only module that wires concrete classes together; it must not parse payloads.
"""

from __future__ import annotations

import asyncio
import logging
from .auth import Authenticator
from .config import BridgeConfig
from .errors import SinkError
from .ingest import Ingestor
from .receiver_grpc import GrpcReceiver
from .receiver_http import STOP_GRACE_SECONDS, HttpReceiver
from .sink import build_sink
from .spool import Spool
from .uploader import Uploader

log = logging.getLogger("otel_s3_bridge")

# How often the bridge looks for segments `spool retry` moved back, and re-checks a sink that
# was unreachable at start: both are changes made outside the process, so they are polled.
MAINTENANCE_SECONDS = 2.0


class Bridge:
    def __init__(self, config: BridgeConfig, *, share_ports: bool = False) -> None:
        self.config = config
        self._share_ports = share_ports
        self.sink = build_sink(config)
        self.spool = Spool(config.spool_dir, config.spool_max_bytes) if config.ack == "spool" else None
        self.uploader = (Uploader(self.spool, self.sink, concurrency=config.upload_concurrency,
                                  retry_max_seconds=config.upload_retry_max_seconds)
                         if self.spool is not None else None)
        authenticator = Authenticator(config.tokens)
        self.ingestor = Ingestor(config, self.sink, self.spool)
        self.http = HttpReceiver(authenticator, self.ingestor, config.max_request_bytes)
        self.grpc = GrpcReceiver(authenticator, self.ingestor, config.max_request_bytes) if config.grpc_port else None
        self._sink_verified = False
        self._maintenance: asyncio.Task | None = None

    async def start(self) -> None:
        """Raises SinkError (permanent, or any failure without the spool) or OSError (ports, spool).
        Everything it reports is logged before the receivers listen."""
        await self.sink.open()
        try:
            try:
                for line in await self.sink.check():
                    log.info("check passed: %s", line)
                self._sink_verified = True
            except SinkError as error:
                if not (error.retryable and self.spool is not None):
                    raise
                log.warning("%s cannot be reached yet (%s); accepting exports into the spool and checking "
                            "again", self.config.destination, error.message)
            if self.spool is not None:
                replayed = self.spool.open()
                if replayed:
                    log.info("spool: %d entries left by an earlier run are queued for upload", replayed)
                self.uploader.start()
                self._maintenance = asyncio.create_task(self._maintain())
            if self.grpc is not None:
                await self.grpc.start(self.config.host, self.config.grpc_port, share_port=self._share_ports)
            await self.http.start(self.config.host, self.config.http_port, share_port=self._share_ports)
        except BaseException:
            await self.stop(drain_seconds=0)
            raise

    async def _maintain(self) -> None:
        last_problem: str | None = None
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            adopted = self.spool.adopt_segments()
            if adopted:
                log.info("spool: %d entries moved back from quarantine are queued for upload", adopted)
                await self.spool.wake_uploaders()
            if self._sink_verified:
                continue
            try:
                verified = await self.sink.check()
            except SinkError as error:
                if error.message != last_problem:
                    level = logging.WARNING if error.retryable else logging.ERROR
                    log.log(level, "%s still fails its check: %s", self.sink.description, error.message)
                    last_problem = error.message
                continue
            self._sink_verified = True
            log.info("%s answers now (%s); uploading the spool", self.sink.description, "; ".join(verified))

    async def stop(self, drain_seconds: float) -> None:
        self.ingestor.accepting = False
        await asyncio.gather(self.http.stop(), self.grpc.stop(STOP_GRACE_SECONDS) if self.grpc else asyncio.sleep(0))
        if self._maintenance is not None:
            self._maintenance.cancel()
        if self.uploader is not None:
            if self.spool.pending:
                log.info("draining: uploading %d spooled entries (up to %ss)", self.spool.pending, drain_seconds)
            if not await self.uploader.drain(drain_seconds):
                log.warning("drain deadline reached: %d entries stay in the spool at %s and are uploaded at the "
                            "next start", self.spool.pending, self.spool.directory)
            await self.uploader.stop()
            await self.spool.close()
        await self.sink.aclose()
