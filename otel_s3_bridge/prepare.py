"""One export request's bytes -> the objects to store: inflate, parse, decode, key, encode.

The one pure path every transport's request takes, in the event loop for small requests or in a
decode process for large ones (`decode_pool`): everything it needs comes in as arguments
(`ExportContext`, picklable), everything it found goes out in a `PreparedExport`, so that where
it runs changes nothing. Memory is bounded by the context: the body by `max_request_bytes` once
inflated, the encoded objects by `max_output_bytes` (beyond: `PayloadTooLarge`, the export can
never be held), and records are encoded one at a time and let go. Raises only `InvalidRequest`
and `PayloadTooLarge`. Must not do I/O or read clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import otlp
from .compression import inflate
from .decode import DecodeResult, iter_records
from .encode import encode_json
from .errors import PayloadTooLarge
from .keys import KeyTemplate, object_key


@dataclass(frozen=True, slots=True)
class ExportContext:
    encoding: str  # otlp.JSON or otlp.PROTOBUF
    coding: str  # Content-Encoding still to undo ("" when the bytes are plain)
    key_name: str | None
    transport: str
    received_at_unix_nano: int
    non_llm_spans: str
    template: KeyTemplate
    prefix: str
    max_request_bytes: int
    max_resource_bytes: int
    max_output_bytes: int


@dataclass(slots=True)
class PreparedExport:
    objects: list[tuple[str, bytes, int]]  # key, body, how many spans the record holds
    input_bytes: int  # the body, inflated
    output_bytes: int
    rejected_spans: int
    problems: list[str]


def prepare_export(body: bytes, context: ExportContext) -> PreparedExport:
    if context.coding:
        body = inflate(body, context.coding, context.max_request_bytes)
    elif len(body) > context.max_request_bytes:
        raise PayloadTooLarge(f"the body is larger than the limit of {context.max_request_bytes} bytes")
    parsed = otlp.parse(body, context.encoding, max_resource_bytes=context.max_resource_bytes)
    decoded = DecodeResult()
    objects: list[tuple[str, bytes, int]] = []
    output_bytes = 0
    for record in iter_records(parsed.spans, decoded, key_name=context.key_name, transport=context.transport,
                               received_at_unix_nano=context.received_at_unix_nano,
                               non_llm_spans=context.non_llm_spans):
        key = object_key(context.template, record, prefix=context.prefix,
                         fallback_unix_nano=context.received_at_unix_nano)
        encoded = encode_json(record)
        output_bytes += len(encoded) + len(key)
        if output_bytes > context.max_output_bytes:
            raise PayloadTooLarge(f"the records decoded from this export exceed {context.max_output_bytes} bytes "
                                  "(--max-inflight-bytes); send smaller batches")
        objects.append((key, encoded, 1 + len(record["observations"])))
    problems = []
    if parsed.first_problem is not None:
        problems.append(f"{parsed.rejected_spans} span(s) rejected; first problem: {parsed.first_problem}")
    problems.extend(parsed.warnings)
    if decoded.dropped_spans:
        problems.append(f"{decoded.dropped_spans} span(s) of traces without LLM attributes dropped "
                        "(--non-llm-spans drop)")
    return PreparedExport(objects, len(body), output_bytes, parsed.rejected_spans + decoded.dropped_spans, problems)
