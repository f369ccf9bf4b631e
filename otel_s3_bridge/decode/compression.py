"""Request body inflation: gzip (also many concatenated members) and deflate, never past a limit.

Pure and total: returns the inflated bytes, or raises `InvalidRequest` (bad or unsupported data)
or `PayloadTooLarge` (more than `limit` bytes once inflated). Linear in the input: the compressed
bytes are fed in fixed-size windows, so a body of many tiny gzip members is never copied once per
member. zlib releases the GIL while it inflates, so callers may run this in a thread. Must not
read sockets or know about OTLP.
"""

from __future__ import annotations

import zlib

from ..errors import InvalidRequest, PayloadTooLarge

GZIP_WBITS, ZLIB_WBITS, RAW_DEFLATE_WBITS = 31, 15, -15
CONTENT_CODINGS = {
    "": (), "identity": (),
    "gzip": (GZIP_WBITS,), "x-gzip": (GZIP_WBITS,),
    "deflate": (ZLIB_WBITS, RAW_DEFLATE_WBITS),  # RFC 9110 says zlib; some clients send raw deflate
}
# Compressed bytes handed to zlib at once: what a finished gzip member may leave unconsumed (and
# what is copied to start the next member) is at most this much.
WINDOW_BYTES = 64 * 1024


def check_coding(coding: str) -> None:
    """Raise InvalidRequest for a Content-Encoding the bridge cannot inflate (before reading a body)."""
    if coding not in CONTENT_CODINGS:
        raise InvalidRequest(f"unsupported Content-Encoding {coding[:40]!r}; use gzip, deflate or none")


def inflate(body: bytes, coding: str, limit: int) -> bytes:
    """The decompressed body; `coding` is the request's Content-Encoding, lowercased."""
    check_coding(coding)
    attempts = CONTENT_CODINGS[coding]
    if not attempts:
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        return body
    for attempt, wbits in enumerate(attempts):
        try:
            return _inflate(body, wbits, limit)
        except zlib.error as exc:
            if attempt == len(attempts) - 1:
                raise InvalidRequest(f"the body is not valid {coding} data: {exc}") from None
    raise AssertionError("unreachable")


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    output = bytearray()
    view = memoryview(body)
    position = 0
    inflater, started = zlib.decompressobj(wbits), False
    pending: bytes | memoryview = b""  # compressed bytes the current inflater has not taken yet
    while True:
        if not pending:
            if position >= len(view):
                break
            pending = view[position:position + WINDOW_BYTES]
            position += len(pending)
        started = True
        output += inflater.decompress(pending, limit + 1 - len(output))
        if len(output) > limit:
            raise PayloadTooLarge(f"the decompressed body is larger than the limit of {limit} bytes")
        if inflater.eof:
            if wbits != GZIP_WBITS:
                return bytes(output)  # zlib and raw deflate carry one stream; trailing bytes are ignored
            pending = inflater.unused_data  # the start of the next gzip member, at most one window
            inflater, started = zlib.decompressobj(wbits), False
        else:
            pending = inflater.unconsumed_tail  # only non-empty when the output limit stopped zlib
    if started and not inflater.eof:
        raise InvalidRequest("the compressed body is truncated")
    return bytes(output)
