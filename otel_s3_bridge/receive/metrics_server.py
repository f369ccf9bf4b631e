"""The Prometheus endpoint: `GET /metrics` on `--metrics-host`:`--metrics-port`, and the probes
`/healthz` and `/readyz` there too (plain HTTP: probes need no certificate when the receivers
serve TLS or mutual TLS).

Its own small aiohttp server with the receivers' connection limits (a cap, header and idle
timeouts), since it may listen where the internet reaches. Before each scrape the bridge's state
gauges are refreshed (`refresh`); the exposition is rendered off the event loop (with `--workers N`
it reads every worker's files). Must not count anything itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from .. import metrics
from .connections import ConnectionLimits, GuardedServer

METRICS_PATH = "/metrics"
MAX_CONNECTIONS = 64
STOP_GRACE_SECONDS = 2.0


class MetricsServer:
    def __init__(self, refresh: Callable[[], None], readiness: Callable[[], web.Response],
                 limits: ConnectionLimits) -> None:
        self._refresh = refresh
        self._readiness = readiness
        self._limits = ConnectionLimits(limits.header_timeout_seconds, limits.keepalive_timeout_seconds,
                                        min(limits.max_connections, MAX_CONNECTIONS))
        self._runner: web.ServerRunner | None = None

    async def start(self, host: str, port: int) -> None:
        server = GuardedServer(self.handle, self._limits, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=STOP_GRACE_SECONDS)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, backlog=self._limits.max_connections).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.BaseRequest) -> web.Response:
        request.protocol.request_started()
        try:
            if request.path == "/healthz":
                return web.json_response({"status": "ok"})
            if request.path == "/readyz":
                return self._readiness()
            if request.path != METRICS_PATH:
                return web.Response(status=404, text=f"metrics are at {METRICS_PATH}\n")
            if request.method not in ("GET", "HEAD"):
                return web.Response(status=405, text="use GET\n", headers={"Allow": "GET, HEAD"})
            self._refresh()
            body = await asyncio.to_thread(metrics.scrape)
            return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
        finally:
            request.protocol.request_finished()
