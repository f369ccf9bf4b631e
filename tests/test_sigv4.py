"""The bridge's SigV4 signer for S3 PUTs against botocore's own (the reference): the same request
gives the same Authorization header, for awkward keys, session tokens, ports and regions."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from otel_s3_bridge.deliver.sigv4 import Credentials, Signer

KEYS = ["openrouter-traces/2026-11-30/gen-1-abc.json", "a b/ü ñ/😀.json", "weird/!*'();:@&=+$,?#[]%.json",
        "tilde~/dots../x", "lake/dt=2026-11-30/hour=07/0123abcd.parquet"]


@pytest.mark.parametrize("base", ["http://127.0.0.1:9000/bucket", "https://bucket.s3.eu-west-3.amazonaws.com",
                                  "https://s3.amazonaws.com/my.bucket"])
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////wEaDOsessiontoken+/="])
@pytest.mark.parametrize("key", KEYS)
def test_the_same_signature_as_botocore(base, token, key):
    region = "eu-west-3" if "eu-west-3" in base else "us-east-1"
    url, body = f"{base}/{quote(key, safe='/~')}", b'{"model": "m"}'
    https = url.startswith("https")
    payload = "UNSIGNED-PAYLOAD" if https else hashlib.sha256(body).hexdigest()
    reference = AWSRequest("PUT", url, headers={"Content-Type": "application/json"}, data=body)
    # Over TLS the bridge sends the payload unsigned, as botocore does when told to.
    reference.context["client_config"] = SimpleNamespace(s3={"payload_signing_enabled": not https})
    S3SigV4Auth(ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token), "s3",
                region).add_auth(reference)
    signer = Signer(region)
    for _ in range(2):  # the second time from the cached signing key
        headers = signer.put_headers(urlsplit(url).netloc, urlsplit(url).path, "application/json", payload,
                                     Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token),
                                     reference.headers["X-Amz-Date"])
        assert headers["authorization"] == reference.headers["Authorization"]
        assert headers.get("x-amz-security-token") == token


def test_a_new_day_or_secret_derives_a_new_key():
    signer = Signer("us-east-1")
    first = signer.put_headers("h", "/b/k", "t", "UNSIGNED-PAYLOAD", Credentials("A", "S", None), "20261130T235959Z")
    assert signer.put_headers("h", "/b/k", "t", "UNSIGNED-PAYLOAD", Credentials("A", "S2", None),
                              "20261130T235959Z")["authorization"] != first["authorization"]
    assert signer.put_headers("h", "/b/k", "t", "UNSIGNED-PAYLOAD", Credentials("A", "S", None),
                              "20261201T000000Z")["authorization"].split("Signature=")[1] != \
        first["authorization"].split("Signature=")[1]
