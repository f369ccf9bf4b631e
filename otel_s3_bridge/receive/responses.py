"""OTLP responses: the export response (with `partial_success` when spans or log records were
rejected) and the `google.rpc.Status` body of a failure (with `RetryInfo` when a retry helps), in
the request's encoding.

Shared by the HTTP and gRPC receivers. Must not decide status codes (that is `errors`).
"""

from __future__ import annotations

from typing import Any

import grpc
import orjson
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from ..decode.otlp import JSON, PROTOBUF

# (response message, partial-success message, its count field, that field in OTLP/JSON)
_RESPONSES = {False: (ExportTraceServiceResponse, ExportTracePartialSuccess, "rejected_spans", "rejectedSpans"),
              True: (ExportLogsServiceResponse, ExportLogsPartialSuccess, "rejected_log_records",
                     "rejectedLogRecords")}


def encode_response(rejected: int, message: str | None, encoding: str, *, logs: bool = False) -> bytes:
    """`ExportTraceServiceResponse` (or `ExportLogsServiceResponse`); partial_success only when
    something was rejected or warned."""
    response_class, partial_class, count_field, json_field = _RESPONSES[logs]
    if encoding == JSON:
        if not rejected and not message:
            return b"{}"
        return orjson.dumps({"partialSuccess": {json_field: str(rejected), "errorMessage": message or ""}})
    response = response_class()
    if rejected or message:
        response.partial_success.CopyFrom(partial_class(**{count_field: rejected}, error_message=message or ""))
    return response.SerializeToString()


def status_message(code: grpc.StatusCode, message: str, retry_after_seconds: int | None) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    if retry_after_seconds is not None:
        detail = AnyMessage()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_seconds)))
        status.details.append(detail)
    return status


def encode_status(code: grpc.StatusCode, message: str, encoding: str,
                  retry_after_seconds: int | None = None) -> bytes:
    """A `google.rpc.Status` body in the request's encoding (OTLP spec, failure responses)."""
    if encoding == PROTOBUF:
        return status_message(code, message, retry_after_seconds).SerializeToString()
    body: dict[str, Any] = {"code": code.value[0], "message": message}
    if retry_after_seconds is not None:
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{retry_after_seconds}s"}]
    return orjson.dumps(body)
