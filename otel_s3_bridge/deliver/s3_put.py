"""One S3 PutObject at what it must cost: a SigV4 signature (`sigv4`, held equal to botocore's
signer by a test) and one HTTP request on the bridge's own aiohttp session.

aiobotocore spends ~3 ms of CPU per `put_object` on work a sink does not need per object (event
hooks, endpoint rules, parameter validation, request checksums, response parsing). Here the
endpoint is resolved once per bucket, by botocore itself (`base_url`, from the client's own
rules: addressing style, region, custom endpoints), credentials come from aiobotocore's provider
chain (refreshed when they near expiry: environment, profiles, web identity, container and
instance metadata), and each PUT is signed and sent as it is. Its answer is read as S3 answers:
2xx is stored, anything else becomes botocore's `ClientError` with S3's error code, so that the
sink's one classifier decides what is retryable, as it does for the client: the whole error body is
read (bounded), never a first chunk that may lack its `<Code>`. A redirect is never followed (a
signed request re-sent to another host would leak its session token, and that host's 2xx would
count as stored): it is S3's answer, `PermanentRedirect` or `TemporaryRedirect`, with the region
the bucket says it is in. Each PUT has a deadline that grows with its body, so a peer that stops
reading cannot hold it forever. Must not retry (the spool does) nor log credentials.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.exceptions import ClientError, NoCredentialsError
from yarl import URL

from .sigv4 import Signer

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_REDIRECTS = {301: "PermanentRedirect", 307: "TemporaryRedirect", 302: "Found"}  # codes of bodiless redirects
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")
ERROR_BODY_MAX = 64 * 1024  # an S3 error document is a few hundred bytes
MIN_SEND_BYTES_PER_SECOND = 512 * 1024  # a PUT's deadline: connect and read timeouts, plus its body at this rate


class Place(NamedTuple):
    """Where a bucket's objects go: the URL before the key, and the parts of it that are signed."""

    base: str
    host: str  # with its port when not the scheme's default, as the Host header carries it
    path: str
    https: bool


def place(base_url: str) -> Place:
    parts = urlsplit(base_url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    hostname = parts.hostname or ""
    if ":" in hostname:  # an IPv6 literal keeps its brackets in the Host header (and so in the signature)
        hostname = f"[{hostname}]"
    host = hostname if parts.port in (None, default) else f"{hostname}:{parts.port}"
    return Place(base_url, host, parts.path, parts.scheme == "https")


class PutPath:
    def __init__(self, *, region: str, credentials: Callable[[], Awaitable[Any]],
                 base_url: Callable[[str], Awaitable[str]], connect_timeout: float, read_timeout: float,
                 max_connections: int, object_headers: Mapping[str, str] | None = None) -> None:
        self._signer = Signer(region)
        self._object_headers = dict(object_headers or {})
        self._credentials = credentials
        self._resolve = base_url
        self._places: dict[str, Place] = {}
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False,
                                              skip_auto_headers=("Accept-Encoding",))

    async def put(self, bucket: str, key: str, body: bytes, content_type: str,
                  object_headers: Mapping[str, str] | None = None) -> None:
        """Store the object (with `object_headers`, else the path's own); raises ClientError (S3
        refused it), NoCredentialsError, or what aiohttp raises for a connection that failed or timed out."""
        where = self._places.get(bucket)
        if where is None:
            where = self._places[bucket] = place(await self._resolve(bucket))
        credentials = await self._credentials()
        if credentials is None:
            raise NoCredentialsError()
        quoted = quote(key, safe="/~")
        payload = UNSIGNED_PAYLOAD if where.https else hashlib.sha256(body).hexdigest()
        headers = self._signer.put_headers(where.host, where.path + quoted, content_type, payload, credentials,
                                           time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                                           self._object_headers if object_headers is None else object_headers)
        deadline = self._connect_timeout + self._read_timeout + len(body) / MIN_SEND_BYTES_PER_SECOND
        timeout = aiohttp.ClientTimeout(total=deadline, connect=self._connect_timeout, sock_read=self._read_timeout)
        async with self._session.put(URL(where.base + quoted, encoded=True), data=body, headers=headers,
                                     allow_redirects=False, timeout=timeout) as response:
            if response.status < 300:
                await response.read()
                return
            answer = b""
            while len(answer) < ERROR_BODY_MAX:  # `read(n)` may answer a first chunk only
                chunk = await response.content.read(ERROR_BODY_MAX - len(answer))
                if not chunk:
                    break
                answer += chunk
            region = response.headers.get("x-amz-bucket-region")
        code = _ERROR_CODE.search(answer)
        message = _ERROR_MESSAGE.search(answer)
        error = {"Code": code.group(1).decode(errors="replace") if code else _REDIRECTS.get(response.status,
                                                                                            str(response.status)),
                 "Message": message.group(1).decode(errors="replace") if message else ""}
        if region:
            error["Region"] = region
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": response.status}}, "PutObject")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
