"""AWS Signature Version 4 for one S3 PUT: the headers that authorize it. Pure (time and
credentials come in), held equal to botocore's own S3 signer by a test.

The signing key depends only on the secret, the day, the region and the service, so it is derived
once a day (four HMACs), not per request; a request then costs two SHA-256 digests and one HMAC.
Must not log or keep anything but the derived key of the current day.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import NamedTuple

ALGORITHM = "AWS4-HMAC-SHA256"


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None


class Signer:
    def __init__(self, region: str, service: str = "s3") -> None:
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] | None = None  # (secret, day, signing key)

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == day:
            return cached[2]
        key = hmac.digest(("AWS4" + secret).encode(), day.encode(), "sha256")
        for part in (self.region, self.service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        self._key = (secret, day, key)
        return key

    def put_headers(self, host: str, path: str, content_type: str, payload_hash: str, credentials: Credentials,
                    amz_date: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers of `PUT {path}` (already URI-encoded, no query) to `host` (with its port when
        not the scheme's default), signed. `amz_date` is `YYYYMMDDTHHMMSSZ`."""
        headers = {"content-type": content_type, "host": host, "x-amz-content-sha256": payload_hash,
                   "x-amz-date": amz_date}
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        headers.update(extra or {})  # `x-amz-*` object controls: signed like the rest
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join(["PUT", path, "", *(f"{name}:{' '.join(headers[name].split())}" for name in names), "",
                               signed, payload_hash])
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.digest(self._signing_key(credentials.secret_key, day), to_sign.encode(), "sha256").hex()
        del headers["host"]  # the HTTP client sends it
        headers["authorization"] = (f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")
        return headers
