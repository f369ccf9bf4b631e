"""OTLP trace export requests in either encoding -> the same `ParsedRequest` of `Span`s
(`otlp_json`, and for protobuf `otlp_wire` or `otlp_protobuf`), the one normalised form every
transport hands to `ingest`.

Must not know LLM conventions (that is `records`) nor touch sockets.
"""

from __future__ import annotations

from .. import BUILD
from . import otlp_protobuf, otlp_wire
from .otlp_json import parse_json
from .spans import MAX_RESOURCE_BYTES, ParsedRequest, Span

JSON = "json"
PROTOBUF = "protobuf"
CONTENT_TYPES = {JSON: "application/json", PROTOBUF: "application/x-protobuf"}

__all__ = ["CONTENT_TYPES", "JSON", "PROTOBUF", "ParsedRequest", "Span", "parse", "parse_json", "parse_protobuf"]

# The two protobuf readers give the same spans (tests/test_totality.py compares them); each build
# takes its faster one. Compiled, reading the wire format directly is ~2.6x faster than going
# through the protobuf runtime's message objects; as interpreted Python it is ~2x slower.
parse_protobuf = otlp_wire.parse_wire if BUILD == "compiled" else otlp_protobuf.parse_protobuf


def parse(body: bytes, encoding: str, *, max_resource_bytes: int = MAX_RESOURCE_BYTES) -> ParsedRequest:
    if encoding == JSON:
        return parse_json(body, max_resource_bytes=max_resource_bytes)
    return parse_protobuf(body, max_resource_bytes=max_resource_bytes)
