"""OTLP/HTTP receiver: `POST /v1/traces` with OTLP/JSON or OTLP/protobuf, gzip or deflate.

A thin adapter: authenticate on headers, cap and inflate the body (bounded, before and after
decompression), parse, hand to `Ingestor`, answer in the request's encoding. Every error is a
`google.rpc.Status` body with the status code of the error table. Must not decode LLM
conventions, store anything itself, or log a header value.
"""

from __future__ import annotations

import logging

from aiohttp import web

from . import otlp
from .compression import check_coding, inflate
from .auth import Authenticator
from .errors import BridgeError, InvalidRequest, MethodNotAllowed, PayloadTooLarge, Unavailable, UnsupportedMediaType
from .ingest import Ingestor, Reservation

log = logging.getLogger("otel_s3_bridge.http")

TRACES_PATH = "/v1/traces"
STOP_GRACE_SECONDS = 10.0
MEDIA_TYPES = {
    "application/json": otlp.JSON,
    "application/x-protobuf": otlp.PROTOBUF,
    "application/protobuf": otlp.PROTOBUF,
    # OpenRouter does not document its Content-Type; accept a missing or text one as JSON.
    "": otlp.JSON,
    "text/plain": otlp.JSON,
}
def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


class HttpReceiver:
    def __init__(self, authenticator: Authenticator, ingestor: Ingestor, max_request_bytes: int) -> None:
        self._auth = authenticator
        self._ingestor = ingestor
        self._limit = max_request_bytes
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", TRACES_PATH, self.handle_traces)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/readyz", self.handle_ready)
        return app

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle_ready(self, request: web.Request) -> web.Response:
        reason = self._ingestor.not_ready_reason()
        body = {"status": "ready" if reason is None else "not ready", **self._ingestor.state()}
        if reason is not None:
            body["reason"] = reason
        return web.json_response(body, status=200 if reason is None else 503)

    async def start(self, host: str, port: int, *, share_port: bool = False) -> None:
        """`share_port`: SO_REUSEPORT, for `--workers N` processes on one port."""
        # auto_decompress=False: aiohttp would inflate without a size bound; `inflate` is bounded.
        self._runner = web.AppRunner(self.application(), access_log=None, auto_decompress=False,
                                     handle_signals=False, shutdown_timeout=STOP_GRACE_SECONDS)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, reuse_port=share_port or None).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle_traces(self, request: web.Request) -> web.Response:
        media_type = _media_type(request.headers.get("Content-Type"))
        encoding = MEDIA_TYPES.get(media_type, otlp.JSON)
        reservation = self._ingestor.inflight.reserve()
        try:
            if request.method not in ("POST", "PUT"):
                raise MethodNotAllowed(f"{request.method} is not supported on {TRACES_PATH}; use POST")
            self._ingestor.check_accepting()
            key_name = self._auth.authenticate(request.headers.get("Authorization"))
            if media_type not in MEDIA_TYPES:
                raise UnsupportedMediaType(
                    f"unsupported Content-Type {media_type!r}; use application/json or application/x-protobuf")
            body = await self._read_body(request, reservation)
            parsed = otlp.parse(body, encoding)
            result = await self._ingestor.export(parsed, key_name=key_name, transport=f"http/{encoding}")
        except BridgeError as error:
            return self._error_response(error, encoding)
        except Exception:  # a bug must not turn into a 500, which OTLP clients never retry
            log.exception("unexpected error while handling an export")
            return self._error_response(Unavailable("internal error; retry later"), encoding)
        finally:
            reservation.release()
        return web.Response(body=otlp.encode_response(result.rejected_spans, result.message, encoding),
                            content_type=otlp.CONTENT_TYPES[encoding])

    async def _read_body(self, request: web.Request, reservation: Reservation) -> bytes:
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        check_coding(coding)  # reject an unsupported coding before reading the body
        if request.content_length is not None and request.content_length > self._limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {self._limit} bytes")
        chunks, size = [], 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > self._limit:
                raise PayloadTooLarge(f"the body is larger than the limit of {self._limit} bytes")
            reservation.add(len(chunk))
            chunks.append(chunk)
        body = inflate(b"".join(chunks), coding, self._limit)
        if len(body) > size:
            reservation.add(len(body) - size)
        return body

    @staticmethod
    def _error_response(error: BridgeError, encoding: str) -> web.Response:
        body = otlp.encode_status(error.grpc_code, error.message, encoding, error.retry_after_seconds)
        return web.Response(status=error.http_status, body=body, headers=error.http_headers(),
                            content_type=otlp.CONTENT_TYPES[encoding])
