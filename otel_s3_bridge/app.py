"""The composition root: builds every part from the config and owns start and stop order.

Start: sink check -> spool open and replay -> batch files a crash left -> batch writer and
uploaders -> decode processes -> gRPC -> HTTP -> metrics (TLS files are read before the
receivers, and re-read when they change).
With the spool, a sink that cannot be reached yet (retryable) does not stop start-up: exports go
to the spool and a background check reports when the sink answers. A permanent failure (bucket
missing, access denied) does. Stop: refuse new exports -> HTTP and gRPC finish in-flight exports
-> decode processes end -> uploaders drain the spool until the deadline -> the rest stays on
disk -> sink closes -> metrics stop (a scrape during the drain still answers). Connection caps
are fitted to the process's file-descriptor limit. The only module that wires concrete classes
together; it must not parse payloads.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time

from . import logs, metrics
from .config import BridgeConfig
from .decode.join import JoinStore
from .decode.pool import DecodePool
from .deliver.batch_writer import BatchSettings, BatchWriter
from .deliver.sink import MeteredSink, build_sink
from .deliver.spool import Spool
from .deliver.uploader import Uploader
from .enrich.pricing import watch_price_file
from .errors import SinkError
from .receive.auth import Authenticator
from .receive.connections import ConnectionLimits
from .receive.grpc import GrpcReceiver
from .receive.http import STOP_GRACE_SECONDS, HttpReceiver
from .receive.ingest import Ingestor
from .receive.metrics_server import MetricsServer
from .receive.tls import TlsFiles

log = logging.getLogger("otel_s3_bridge")

# How often the bridge looks for segments `spool retry` moved back, and re-checks a sink that
# was unreachable at start: both are changes made outside the process, so they are polled.
MAINTENANCE_SECONDS = 2.0
# File descriptors kept for everything but client connections: the spool, S3's connection pool,
# decode processes' pipes, logs.
RESERVED_DESCRIPTORS = 256


def connection_cap(configured: int, receivers: int) -> int:
    """`--max-connections`, lowered if the descriptor limit cannot hold that many per receiver.
    Raises the soft limit to the hard one first, as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return configured
    fitting = max((soft - RESERVED_DESCRIPTORS) // receivers, 16)
    if fitting < configured:
        log.warning("the file-descriptor limit (%d) holds %d connections per receiver, not the %d of "
                    "--max-connections; raise it (ulimit -n) to allow more", soft, fitting, configured)
        return fitting
    return configured


class Bridge:
    def __init__(self, config: BridgeConfig, *, share_ports: bool = False) -> None:
        self.config = config
        self._share_ports = share_ports
        self.sink = MeteredSink(build_sink(config))
        self.spool = Spool(config.spool_dir, config.spool_max_bytes) if config.ack != "upload" else None
        self.authenticator = Authenticator({token.name: token.token for token in config.tokens},
                                           token_file=config.token_file, policy_of=config.policy_of)
        self.pool = DecodePool(config.decode_processes)
        self.join = JoinStore(config.join_directory, window_seconds=config.join_window_seconds,
                              max_bytes=config.join_max_bytes)
        self.prices = watch_price_file(config.prices)
        if self.prices is not None:
            self.prices.reload_if_changed()  # read once now (load_config refused a file that cannot be used)
        self.ingestor = Ingestor(config, self.sink, self.spool, self.pool, self.join, prices=self.prices)
        self.batches = (BatchWriter(self.spool, self.sink, BatchSettings(
            file_format=config.batch_format, max_records=config.batch_max_records, max_bytes=config.batch_max_bytes,
            max_age_seconds=config.batch_max_age_seconds, retry_max_seconds=config.upload_retry_max_seconds),
            latest_body=self.ingestor.latest_body)
            if self.spool is not None else None)
        self.uploader = (Uploader(self.spool, self.sink, concurrency=config.upload_concurrency,
                                  retry_max_seconds=config.upload_retry_max_seconds,
                                  latest_body=self.ingestor.latest_body, batches=self.batches)
                         if self.spool is not None else None)
        max_connections = connection_cap(config.max_connections, 2 if config.grpc_port else 1)
        limits = ConnectionLimits(header_timeout_seconds=config.header_timeout_seconds,
                                  keepalive_timeout_seconds=config.keepalive_timeout_seconds,
                                  max_connections=max_connections)
        self.http = HttpReceiver(self.authenticator, self.ingestor, max_request_bytes=config.max_request_bytes,
                                 body_timeout_seconds=config.body_timeout_seconds, limits=limits)
        self.grpc = (GrpcReceiver(self.authenticator, self.ingestor, max_message_bytes=config.grpc_max_message_bytes,
                                  max_concurrent_rpcs=config.grpc_max_concurrent_rpcs, max_connections=max_connections,
                                  header_timeout_seconds=config.header_timeout_seconds,
                                  body_timeout_seconds=config.body_timeout_seconds,
                                  keepalive_timeout_seconds=config.keepalive_timeout_seconds)
                     if config.grpc_port else None)
        self.metrics = (MetricsServer(self.publish_state, self.http.handle_ready, limits)
                        if config.metrics_port else None)
        self.tls: TlsFiles | None = None
        self._sink_verified = False
        self._last_check_problem: str | None = None
        self._maintenance: asyncio.Task | None = None
        self._maintenance_problems: set[str] = set()  # causes logged once each

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
            await asyncio.to_thread(self.join.open)
            if self.spool is not None:
                replayed = self.spool.open()
                if replayed:
                    log.info("spool: %d entries left by an earlier run are queued for upload", replayed)
                rewritten = await self.batches.recover()
                if rewritten:
                    log.info("batch layout: %d file(s) a crash left half written are written again", rewritten)
                self.batches.start()
                self.uploader.start()
            self._start_maintenance()
            await self.pool.start()
            config = self.config
            if config.tls:
                self.tls = TlsFiles(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
            if self.grpc is not None:
                await self.grpc.start(config.host, config.grpc_port, share_port=self._share_ports,
                                      credentials=self.tls.grpc_credentials() if self.tls else None)
            await self.http.start(config.host, config.http_port, share_port=self._share_ports,
                                  ssl_context=self.tls.ssl_context if self.tls else None)
            self.publish_state()  # before the ready line: a scrape after it sees this process's state
            if self.metrics is not None:
                await self.metrics.start(config.metrics_address, config.metrics_port)
        except BaseException:
            await self.stop(drain_seconds=0)
            raise

    def _start_maintenance(self) -> None:
        self._maintenance = asyncio.create_task(self._maintain(), name="maintenance")
        self._maintenance.add_done_callback(self._maintenance_ended)

    def _maintenance_ended(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return  # stopping
        log.error("the maintenance loop ended (%r); starting it again", task.exception())
        self._start_maintenance()

    async def _maintain(self) -> None:
        """Every few seconds, each of the chores below; one that fails is logged (once per cause)
        and the others go on, and so does the loop: a key added to the token file is never missed
        because the spool's directory held a surprise."""
        chores = [("logs", logs.flush_due), ("token file", self.authenticator.reload_if_changed)]
        if self.prices is not None:
            chores.append(("prices file", self.prices.reload_if_changed))
        if self.ingestor.pseudonym_key is not None:
            chores.append(("pseudonym key file", self.ingestor.pseudonym_key.reload_if_changed))
        chores += [("TLS files", self._reload_tls), ("state", self.publish_state), ("join store", self._expire_join)]
        if self.spool is not None:
            chores += [("spool room", self.spool.recheck_room), ("spool adoption", self._adopt_moved)]
        chores.append(("sink check", self._check_sink_again))
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            failed = False
            for name, chore in chores:
                try:
                    outcome = chore()
                    if asyncio.iscoroutine(outcome):
                        await outcome
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # a bug, or a surprise on disk: the other chores go on
                    failed = True
                    cause = f"{name}: {type(error).__name__}: {error}"
                    if cause not in self._maintenance_problems:
                        if len(self._maintenance_problems) >= 100:  # causes may name files: bounded
                            self._maintenance_problems.clear()
                        self._maintenance_problems.add(cause)
                        log.error("maintenance: %s failed (%s); it is tried again every %ss", name, cause,
                                  MAINTENANCE_SECONDS, exc_info=error)
            if not failed:
                metrics.maintenance_succeeded()

    def _reload_tls(self) -> None:
        if self.tls is not None:
            self.tls.reload_if_changed()

    def _expire_join(self) -> None:
        unmatched = self.join.expire_if_due()
        if unmatched:
            log.info("join store: GenAI events of %d span(s) expired without their span (a span that was not "
                     "an LLM call, or never sent)", unmatched)

    async def _adopt_moved(self) -> None:
        adopted = await self.spool.adopt_moved_segments()
        if adopted:
            log.info("spool: %d entries moved back from quarantine are queued for upload", adopted)

    async def _check_sink_again(self) -> None:
        if self._sink_verified:
            return
        try:
            verified = await self.sink.check()
        except SinkError as error:
            if error.message != self._last_check_problem:
                level = logging.WARNING if error.retryable else logging.ERROR
                log.log(level, "%s still fails its check: %s", self.sink.description, error.message)
                self._last_check_problem = error.message
            return
        self._sink_verified = True
        log.info("%s answers now (%s); uploading the spool", self.sink.description, "; ".join(verified))

    def publish_state(self) -> None:
        """Set the state gauges (spool, memory, join store) from what the parts hold now."""
        spool = self.spool
        if spool is None:
            metrics.set_state(inflight_bytes=self.ingestor.inflight.current, join_bytes=self.join.used_bytes)
            return
        oldest = spool.queue.oldest_enqueued_unix_nano()
        metrics.set_state(
            inflight_bytes=self.ingestor.inflight.current, join_bytes=self.join.used_bytes,
            spool_entries=spool.pending, spool_bytes=spool.used_bytes, spool_max_bytes=spool.max_bytes,
            spool_oldest_age_seconds=max(time.time_ns() - oldest, 0) / 1e9 if oldest is not None else 0.0,
            quarantined_entries=spool.quarantined_files)

    async def stop(self, drain_seconds: float) -> None:
        self.ingestor.accepting = False
        await asyncio.gather(self.http.stop(), self.grpc.stop(STOP_GRACE_SECONDS) if self.grpc else asyncio.sleep(0))
        if self._maintenance is not None:
            self._maintenance.cancel()
        await self.pool.stop()
        if self.uploader is not None:
            if self.spool.pending:
                log.info("draining: uploading %d spooled entries (up to %ss)", self.spool.pending, drain_seconds)
            if not await self.uploader.drain(drain_seconds):
                log.warning("drain deadline reached: %d entries stay in the spool at %s and are uploaded at the "
                            "next start", self.spool.pending, self.spool.directory)
            await self.uploader.stop()
            await self.batches.stop()
            await self.spool.close()
        await self.sink.aclose()
        if self.metrics is not None:
            await self.metrics.stop()
