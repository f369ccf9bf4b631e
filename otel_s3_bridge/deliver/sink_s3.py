"""S3-compatible sink (AWS S3, Cloudflare R2, MinIO, GCS interop).

The only module that imports aiobotocore. One client is created in `open()` and kept for what it
does well: the credential chain (with refresh), endpoint rules, `check`'s delete, and multipart
uploads of objects above --s3-multipart-bytes (the batch layout's large files). Objects are put
by `s3_put` (signed and sent by the bridge, the endpoint resolved once per bucket by the client),
or by the client's `put_object` with `--s3-put-path aiobotocore` or when the client's requests go
through a proxy (which the direct path does not speak to). Every failure is classified once,
here, into a retryable or permanent `SinkError` with a plain diagnosis. Must not log credentials
or object bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.httpsession import ProxyConfiguration
from botocore.utils import get_environ_proxies

from ..config import BridgeConfig
from ..errors import SinkError
from ..lake.object_controls import ObjectControls
from .s3_put import PutPath

log = logging.getLogger("otel_s3_bridge.s3")
MULTIPART_PARTS_AT_ONCE = 4
RETRYABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                   "ServiceUnavailable", "ExpiredToken", "RequestTimeTooSkewed", "OperationAborted",
                   "TemporaryRedirect",  # a new bucket's DNS not yet everywhere: S3 says to retry
                   "BadDigest", "XAmzContentSHA256Mismatch"}  # the body changed on the way: send it again


def _freeze_user_agent(client: Any) -> None:
    """botocore rebuilds the User-Agent string twice per request (to tag per-request features):
    measured here as the costliest single step of a PutObject (~190 µs of ~980 µs of CPU). One
    string per client is enough for a sink; skipped silently if botocore changes shape."""
    creator = getattr(client, "_user_agent_creator", None)
    if creator is not None and callable(getattr(creator, "to_string", None)):
        user_agent = creator.to_string()
        creator.to_string = lambda: user_agent


async def _no_credentials() -> None:
    return None


def _through_a_proxy(client: Any) -> bool:
    """Whether botocore sends this client's requests through a proxy: HTTP_PROXY or HTTPS_PROXY
    (by the endpoint's scheme) unless NO_PROXY names the endpoint, decided as the client decides it."""
    url = client.meta.endpoint_url
    return ProxyConfiguration(proxies=get_environ_proxies(url)).proxy_url_for(url) is not None


class S3Sink:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        self.description = config.destination
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._puts: PutPath | None = None  # the direct path (--s3-put-path direct)
        self._checksums = True  # each body's CRC-32 is sent: botocore's request_checksum_calculation, read in open()
        # --s3-sse, --s3-storage-class, --s3-tags: of objects whose entries carry no controls of their own
        # (the connection check's probe, entries spooled before controls were kept per entry)
        self._default_controls = config.object_controls.render(None, None)
        self._object_arguments = self._default_controls.put_arguments()
        self._controls: dict[bytes, tuple[dict[str, str], dict[str, str]]] = {}  # an entry's: (headers, arguments)

    async def open(self) -> None:
        client_config = AioConfig(
            s3={"addressing_style": self.config.addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=min(5, self.config.s3_timeout_seconds),
            read_timeout=self.config.s3_timeout_seconds,
            max_pool_connections=64,
        )
        session = get_session()
        self._client = await self._stack.enter_async_context(session.create_client(
            "s3", region_name=self.config.region, endpoint_url=self.config.endpoint_url, config=client_config))
        _freeze_user_agent(self._client)
        self._checksums = self._client.meta.config.request_checksum_calculation != "when_required"
        if self.config.s3_put_path != "direct":
            return
        if _through_a_proxy(self._client):  # never logged: a proxy's URL may hold its password
            log.info("S3 requests go through a proxy (HTTP_PROXY/HTTPS_PROXY): objects are put by aiobotocore, "
                     "which speaks to proxies (the direct path does not)")
            return
        credentials = await session.get_credentials()
        self._puts = PutPath(region=self._client.meta.region_name or "us-east-1",
                             credentials=credentials.get_frozen_credentials if credentials else _no_credentials,
                             base_url=self._base_url, connect_timeout=min(5, self.config.s3_timeout_seconds),
                             read_timeout=self.config.s3_timeout_seconds, max_connections=64,
                             object_headers=self._default_controls.headers(),
                             ca_bundle=session.get_config_variable("ca_bundle"),  # AWS_CA_BUNDLE, as botocore
                             checksums=self._checksums)
        await self._puts.open()
        self._stack.push_async_callback(self._puts.aclose)

    async def _base_url(self, bucket: str) -> str:
        """Where the bucket's objects are, `.../` before the key, as the client's own endpoint rules
        place them (addressing style, region, custom endpoint): asked once per bucket."""
        url = await self._client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "k"},
                                                        ExpiresIn=60)
        return url.split("?", 1)[0][:-1]

    async def put(self, key: str, body: bytes, content_type: str, *, bucket: str | None = None,
                  controls: bytes = b"") -> None:
        bucket = bucket or self.bucket
        headers, arguments = self._controls_of(controls) if controls else (None, self._object_arguments)
        try:
            if len(body) > self.config.s3_multipart_bytes:
                await self._put_multipart(bucket, key, memoryview(body), content_type, arguments)
            elif self._puts is not None:
                await self._puts.put(bucket, key, body, content_type, headers)
            else:
                await self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                                              **arguments)
        except Exception as exc:  # every failure is classified; none may escape as a 500
            raise self.classify(exc, bucket) from exc

    def _controls_of(self, encoded: bytes) -> tuple[dict[str, str], dict[str, str]]:
        """An entry's object controls as headers and as aiobotocore arguments; entries share a few
        (one per key and instrumentation), so each is decoded once."""
        known = self._controls.get(encoded)
        if known is None:
            if len(self._controls) >= 1024:
                self._controls.clear()
            controls = ObjectControls.decode(encoded)
            known = self._controls[encoded] = (controls.headers(), controls.put_arguments())
        return known

    async def _put_multipart(self, bucket: str, key: str, body: memoryview, content_type: str,
                             arguments: dict[str, str]) -> None:
        """One object in parts of --s3-multipart-bytes, a few at once; an upload that fails is
        aborted, so that no parts are left to be billed."""
        size = self.config.s3_multipart_bytes
        created = await self._client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type,
                                                             **arguments)
        upload_id = created["UploadId"]
        slots = asyncio.Semaphore(MULTIPART_PARTS_AT_ONCE)

        async def part(number: int) -> dict[str, Any]:
            async with slots:
                chunk = body[(number - 1) * size:number * size]
                answer = await self._client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                                        PartNumber=number, Body=bytes(chunk))
                return {"PartNumber": number, "ETag": answer["ETag"]}

        try:
            parts = await asyncio.gather(*(part(number) for number in range(1, -(-len(body) // size) + 1)))
            await self._client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                         MultipartUpload={"Parts": list(parts)})
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    async def check(self) -> list[str]:
        """Write and delete a probe object in the bucket and in every key's own bucket, with the
        object controls a key writing there uses (a bucket policy may demand encryption)."""
        verified = [f"endpoint {self.config.endpoint_url or 'AWS S3'} reachable and credentials accepted"]
        owners = {self.bucket: None, **{bucket: name for name, bucket in self.config.routed_buckets.items()}}
        for bucket, owner in owners.items():
            probe = f"{self.config.prefix}/.otel-s3-bridge-check-{uuid.uuid4().hex}.json"
            controls = self.config.object_controls_of(owner).render(owner, "check")
            await self.put(probe, b'{"otel-s3-bridge":"connection check"}', "application/json", bucket=bucket,
                           controls=controls.encode())
            verified.append(f"s3:PutObject on s3://{bucket}/{probe}")
            try:
                await self._client.delete_object(Bucket=bucket, Key=probe)
                verified.append("s3:DeleteObject of the probe object")
            except Exception as exc:
                verified.append(f"note: the probe object could not be deleted ({self.classify(exc, bucket).message}); "
                                "the bridge itself needs only s3:PutObject")
        return verified

    async def aclose(self) -> None:
        await self._stack.aclose()

    def _checksum_hint(self, message: str) -> str:
        """What to change when a refusal names a checksum: the header is sent as botocore sends it."""
        if "checksum" not in message.lower():
            return ""
        if not self._checksums:
            return ("; the bucket asks for a checksum of each body (Object Lock's default retention does): unset "
                    "AWS_REQUEST_CHECKSUM_CALCULATION=when_required (botocore's default sends one)")
        return ("; it may not take the body's x-amz-checksum-crc32 header, which the bridge sends as botocore "
                "does: set AWS_REQUEST_CHECKSUM_CALCULATION=when_required to leave it out")

    def classify(self, exc: BaseException, bucket: str | None = None) -> SinkError:
        """The one place that decides whether an S3 failure is worth retrying, with a diagnosis."""
        bucket = bucket or self.bucket
        where = self.config.endpoint_url or "AWS S3"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code == "NoSuchBucket" or (status == 404 and code in ("", "404", "NotFound")):
                return SinkError(f"bucket {bucket!r} does not exist at {where}", retryable=False)
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "InvalidClientTokenId"):
                return SinkError(f"bad credentials: {where} rejected them ({code})", retryable=False)
            message = str(error.get("Message", ""))
            if status == 501 or code == "NotImplemented" or (status == 400 and "checksum" in message.lower()
                                                             and code not in RETRYABLE_CODES):
                return SinkError(f"{where} does not take this write: {code or status} {message}".strip()
                                 + self._checksum_hint(message), retryable=False)
            if code in RETRYABLE_CODES or status >= 500 or status == 429:
                return SinkError(f"{where} answered {code or status}, retrying helps", retryable=True)
            if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
                return SinkError(f"access denied: the credentials may not write to bucket {bucket!r} "
                                 "(they need s3:PutObject)", retryable=False)
            if code in ("KeyTooLongError", "InvalidArgument", "InvalidObjectName"):
                return SinkError(f"{where} refuses this object key ({code})", retryable=False)
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
                        "Found"):
                region = f" (it says {error['Region']!r})" if error.get("Region") else ""
                return SinkError(f"bucket {bucket!r} is in another region than {self.config.region!r}{region} "
                                 f"({code}); set --region", retryable=False)
            return SinkError(f"{where} refused the write: {code or status} {message}".strip(),
                             retryable=False)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return SinkError("no usable credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                             "AWS_PROFILE, or a web identity", retryable=False)
        if isinstance(exc, (BotoConnectionError, aiohttp.ClientError, asyncio.TimeoutError, OSError)):
            return SinkError(f"endpoint unreachable: cannot connect to {where} ({type(exc).__name__})",
                             retryable=True)
        if isinstance(exc, BotoCoreError):
            return SinkError(f"S3 client error talking to {where}: {exc}", retryable=True)
        return SinkError(f"unexpected error writing to {where}: {type(exc).__name__}: {exc}", retryable=True)
