"""The error taxonomy and its one mapping to HTTP status and gRPC code (docs/architecture.md §4).

Each request-facing error carries how a transport must answer it. Nothing here does I/O or
formats a response body; receivers do that. Messages must never contain a token.
"""

from __future__ import annotations

import grpc

# How long a client should wait before retrying when the bridge cannot take data right now.
RETRY_AFTER_SECONDS = 5


class BridgeError(Exception):
    """A request the bridge answers with an error status instead of success."""

    http_status: int = 400
    grpc_code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    retry_after_seconds: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def http_headers(self) -> dict[str, str]:
        if self.retry_after_seconds is None:
            return {}
        return {"Retry-After": str(self.retry_after_seconds)}


class InvalidRequest(BridgeError):
    """Undecodable body or an unsupported Content-Encoding: 400, never retried."""


class Unauthenticated(BridgeError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED

    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="otel-s3-bridge"'}


class PayloadTooLarge(BridgeError):
    """Body over the limit, before or after decompression: 413 / RESOURCE_EXHAUSTED without RetryInfo."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RecordsTooLarge(PayloadTooLarge):
    """The records one piece of an export decodes to exceed --max-decoded-bytes: the export is then
    taken a chunk of whole traces at a time; only a single chunk (a trace) this large is refused."""


class UnsupportedMediaType(BridgeError):
    http_status = 415


class MethodNotAllowed(BridgeError):
    http_status = 405
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(BridgeError):
    """The bridge cannot take the data right now (sink down, shutting down): retry later."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    retry_after_seconds = RETRY_AFTER_SECONDS


class RateLimited(BridgeError):
    """The key sends more than its policy's rates: 429 + Retry-After / RESOURCE_EXHAUSTED + RetryInfo."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class SinkError(Exception):
    """A write to the object store failed; `retryable` is the one classification of the cause."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class ConfigError(Exception):
    """Start-up configuration is invalid; `problems` names every bad field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
