"""`serve` (the bridge itself, or its supervisor with `--workers N`), `check` (a probe object
written and deleted with the configured settings) and `health` (a container's HEALTHCHECK).

Turns a sink diagnosis into one plain message and an exit code; never prints a token.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .. import BUILD, __version__, logs
from ..app import Bridge
from ..config import BridgeConfig, add_config_arguments
from ..deliver.sink import build_sink
from ..deliver.spool_commands import adopt_orphan_spools
from ..errors import SinkError
from ..supervisor import supervise, worker_index
from .command import EXIT_FAILED, EXIT_OK, add_command

log = logging.getLogger("otel_s3_bridge")


def register(commands: argparse._SubParsersAction, advanced: bool) -> None:
    serve = add_command(commands, "serve", "run the bridge (default: loopback, local directory sink)",
                        description="Receive OTLP traces (HTTP JSON/protobuf and gRPC) and store LLM trace "
                                    "records in S3 or a local directory.")
    add_config_arguments(serve, "serve", advanced=advanced)
    serve.set_defaults(run=run_serve)

    check = add_command(commands, "check", "write and delete a probe object with the configured settings",
                        description="Write, read back and delete a probe object in every bucket the "
                                    "configuration names.")
    add_config_arguments(check, "check", advanced=advanced)
    check.set_defaults(run=run_check)

    health = add_command(
        commands, "health", "ask the bridge running here with this configuration whether it is alive (exit 0 or "
        "1; for a container HEALTHCHECK)", "[--ready] ",
        description="GET /healthz (or /readyz) of the bridge running here: on its metrics port, else on its "
                    "OTLP/HTTP port. Exit 0 when it answers 200.")
    health.add_argument("--ready", action="store_true",
                        help="ask /readyz instead (not ready: the spool is full, or the bridge is stopping)")
    add_config_arguments(health, "health", advanced=advanced)
    health.set_defaults(run=run_health)


def run_serve(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    _setup_logging(config)
    index = worker_index()
    if config.workers > 1 and index is None:
        return supervise(config, argv)
    if index is not None:
        config = config.for_worker(index)
    elif config.ack != "upload":
        moved = adopt_orphan_spools(str(Path(config.spool_dir)), config.spool_dir)
        if moved:
            log.info("moved %d spool file(s) left by former --workers processes into %s", moved, config.spool_dir)
    try:
        return _run(config, _serve(config, share_ports=index is not None))
    except KeyboardInterrupt:
        return EXIT_OK


def run_check(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    _setup_logging(config)
    return asyncio.run(_check(config))


def run_health(args: argparse.Namespace, config: BridgeConfig, argv: list[str]) -> int:
    return _health(config, args.ready)


def _setup_logging(config: BridgeConfig) -> None:
    index = worker_index()
    logs.setup(config.log_level, f" worker-{index}" if index is not None else "",
               secrets=[token.token for token in config.tokens], log_format=config.log_format,
               fields={"worker": index} if index is not None else None)


def _ready_message(config: BridgeConfig) -> str:
    scheme = "https" if config.tls else "http"
    listening = f"OTLP/HTTP on {scheme}://{config.host}:{config.http_port}/v1/traces"
    if config.grpc_port:
        listening += f", OTLP/gRPC{' over TLS' if config.tls else ''} on {config.host}:{config.grpc_port}"
    if config.tls_client_ca_file:
        listening += " (client certificates required)"
    if config.metrics_port:
        listening += f", metrics on http://{config.metrics_address}:{config.metrics_port}/metrics"
    if config.ack == "upload":
        delivery = "acknowledging once uploaded"
    elif config.puts_first:
        delivery = (f"acknowledging once uploaded, or once fsynced in the spool {config.spool_dir} when the "
                    f"bucket takes longer than {config.ack_wait_seconds:g} s or fails")
    else:
        delivery = f"acknowledging once fsynced in the spool {config.spool_dir}"
    names = [token.name for token in config.tokens]
    auth = (f"token auth (Bearer) with key(s) {', '.join(names) or '(none yet)'}"
            + (f" and the token file {config.token_file}" if config.token_file else "")
            if names or config.token_file else "no auth (loopback only)")
    where = config.destination
    if not config.uses_s3:
        where += " (no --bucket set; objects get exactly the keys they would get in S3)"
    layouts = []
    if config.writes_objects:
        layouts.append(f"keys {str(config.path_template).replace('{prefix}', config.prefix)}/{{traceId}}-{{timestamp}}"
                       ".json")
    if config.writes_batches:
        layouts.append(f"{config.batch_format} files {config.prefix}/lake/dt=YYYY-MM-DD/hour=HH/ (at most "
                       f"{config.batch_max_records:,} records or {config.batch_max_age_seconds}s each)")
    return f"otel-s3-bridge {__version__} ready: {listening}; {auth}; {delivery}; writing to {where}, " \
           + " and ".join(layouts) + f"; decode core: {BUILD}"


async def _serve(config: BridgeConfig, *, share_ports: bool = False) -> int:
    # Records are trees of dicts and lists without reference cycles: reference counting frees
    # them. The cyclic collector's full passes over every spooled entry's bookkeeping cost more
    # CPU than anything else under load (profiled with py-spy), so they run far less often.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    stop = asyncio.Event()
    stopping_since = [0.0]

    def on_signal() -> None:
        if stop.is_set() and worker_index() is not None and time.monotonic() - stopping_since[0] < 2:
            return  # a worker's copy of the same stop: the supervisor's forward, and a signal to its cgroup
        if stop.is_set():  # a second signal: leave now; everything acknowledged is in the spool
            log.warning("second signal: exiting at once; the spool is replayed at the next start")
            logging.shutdown()
            os._exit(EXIT_FAILED)
        stopping_since[0] = time.monotonic()
        stop.set()

    # Installed before start-up, so that a SIGTERM arriving while the bridge starts stops it cleanly.
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(logs.quiet_exception_handler())
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    bridge = Bridge(config, share_ports=share_ports)
    try:
        await bridge.start()
    except SinkError as error:
        log.error("refusing to start: the check of %s failed: %s", config.destination, error.message)
        return EXIT_FAILED
    except OSError as error:
        log.error("refusing to start: %s", error)
        return EXIT_FAILED
    loop = type(asyncio.get_running_loop()).__module__.split(".", 1)[0]
    log.info("%s; event loop: %s", _ready_message(config), "uvloop" if loop == "uvloop" else "asyncio")
    supervisor = asyncio.create_task(_follow_supervisor(stop)) if worker_index() is not None else None
    await stop.wait()
    if supervisor is not None:
        supervisor.cancel()
    log.info("stopping: no new exports, finishing in-flight ones")
    await bridge.stop(drain_seconds=config.drain_seconds)
    log.info("stopped")
    return EXIT_OK


async def _follow_supervisor(stop: asyncio.Event) -> None:
    """A worker (in a session of its own) stops, draining, once its supervisor is gone (a
    `kill -9`, an OOM kill): no worker is left behind serving on its own."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("the supervisor (pid %d) is gone: stopping this worker", parent)
    stop.set()


async def _check(config: BridgeConfig) -> int:
    sink = build_sink(config)
    await sink.open()
    try:
        verified = await sink.check()
    except SinkError as error:
        print(f"check failed for {config.destination}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await sink.aclose()
    print(f"check passed for {config.destination}:")
    for line in verified:
        print(f"  - {line}")
    return EXIT_OK


def _health(config: BridgeConfig, ready: bool) -> int:
    """GET /healthz (`ready`: /readyz) on the metrics port (plain HTTP), else on the OTLP/HTTP port.
    HTTPS under TLS is not verified: this is the bridge's own loopback answer, and its certificate
    names the public host."""
    on_metrics_port = bool(config.metrics_port)
    host = config.metrics_address if on_metrics_port else config.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    context = None
    if on_metrics_port:
        url = f"http://{host}:{config.metrics_port}/{'readyz' if ready else 'healthz'}"
    else:
        url = f"{'https' if config.tls else 'http'}://{host}:{config.http_port}/{'readyz' if ready else 'healthz'}"
        if config.tls:
            import ssl

            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            healthy = response.status == 200
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read(2000).decode(errors='replace')}", file=sys.stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{url}: {'ok' if healthy else 'not ok'}")
    return EXIT_OK if healthy else EXIT_FAILED


def _run(config: BridgeConfig, coroutine: Any) -> Any:
    """Run `serve` on uvloop's event loop when `--event-loop` asks for it (or, with `auto`, when
    uvloop is installed: `pip install 'otel-s3-bridge[uvloop]'`), else on asyncio's."""
    if config.event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            uvloop = None
        if uvloop is not None:
            return uvloop.run(coroutine)
    return asyncio.run(coroutine)
