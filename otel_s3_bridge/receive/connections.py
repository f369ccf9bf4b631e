"""Connections of the OTLP/HTTP receiver: timeouts, a cap, and protocol errors that leak nothing.

aiohttp's low-level server, with a request handler (one per connection) that adds what aiohttp
does not have:
- a header timeout: from a connection's first byte (or the first byte of its next request) until
  the request's headers are complete; a connection that sends nothing, or headers byte by byte,
  is closed when it runs out (idle connections between requests: aiohttp's keep-alive timeout);
- a connection cap: at the cap, the oldest connection that is not in a request is closed to make
  room (slow or idle connections go first, a client with a request in flight keeps its own);
  when every connection is busy, the new one is closed at once;
- HTTP-level errors (a malformed request line or header, which aiohttp answers itself) get a
  `google.rpc.Status` body that names no header and never echoes one, and are counted in one
  rate-limited log line instead of a traceback each.
The body timeout is the receiver's (it reads the body). Must not know OTLP.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..logs import Tally

log = logging.getLogger("otel_s3_bridge.http")

BAD_REQUEST_STATUS = 3  # google.rpc.Code INVALID_ARGUMENT
# After refusing a request whose body was not read, aiohttp reads and discards the rest for this
# long (so that the client sees the answer rather than a reset), then closes: short, or every
# refused slow client would hold its connection this long (aiohttp's default is 10 s).
LINGER_SECONDS = 2.0
UNAVAILABLE_STATUS = 14


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_seconds: float
    keepalive_timeout_seconds: float
    max_connections: int


class ConnectionGuard:
    """The open connections of one server, oldest first, and the cap on them."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.connections: collections.OrderedDict[GuardedHandler, None] = collections.OrderedDict()
        self.refused = Tally(log, "connection cap reached: closed connections", level=logging.WARNING)
        self.malformed = Tally(log, "refused malformed HTTP requests")
        self.timed_out = Tally(log, "closed slow connections")

    def admit(self, handler: GuardedHandler) -> bool:
        if len(self.connections) >= self.limits.max_connections:
            idle = next((other for other in self.connections if not other.busy), None)
            if idle is None:
                self.refused.add("every connection busy: a new one refused")
                return False
            self.refused.add("an idle connection closed for a new one")
            del self.connections[idle]  # now: its close completes in a later turn of the loop
            idle.close_now()
        self.connections[handler] = None
        return True

    def forget(self, handler: GuardedHandler) -> None:
        self.connections.pop(handler, None)


class GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with the header timeout and the connection cap."""

    def __init__(self, manager: GuardedServer, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._header_timer: asyncio.TimerHandle | None = None
        self.busy = False  # a request's headers are in, its handler runs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.close_now()
            return
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if not self.busy and self._header_timer is None:
            self._start_header_timer()  # the first byte of the next request on this connection
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        self._guard.forget(self)
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._cancel_header_timer()
        self.busy = True

    def request_finished(self) -> None:
        self.busy = False

    def close_now(self) -> None:
        self._cancel_header_timer()
        self.force_close()

    def _start_header_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._guard.limits.header_timeout_seconds, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.busy:
            timeout = self._guard.limits.header_timeout_seconds
            self._guard.timed_out.add(f"no complete request headers within {timeout:g} s")
            self.force_close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp answers protocol errors itself, echoing the offending line (a header with its
        # token, say) in the body and logging it with a traceback: neither, here.
        if status == 400:
            self._guard.malformed.add(type(exc).__name__ if exc is not None else "bad request")
            body = {"code": BAD_REQUEST_STATUS, "message": "malformed HTTP request"}
        else:  # an unexpected failure: retryable, never a 500 (OTLP clients drop data on 500)
            if exc is not None and not isinstance(exc, ConnectionError):  # a client gone is no error
                log.error("unexpected error while handling a request", exc_info=exc)
            status, body = 503, {"code": UNAVAILABLE_STATUS, "message": "internal error; retry later"}
        response = web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                                headers={"Retry-After": "5"} if status == 503 else None)
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making `GuardedHandler`s."""

    def __init__(self, handler: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        self._handler_kwargs = {"keepalive_timeout": limits.keepalive_timeout_seconds,
                                "lingering_time": LINGER_SECONDS, **kwargs}
        super().__init__(handler, **self._handler_kwargs)
        self._handler_loop = asyncio.get_running_loop()
        self.guard = ConnectionGuard(limits)

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, self.guard, loop=self._handler_loop, **self._handler_kwargs)
