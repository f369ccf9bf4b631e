"""OTLP/HTTP receiver: `POST /v1/traces` (also at Langfuse's `/api/public/otel/v1/traces`) and
`POST /v1/logs` (GenAI event records) with OTLP/JSON or OTLP/protobuf, gzip or deflate, and the
`/healthz` and `/readyz` probes.

A thin adapter, in this order: authenticate on headers (before `100 Continue`, before any body
byte is read), check media type and coding, cap and read the body (bounded in size, in the
in-flight budget, and in time between chunks), hand the bytes to `Ingestor`, answer in the
request's encoding. Every error is a `google.rpc.Status` body with the status of the error table;
refusals are counted in rate-limited log lines, never one line each. Connections (header timeout,
cap, malformed HTTP) are `receive.connections`'. Must not decode LLM conventions, store anything
itself, or log a header value.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from .. import metrics
from ..decode import otlp
from ..decode.compression import check_coding
from ..decode.prepare import LOGS, TRACES
from ..errors import BridgeError, MethodNotAllowed, PayloadTooLarge, Unavailable, UnsupportedMediaType
from ..logs import Tally
from . import responses
from .auth import Authenticator
from .connections import ConnectionLimits, GuardedServer
from .ingest import Ingestor, Reservation

log = logging.getLogger("otel_s3_bridge.http")

TRACES_PATH = "/v1/traces"
# Langfuse's exporter posts to {LANGFUSE_BASE_URL}/api/public/otel/v1/traces: one URL to switch.
# OpenRouter posts to the configured URL verbatim, so `https://host/` works as well.
EXPORT_PATHS = {TRACES_PATH: TRACES, "/api/public/otel/v1/traces": TRACES, "/": TRACES, "/v1/logs": LOGS}
STOP_GRACE_SECONDS = 10.0
LISTEN_BACKLOG = 1024
MEDIA_TYPES = {
    "application/json": otlp.JSON,
    "application/x-protobuf": otlp.PROTOBUF,
    "application/protobuf": otlp.PROTOBUF,
    # OpenRouter does not document its Content-Type; accept a missing or text one as JSON.
    "": otlp.JSON,
    "text/plain": otlp.JSON,
}


class BodyTimeout(Unavailable):
    """The client stopped sending its body: 503, so that a client that was only slow retries."""


class NotFound(BridgeError):
    http_status = 404


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class HttpReceiver:
    def __init__(self, authenticator: Authenticator, ingestor: Ingestor, *, max_request_bytes: int,
                 body_timeout_seconds: float, limits: ConnectionLimits) -> None:
        self._auth = authenticator
        self._ingestor = ingestor
        self._limit = max_request_bytes
        self._body_timeout = body_timeout_seconds
        self._limits = limits
        self._runner: web.ServerRunner | None = None
        self.refusals = Tally(log, "refused exports")

    async def start(self, host: str, port: int, *, share_port: bool = False,
                    ssl_context: ssl.SSLContext | None = None) -> None:
        """`share_port`: SO_REUSEPORT, for `--workers N` processes on one port; `ssl_context`: HTTPS."""
        # auto_decompress=False: aiohttp would inflate without a size bound; `compression` is bounded.
        server = GuardedServer(self.handle, self._limits, access_log=None, auto_decompress=False)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=STOP_GRACE_SECONDS)
        await self._runner.setup()
        # asyncio accepts up to `backlog` connections at once, each a descriptor before the cap can
        # close another: never more than the cap, or a burst runs the process out of descriptors.
        backlog = min(self._limits.max_connections, LISTEN_BACKLOG)
        await HandshakeTimedSite(self._runner, host, port, reuse_port=share_port or None, backlog=backlog,
                                 ssl_context=ssl_context, handshake_timeout=self._limits.header_timeout_seconds).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        connection.request_started()
        try:
            signal = EXPORT_PATHS.get(request.path)
            if signal is not None:
                return await self.handle_export(request, signal)
            if request.path == "/healthz":
                return web.json_response({"status": "ok"})
            if request.path == "/readyz":
                return self.handle_ready()
            return self._error_response(NotFound(f"no such path; OTLP traces go to {TRACES_PATH} (or /), GenAI "
                                                 "event logs to /v1/logs"), otlp.JSON)
        finally:
            connection.request_finished()

    def handle_ready(self) -> web.Response:
        reason = self._ingestor.not_ready_reason()
        body = {"status": "ready" if reason is None else "not ready", **self._ingestor.state()}
        if reason is not None:
            body["reason"] = reason
        return web.json_response(body, status=200 if reason is None else 503)

    async def handle_export(self, request: web.BaseRequest, signal: str) -> web.StreamResponse:
        media_type = _media_type(request.headers.get("Content-Type"))
        encoding = MEDIA_TYPES.get(media_type, otlp.JSON)
        reservation = self._ingestor.inflight.reserve()
        try:
            if request.method not in ("POST", "PUT"):
                raise MethodNotAllowed(f"{request.method} is not supported on {request.path[:40]}; use POST")
            self._ingestor.check_accepting()
            principal = self._auth.authenticate(request.headers.get("Authorization"))
            if media_type not in MEDIA_TYPES:
                raise UnsupportedMediaType(
                    f"unsupported Content-Type {media_type[:60]!r}; use application/json or application/x-protobuf")
            coding = request.headers.get("Content-Encoding", "").strip().lower()
            check_coding(coding)  # before reading the body
            body = await self._read_body(request, reservation)
            result = await self._ingestor.export(
                body, reservation, encoding=encoding, coding=coding, principal=principal,
                transport=f"http/{encoding}", max_request_bytes=self._limit, signal=signal)
        except BridgeError as error:
            self.refusals.add(f"{error.http_status} {type(error).__name__}")
            metrics.count_request(f"http/{encoding}", signal, error.http_status)
            return self._error_response(error, encoding, close=not request.content.is_eof())
        except ConnectionError:
            raise  # the client went away mid-request: aiohttp drops the connection quietly
        except Exception:  # a bug must not turn into a 500, which OTLP clients never retry
            log.exception("unexpected error while handling an export")
            metrics.count_request(f"http/{encoding}", signal, Unavailable.http_status)
            return self._error_response(Unavailable("internal error; retry later"), encoding)
        finally:
            reservation.release()
        metrics.count_request(f"http/{encoding}", signal, 200)
        return web.Response(body=responses.encode_response(result.rejected_spans, result.message, encoding,
                                                      logs=signal == LOGS),
                            content_type=otlp.CONTENT_TYPES[encoding])

    async def _read_body(self, request: web.BaseRequest, reservation: Reservation) -> bytes:
        if request.content_length is not None and request.content_length > self._limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {self._limit} bytes")
        if request.content_length:
            reservation.add(request.content_length)  # refused now if it cannot be held
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
            # Only now, after the checks above: a refused client must not be invited to send.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the response proper has not started
        content = request.content
        if content.is_eof():  # the whole body came with the head (most exports): no waiting, no deadline
            body = content.read_nowait()
            if len(body) > self._limit:
                raise PayloadTooLarge(f"the body is larger than the limit of {self._limit} bytes")
            if len(body) > reservation.size:
                reservation.add(len(body) - reservation.size)
            return body
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._body_timeout) as deadline:
                async for chunk in request.content.iter_any():
                    deadline.reschedule(loop.time() + self._body_timeout)
                    size += len(chunk)
                    if size > self._limit:
                        raise PayloadTooLarge(f"the body is larger than the limit of {self._limit} bytes")
                    if size > reservation.size:
                        reservation.add(size - reservation.size)
                    chunks.append(chunk)
        except TimeoutError:
            raise BodyTimeout(f"no body bytes for {self._body_timeout:g} s; send the export again") from None
        return b"".join(chunks)

    @staticmethod
    def _error_response(error: BridgeError, encoding: str, *, close: bool = False) -> web.Response:
        body = responses.encode_status(error.grpc_code, error.message, encoding, error.retry_after_seconds)
        response = web.Response(status=error.http_status, body=body, headers=error.http_headers(),
                                content_type=otlp.CONTENT_TYPES[encoding])
        if close:  # the body was not read: close rather than read and discard it
            response.force_close()
        return response


class HandshakeTimedSite(web.TCPSite):
    """aiohttp's TCP site with a bound on the TLS handshake (asyncio's default is 60 s): a client
    that opens connections and never finishes the handshake holds each for the header timeout."""

    def __init__(self, *args, handshake_timeout: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        if self._ssl_context is None:
            return await super().start()
        await web.BaseSite.start(self)
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout)
