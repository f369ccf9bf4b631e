"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

The method is registered with no request deserializer, so the servicer gets the raw message
bytes: it authenticates on metadata first, then parses with the same `otlp.parse_protobuf` the
HTTP receiver uses. gzip is handled by gRPC itself; the message size cap is gRPC's
`max_receive_message_length` (RESOURCE_EXHAUSTED). Retryable errors carry RetryInfo. Must not
decode LLM conventions or store anything itself.
"""

from __future__ import annotations

import logging

import grpc

from . import otlp
from .auth import Authenticator
from .errors import BridgeError, Unavailable
from .ingest import Ingestor

log = logging.getLogger("otel_s3_bridge.grpc")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcReceiver:
    def __init__(self, authenticator: Authenticator, ingestor: Ingestor, max_request_bytes: int) -> None:
        self._auth = authenticator
        self._ingestor = ingestor
        self._limit = max_request_bytes
        self._server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int, *, share_port: bool = False) -> None:
        # SO_REUSEPORT only for `--workers N`: otherwise a second process on the same port must
        # fail loudly, not share it.
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", self._limit),
                                          ("grpc.so_reuseport", int(share_port))])
        handlers = {"Export": grpc.unary_unary_rpc_method_handler(self.export)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        if hasattr(server, "add_registered_method_handlers"):  # grpcio >= 1.62: no per-call lookup
            server.add_registered_method_handlers(SERVICE, handlers)
        try:
            server.add_insecure_port(grpc_address(host, port))
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {grpc_address(host, port)}: {exc}") from None
        await server.start()
        self._server = server

    async def stop(self, grace_seconds: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_seconds)

    async def export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        reservation = self._ingestor.inflight.reserve()
        try:
            self._ingestor.check_accepting()
            metadata = dict(context.invocation_metadata() or ())
            key_name = self._auth.authenticate(metadata.get("authorization"))
            reservation.add(len(request))
            parsed = otlp.parse_protobuf(request)
            result = await self._ingestor.export(parsed, key_name=key_name, transport="grpc")
        except BridgeError as error:
            await self._abort(context, error)
        except Exception:  # never INTERNAL/UNKNOWN for what a retry could fix
            log.exception("unexpected error while handling a gRPC export")
            await self._abort(context, Unavailable("internal error; retry later"))
        finally:
            reservation.release()
        return otlp.encode_response(result.rejected_spans, result.message, otlp.PROTOBUF)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, error: BridgeError) -> None:
        trailing: tuple[tuple[str, bytes], ...] = ()
        if error.retry_after_seconds is not None:
            status = otlp.status_message(error.grpc_code, error.message, error.retry_after_seconds)
            trailing = (("grpc-status-details-bin", status.SerializeToString()),)
        await context.abort(error.grpc_code, error.message, trailing_metadata=trailing)
