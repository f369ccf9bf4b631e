"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, and
`opentelemetry.proto.collector.logs.v1.LogsService/Export` for GenAI event records.

Nothing of a call's message is read before its metadata is checked: `Export` is registered as a
stream-unary method with no deserializer (the wire is the same for a unary client), so the
handler decides on the metadata first (shutting down, token, concurrent calls, room in the
in-flight budget for the largest allowed message) and only then reads the one message, within
the body timeout. Measured here: 24 concurrent unauthenticated 60 MiB calls took the server to
2.2 GB with a unary handler, 143 MB with an interceptor refusing them, 50 MB this way. The bytes
go to the same `Ingestor.export` as HTTP's (gzip is gRPC's own). The server caps message size
(RESOURCE_EXHAUSTED), connections, streams per connection, the handshake time and idle time.
Retryable errors carry RetryInfo. Must not decode LLM conventions or store anything itself.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from .. import metrics
from ..decode import otlp
from ..decode.prepare import LOGS, TRACES
from ..errors import BridgeError, Unavailable
from ..logs import Tally
from . import responses
from .auth import Authenticator
from .ingest import Ingestor

log = logging.getLogger("otel_s3_bridge.grpc")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
STREAMS_PER_CONNECTION = 100
RECEIVE_WINDOW_BYTES = 1 << 20  # what the transport takes in of a call before the handler reads it


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcReceiver:
    def __init__(self, authenticator: Authenticator, ingestor: Ingestor, *, max_message_bytes: int,
                 max_concurrent_rpcs: int, max_connections: int, header_timeout_seconds: float,
                 body_timeout_seconds: float, keepalive_timeout_seconds: float) -> None:
        self._auth = authenticator
        self._ingestor = ingestor
        self._limit = max_message_bytes
        self._max_calls = max_concurrent_rpcs
        self._max_connections = max_connections
        self._handshake_ms = int(header_timeout_seconds * 1000)
        self._body_timeout = body_timeout_seconds
        self._idle_ms = int(keepalive_timeout_seconds * 1000)
        self._calls = 0
        self._server: grpc.aio.Server | None = None
        self.refusals = Tally(log, "refused gRPC exports")

    async def start(self, host: str, port: int, *, share_port: bool = False,
                    credentials: grpc.ServerCredentials | None = None) -> None:
        # SO_REUSEPORT only for `--workers N`: otherwise a second process on the same port must
        # fail loudly, not share it.
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self._limit),
            ("grpc.max_allowed_incoming_connections", self._max_connections),
            # Per connection, above the cap on calls: a call beyond the cap must reach the handler to be
            # told to retry, not wait unseen in the client for a free stream.
            ("grpc.max_concurrent_streams", max(STREAMS_PER_CONNECTION, self._max_calls + 1)),
            ("grpc.server_handshake_timeout_ms", self._handshake_ms),
            ("grpc.max_connection_idle_ms", self._idle_ms),
            ("grpc.so_reuseport", int(share_port)),
            # Fixed receive windows: with bandwidth probing they grew while a busy loop had not yet
            # refused an unauthenticated call, and its bytes piled up in the transport (tens of MB).
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", RECEIVE_WINDOW_BYTES),
        ])
        async def export_logs(requests: object, context: grpc.aio.ServicerContext) -> bytes:
            return await self.export(requests, context, signal=LOGS)

        for service, export in ((SERVICE, self.export), (LOGS_SERVICE, export_logs)):
            handlers = {"Export": grpc.stream_unary_rpc_method_handler(export)}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
            if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.62: no per-call lookup
                server.add_registered_method_handlers(service, handlers)
        try:
            if credentials is None:
                server.add_insecure_port(grpc_address(host, port))
            else:
                server.add_secure_port(grpc_address(host, port), credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {grpc_address(host, port)}: {exc}") from None
        await server.start()
        self._server = server

    async def stop(self, grace_seconds: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_seconds)

    async def export(self, requests: object, context: grpc.aio.ServicerContext, signal: str = TRACES) -> bytes:
        reservation = self._ingestor.inflight.reserve()
        counted = False
        try:
            self._ingestor.check_accepting()
            metadata = dict(context.invocation_metadata() or ())
            principal = self._auth.authenticate(metadata.get("authorization"))
            if self._calls >= self._max_calls:
                raise Unavailable(f"{self._calls} gRPC exports are in progress (--grpc-max-concurrent-rpcs); "
                                  "retry later")
            self._calls, counted = self._calls + 1, True
            reservation.add(self._limit)  # room for the largest message, before reading it
            message = await self._read_message(context)
            reservation.shrink_to(len(message))
            result = await self._ingestor.export(message, reservation, encoding=otlp.PROTOBUF, coding="",
                                                 principal=principal, transport="grpc",
                                                 max_request_bytes=self._limit, signal=signal)
        except BridgeError as error:
            self.refusals.add(f"{error.grpc_code.name} {type(error).__name__}")
            metrics.count_request("grpc", signal, error.grpc_code.name)
            await self._abort(context, error)
        except Exception:  # never INTERNAL/UNKNOWN for what a retry could fix
            log.exception("unexpected error while handling a gRPC export")
            metrics.count_request("grpc", signal, Unavailable.grpc_code.name)
            await self._abort(context, Unavailable("internal error; retry later"))
        finally:
            reservation.release()
            if counted:
                self._calls -= 1
        metrics.count_request("grpc", signal, "OK")
        return responses.encode_response(result.rejected_spans, result.message, otlp.PROTOBUF, logs=signal == LOGS)

    async def _read_message(self, context: grpc.aio.ServicerContext) -> bytes:
        try:
            message = await asyncio.wait_for(context.read(), self._body_timeout)
        except TimeoutError:
            raise Unavailable(f"no message within {self._body_timeout:g} s; send the export again") from None
        if message is grpc.aio.EOF:
            return b""
        return message

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, error: BridgeError) -> None:
        trailing: tuple[tuple[str, bytes], ...] = ()
        if error.retry_after_seconds is not None:
            status = responses.status_message(error.grpc_code, error.message, error.retry_after_seconds)
            trailing = (("grpc-status-details-bin", status.SerializeToString()),)
        await context.abort(error.grpc_code, error.message, trailing_metadata=trailing)
