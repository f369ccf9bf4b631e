"""One S3 PutObject at what it must cost: a SigV4 signature (`sigv4`, held equal to botocore's
signer by a test) and one HTTP/1.1 request on the bridge's own kept-alive connections
(`s3_connections`).

aiobotocore spends ~3 ms of CPU per `put_object` on work a sink does not need per object (event
hooks, endpoint rules, parameter validation, request checksums, response parsing), and aiohttp's
client ~90 µs more than the request itself. Here the
endpoint is resolved once per bucket, by botocore itself (`base_url`, from the client's own
rules: addressing style, region, custom endpoints), credentials come from aiobotocore's provider
chain (refreshed when they near expiry: environment, profiles, web identity, container and
instance metadata), and each PUT is signed and sent as it is, with the body's CRC-32 as botocore
sends it (unless told `when_required`). Its answer is read as S3 answers:
2xx is stored, anything else becomes botocore's `ClientError` with S3's error code, so that the
sink's one classifier decides what is retryable, as it does for the client: the whole error body is
read (bounded), never a first chunk that may lack its `<Code>`. A redirect is never followed (a
signed request re-sent to another host would leak its session token, and that host's 2xx would
count as stored): it is S3's answer, `PermanentRedirect` or `TemporaryRedirect`, with the region
the bucket says it is in. Each PUT has a deadline that grows with its body, so a peer that stops
reading cannot hold it forever. Must not retry (the spool does) nor log credentials.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

from botocore.exceptions import ClientError, NoCredentialsError

from .s3_connections import Connections, Endpoint
from .sigv4 import Signer

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_REDIRECTS = {301: "PermanentRedirect", 307: "TemporaryRedirect", 302: "Found"}  # codes of bodiless redirects
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")
ERROR_BODY_MAX = 64 * 1024  # an S3 error document is a few hundred bytes
MIN_SEND_BYTES_PER_SECOND = 512 * 1024  # a PUT's deadline: connect and read timeouts, plus its body at this rate
# A larger body is digested in a thread (hashlib and zlib let go of the GIL): the SHA-256 and CRC-32
# of a 16 MiB batch file take ~15 ms, which the event loop would not answer exports for.
DIGEST_IN_THREAD_BYTES = 1024 * 1024


def _digests(body: bytes, https: bool, checksum: bool) -> tuple[str, str | None]:
    """The payload hash SigV4 signs (`UNSIGNED-PAYLOAD` over HTTPS) and the body's CRC-32 (base64)."""
    payload = UNSIGNED_PAYLOAD if https else hashlib.sha256(body).hexdigest()
    return payload, base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode() if checksum else None


class Place(NamedTuple):
    """Where a bucket's objects go: the URL before the key, and the parts of it that are signed."""

    base: str
    host: str  # with its port when not the scheme's default, as the Host header carries it
    path: str
    https: bool
    endpoint: Endpoint  # where to connect


def place(base_url: str) -> Place:
    parts = urlsplit(base_url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    hostname = parts.hostname or ""
    if ":" in hostname:  # an IPv6 literal keeps its brackets in the Host header (and so in the signature)
        hostname = f"[{hostname}]"
    host = hostname if parts.port in (None, default) else f"{hostname}:{parts.port}"
    https = parts.scheme == "https"
    return Place(base_url, host, parts.path, https, Endpoint(parts.hostname or "", parts.port or default or 80, https))


class PutPath:
    def __init__(self, *, region: str, credentials: Callable[[], Awaitable[Any]],
                 base_url: Callable[[str], Awaitable[str]], connect_timeout: float, read_timeout: float,
                 max_connections: int, object_headers: Mapping[str, str] | None = None,
                 ca_bundle: str | None = None, checksums: bool = True) -> None:
        """`ca_bundle`: the certificates an HTTPS endpoint is checked against (the system's when None).
        `checksums`: send each body's CRC-32 (botocore's `request_checksum_calculation`
        `when_supported`, its default); False as with `when_required` (a PUT requires none)."""
        self._signer = Signer(region)
        self._checksums = checksums
        self._object_headers = dict(object_headers or {})
        self._credentials = credentials
        self._resolve = base_url
        self._places: dict[str, Place] = {}
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._max_connections = max_connections
        self._ca_bundle = ca_bundle
        self._connections: Connections | None = None
        self._date: tuple[int, str] = (0, "")  # (a second, its x-amz-date): formatted once a second

    def _amz_date(self) -> str:
        second = int(time.time())
        if second != self._date[0]:
            self._date = (second, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
        return self._date[1]

    async def open(self) -> None:
        self._connections = Connections(connect_timeout=self._connect_timeout, max_connections=self._max_connections,
                                        keep_headers=("x-amz-bucket-region",), body_limit=ERROR_BODY_MAX,
                                        ca_bundle=self._ca_bundle)

    async def put(self, bucket: str, key: str, body: bytes, content_type: str,
                  object_headers: Mapping[str, str] | None = None) -> None:
        """Store the object (with `object_headers`, else the path's own); raises ClientError (S3
        refused it), NoCredentialsError, or ConnectionError / TimeoutError (the connection failed or
        the deadline passed)."""
        where = self._places.get(bucket)
        if where is None:
            where = self._places[bucket] = place(await self._resolve(bucket))
        credentials = await self._credentials()
        if credentials is None:
            raise NoCredentialsError()
        path = where.path + quote(key, safe="/~")
        payload, crc = (await asyncio.to_thread(_digests, body, where.https, self._checksums)
                        if len(body) > DIGEST_IN_THREAD_BYTES else _digests(body, where.https, self._checksums))
        extra = self._object_headers if object_headers is None else object_headers
        if crc is not None:
            # S3 checks the body against it (and keeps it), and a bucket under Object Lock's default
            # retention refuses a PUT without one; AWS's SDKs send it the same way.
            extra = {**extra, "x-amz-checksum-crc32": crc, "x-amz-sdk-checksum-algorithm": "CRC32"}
        headers = self._signer.put_headers(where.host, path, content_type, payload, credentials,
                                           self._amz_date(), extra)
        head = request_head(where.host, path, len(body), headers)
        deadline = self._connect_timeout + self._read_timeout + len(body) / MIN_SEND_BYTES_PER_SECOND
        answer = await self._connections.request(where.endpoint, head, body,
                                                 deadline=asyncio.get_running_loop().time() + deadline,
                                                 read_timeout=self._read_timeout)
        if answer.status < 300:
            return
        code = _ERROR_CODE.search(answer.body)
        message = _ERROR_MESSAGE.search(answer.body)
        error = {"Code": code.group(1).decode(errors="replace") if code else _REDIRECTS.get(answer.status,
                                                                                            str(answer.status)),
                 "Message": message.group(1).decode(errors="replace") if message else ""}
        region = answer.headers.get("x-amz-bucket-region")
        if region:
            error["Region"] = region
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": answer.status}}, "PutObject")

    async def aclose(self) -> None:
        if self._connections is not None:
            self._connections.close()
            self._connections = None


def request_head(host: str, path: str, length: int, headers: Mapping[str, str]) -> bytes:
    """The request line and headers of `PUT path` with a body of `length` bytes. A header value
    with a line break would smuggle a header (or a request) in: refused, as aiohttp refuses it."""
    lines = [f"PUT {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {length}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"a line break in the value of header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")
