"""One S3 PutObject at what it must cost: a SigV4 signature (`sigv4`, held equal to botocore's
signer by a test) and one HTTP request on the bridge's own aiohttp session.

aiobotocore spends ~3 ms of CPU per `put_object` on work a sink does not need per object (event
hooks, endpoint rules, parameter validation, request checksums, response parsing). Here the
endpoint is resolved once per bucket, by botocore itself (`base_url`, from the client's own
rules: addressing style, region, custom endpoints), credentials come from aiobotocore's provider
chain (refreshed when they near expiry: environment, profiles, web identity, container and
instance metadata), and each PUT is signed and sent as it is. Its answer is read as S3 answers:
2xx is stored, anything else becomes botocore's `ClientError` with S3's error code, so that the
sink's one classifier decides what is retryable, as it does for the client. Must not retry (the
spool does) nor log credentials.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.exceptions import ClientError, NoCredentialsError
from yarl import URL

from .sigv4 import Signer

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")


class Place(NamedTuple):
    """Where a bucket's objects go: the URL before the key, and the parts of it that are signed."""

    base: str
    host: str  # with its port when not the scheme's default, as the Host header carries it
    path: str
    https: bool


def place(base_url: str) -> Place:
    parts = urlsplit(base_url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname if parts.port in (None, default) else f"{parts.hostname}:{parts.port}"
    return Place(base_url, host, parts.path, parts.scheme == "https")


class PutPath:
    def __init__(self, *, region: str, credentials: Callable[[], Awaitable[Any]],
                 base_url: Callable[[str], Awaitable[str]], connect_timeout: float, read_timeout: float,
                 max_connections: int) -> None:
        self._signer = Signer(region)
        self._credentials = credentials
        self._resolve = base_url
        self._places: dict[str, Place] = {}
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False,
                                              skip_auto_headers=("Accept-Encoding",))

    async def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        """Store the object; raises ClientError (S3 refused it), NoCredentialsError, or what
        aiohttp raises for a connection that failed or timed out."""
        where = self._places.get(bucket)
        if where is None:
            where = self._places[bucket] = place(await self._resolve(bucket))
        credentials = await self._credentials()
        if credentials is None:
            raise NoCredentialsError()
        quoted = quote(key, safe="/~")
        payload = UNSIGNED_PAYLOAD if where.https else hashlib.sha256(body).hexdigest()
        headers = self._signer.put_headers(where.host, where.path + quoted, content_type, payload, credentials,
                                           time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        async with self._session.put(URL(where.base + quoted, encoded=True), data=body, headers=headers) as response:
            if response.status < 300:
                await response.read()
                return
            answer = await response.content.read(64 * 1024)
        code = _ERROR_CODE.search(answer)
        message = _ERROR_MESSAGE.search(answer)
        raise ClientError({"Error": {"Code": code.group(1).decode(errors="replace") if code else str(response.status),
                                     "Message": message.group(1).decode(errors="replace") if message else ""},
                           "ResponseMetadata": {"HTTPStatusCode": response.status}}, "PutObject")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
